"""The thread count of `slas train` (run.threads), `slas eval` and `slas compare` (--threads), and the one warning
line each prints when the cores are already busy at start (a machine made busy here by its load average)."""

from __future__ import annotations

import os

import pytest
import torch

from _toyruns import tiny_overrides
from slas.apps.cli import main
from slas.recipe import threads


@pytest.fixture
def busy(monkeypatch) -> list[int]:
    """A 2-core machine whose load average says another 2-thread job is running; the thread counts the commands set
    are recorded, not applied (2 real threads on a really busy test machine are what the warning is about: slow)."""
    monkeypatch.delenv(threads.LOAD_CHECKED, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    counts: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", counts.append)
    return counts


BUSY = ("warning: the cores are busy: load average 2.0 over the last minute on 2 cores leaves about 0.0 of the 2 "
        "usable ones free, and this run uses 2 torch threads: threads that share a core wait on each other, often "
        "several times slower (docs/performance.md); use ")


def test_train_says_how_many_threads_it_uses_and_how_to_lower_them(busy, tiny_ckpt, tmp_path, capsys):
    ov = tiny_overrides(tiny_ckpt, tmp_path / "run", **{"train.iterations": 1, "run.threads": 2})
    assert main(["train", "--no-progress", *ov]) == 0
    out = capsys.readouterr().out
    assert out.count("warning:") == 1 and BUSY + "run.threads=1, or stop the other jobs\n" in out
    assert "| 2 torch threads |" in out and busy == [2]
    assert main(["train", "--no-progress", *tiny_overrides(tiny_ckpt, tmp_path / "run1",
                                                            **{"train.iterations": 1, "run.threads": 1})]) == 0
    out = capsys.readouterr().out
    assert "warning:" not in out and "| 1 torch threads |" in out and busy == [2, 1]


def test_eval_takes_threads_and_warns_when_busy(busy, tmp_path, capsys):
    rc = main(["eval", "--suite", "toyworld", "--model", "base", "--max-prompts", "2", "--steps", "1", "--no-images",
               "--threads", "2", "--out", str(tmp_path / "o")])
    assert rc == 0
    err = capsys.readouterr().err
    assert BUSY + "--threads 1, or stop the other jobs\n" in err and busy == [2]
    rc = main(["eval", "--suite", "toyworld", "--model", "base", "--threads", "-1", "--out", str(tmp_path / "p")])
    assert rc == 2 and "--threads must be >= 0" in capsys.readouterr().err


def test_compare_warns_for_all_its_runs_together(busy, tiny_ckpt, tmp_path, capsys):
    ov = tiny_overrides(tiny_ckpt, None, **{"train.iterations": 1, "eval.every": 0,
                                            "run.threads": 1})  # the run itself: 1 real thread on a busy test machine
    rc = main(["compare", "--methods", "slas", "--seeds", "1", "--jobs", "1", "--threads", "2",
               "--out", str(tmp_path / "cmp"), *ov])
    assert rc == 0
    out = capsys.readouterr().out
    assert BUSY + "--threads 1 (or fewer --jobs), or stop the other jobs\n" in out
