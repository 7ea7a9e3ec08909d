"""slas.recipe.threads: the thread count a process uses, and the busy-cores warning, on hand-computed machines."""

from __future__ import annotations

import os

import pytest
import torch

from slas.recipe import threads


@pytest.mark.parametrize("usable,load1,cpus,free", [
    (2, 0.0, 2, 2.0),  # idle
    (2, 2.0, 2, 0.0),  # one 2-thread job on 2 cores: none left
    (2, 1.0, 2, 1.0),
    (2, 5.0, 2, 0.0),  # more runnable processes than cores
    (4, 16.0, 64, 3.0),  # a 4-core container on a 64-core host at load 16: a quarter of each core is taken
])
def test_free_cores(usable, load1, cpus, free):
    assert threads.free_cores(usable, load1, cpus) == pytest.approx(free)


def test_no_warning_when_the_threads_fit():
    assert threads.busy_warning(2, 1, usable=2, load1=0.1, cpus=2, how="run.threads=N") is None
    assert threads.busy_warning(1, 1, usable=2, load1=1.0, cpus=2, how="run.threads=N") is None
    assert threads.busy_warning(2, 1, usable=2, load1=0.4, cpus=2, how="run.threads=N") is None  # below half a core
    assert threads.busy_warning(3, 1, usable=4, load1=16.0, cpus=64, how="run.threads=N") is None
    assert threads.busy_warning(1, 1, usable=2, load1=6.0, cpus=2, how="run.threads=N") is None  # nothing to lower
    assert threads.busy_warning(1, 4, usable=8, load1=8.0, cpus=8, how="run.threads=N") is None


def test_a_busy_machine_is_one_warning_line_with_a_count_that_fits():
    line = threads.busy_warning(2, 1, usable=2, load1=2.0, cpus=2, how="run.threads=N")
    assert line == ("warning: the cores are busy: load average 2.0 over the last minute on 2 cores leaves about 0.0 "
                    "of the 2 usable ones free, and this run uses 2 torch threads: threads that share a core wait on "
                    "each other, often several times slower (docs/performance.md); use run.threads=1, or stop the "
                    "other jobs")
    line = threads.busy_warning(8, 1, usable=16, load1=8.0, cpus=16, how="--threads N")
    assert line is None  # 8 free cores for 8 threads
    line = threads.busy_warning(12, 1, usable=16, load1=8.0, cpus=16, how="--threads N")
    assert "leaves about 8.0 of the 16 usable ones free" in line and line.endswith("use --threads 8, or stop the other jobs")


def test_torchrun_processes_are_counted_together():
    line = threads.busy_warning(2, 4, usable=8, load1=2.0, cpus=8, how="run.threads=N")
    assert "this run uses 8 torch threads (4 processes x 2)" in line and "use run.threads=1," in line


def test_more_threads_than_the_affinity_mask_allows():
    line = threads.busy_warning(4, 1, usable=2, load1=0.0, cpus=8, how="run.threads=N")
    assert line == ("warning: this run uses 4 torch threads but may run on 2 cores (its affinity mask): threads that "
                    "share a core wait on each other; use run.threads=2")


def test_default_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert threads.default_threads() == 3  # the user's (or torchrun's) setting wins
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setattr(threads, "usable_cores", lambda: 8)
        torch.set_num_threads(4)  # torch's own default: the physical cores
        assert threads.default_threads() == 4
        assert threads.default_threads(processes=4) == 2  # shared among the torchrun processes of the machine
        assert threads.default_threads(processes=16) == 1
    finally:
        torch.set_num_threads(before)


def test_configure_sets_the_threads_and_warns_once_when_busy(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv(threads.LOAD_CHECKED, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    lines = []
    try:
        assert threads.configure(2, "run.threads=N", warn=lines.append) == 2 and torch.get_num_threads() == 2
        assert len(lines) == 1 and lines[0].endswith("use run.threads=1, or stop the other jobs")
        assert threads.configure(1, "run.threads=N", warn=lines.append) == 1 and torch.get_num_threads() == 1
        assert len(lines) == 1  # one thread: nothing to lower, and no peer threads to wait for
        monkeypatch.setenv(threads.LOAD_CHECKED, "1")  # slas compare checked for its runs
        threads.configure(2, "run.threads=N", warn=lines.append)
        assert len(lines) == 1
    finally:
        torch.set_num_threads(before)
