"""Fixtures shared by the tests that train: one random-init XS ShapesWorld model per session.

The suite runs one thread per process, whatever the environment says: before torch loads, OMP_NUM_THREADS and
MKL_NUM_THREADS are set to 1 for this process and for every subprocess a test starts (`slas train`, torchrun, the
reward server), and torch's own pool is pinned to 1 thread. With another job on the cores, torch's default of one
thread per core makes each process wait for the busiest core at every parallel region (on 2 cores beside one other
job the suite crawled: about 69 of 714 tests in 21 minutes, against 5.4 minutes for all of them on one thread), and
the tests' models are too small to gain from a second thread.
"""

import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# the shared helpers (_toyruns.py) live beside this file; the tests live in unit/, roundtrip/ and e2e/
sys.path.insert(0, str(Path(__file__).resolve().parent))

from slas.toyworld import model as toymodel  # noqa: E402


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A random-init XS ShapesWorld model: fast, and enough to exercise every code path."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "xs"
    toymodel.save(toymodel.build("XS"), path)
    return path
