"""Fixtures shared by the tests that train: one random-init XS ShapesWorld model per session."""

import os
import sys
from pathlib import Path

import pytest
import torch

# the shared helpers (_toyruns.py) live beside this file; the tests live in unit/, roundtrip/ and e2e/
sys.path.insert(0, str(Path(__file__).resolve().parent))

from slas.toyworld import model as toymodel

# The suite trains beside itself and other jobs: the busy-cores warning of slas.recipe.threads would add a line to
# outputs that tests compare exactly. tests/unit/recipe/test_threads.py and the e2e test of it turn it back on.
os.environ.setdefault("SLAS_LOAD_CHECKED", "1")


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A random-init XS ShapesWorld model: fast, and enough to exercise every code path."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "xs"
    toymodel.save(toymodel.build("XS"), path)
    return path
