"""Fixtures shared by the tests that train: one random-init XS ShapesWorld model per session."""

import pytest
import torch

from slas.toyworld import model as toymodel


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A random-init XS ShapesWorld model: fast, and enough to exercise every code path."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "xs"
    toymodel.save(toymodel.build("XS"), path)
    return path
