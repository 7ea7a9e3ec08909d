#!/usr/bin/env bash
# The prepared GPU check (docs/performance.md): FLUX.1-dev at its real width and the full SD1.4 UNet, random weights,
# one iteration each of ppo_sde and nft at 512 and 720 px through `slas train` on one GPU; per-phase peak CUDA memory
# against benchmarks/memory_model.py's prediction, iteration time and MFU (benchmarks/gpu_check.py). At most 8
# minutes on one H100: runs stop being started after 450 s and the whole check is killed at 480 s.
#
#   bash benchmarks/gpu_check.sh [--flux-blocks 3 6] [--fits runs/memory_real/results.json]
#
# The predictions need the CPU fits of benchmarks/memory_real.py (its results.json); without them the check reports
# the measurements alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: benchmarks/gpu_check.sh needs a CUDA GPU and torch sees none (the CPU's figures come from benchmarks/memory_real.py)" >&2
    exit 2
fi
exec timeout 480 "$PY" benchmarks/gpu_check.py "$@"
