#!/usr/bin/env bash
# Create .venv and install slas with its test tools. Idempotent.
# torch goes in FIRST: on a CPU machine an unpinned torch pulls a multi-GB
# CUDA build. GPU users: SLAS_TORCH_SPEC="torch==2.13.0" plus your index, e.g.
#   SLAS_TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" bash setup.sh
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check ${SLAS_TORCH_SPEC:-torch==2.13.0}
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
