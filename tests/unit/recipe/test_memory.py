"""slas.recipe.memory (run.log_memory): the per-phase peak resident set on the CPU, and the metrics row it makes;
MetricsLog.amend, which adds a checkpoint's peak to the row written before it."""

import json

import torch

from slas.config import Config
from slas.recipe.memory import MIB, OFF, PhaseMemory, peak_rss, reset_peak_rss
from slas.recipe.metrics import MetricsLog, read_metrics
from slas.recipe.parallel import ProcessGroup

SIZE = 256 * MIB  # a tensor this large moves the resident set well beyond the noise of a Python process


def _rss() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / MIB
    raise AssertionError("no VmRSS")


def test_clear_refs_resets_the_peak_resident_set_to_the_current_one():
    x = torch.ones(SIZE // 4)  # touched: resident
    del x
    before = peak_rss() / MIB
    reset_peak_rss()
    after = peak_rss() / MIB
    assert before - after > 0.9 * SIZE / MIB  # the freed tensor no longer counts
    assert abs(after - _rss()) < 32  # the peak is now the current resident set


def test_a_phase_logs_its_own_peak_and_a_repeated_phase_its_worst():
    mem = PhaseMemory(True)
    with mem.phase("rollout"):
        x = torch.ones(SIZE // 4)
        del x
    with mem.phase("reward"):
        pass
    with mem.phase("train"):
        y = torch.ones(SIZE // 8)
        del y
    with mem.phase("train"):  # smaller: the row keeps the first, larger peak
        pass
    row = mem.row(ProcessGroup())
    assert set(row) == {"memory/rollout_mib", "memory/reward_mib", "memory/train_mib"}  # one process: no _max
    base = row["memory/reward_mib"]
    assert base > 100  # the interpreter and torch are resident: a real RSS, in MiB
    assert row["memory/rollout_mib"] - base > 0.9 * SIZE / MIB
    assert 0.4 * SIZE / MIB < row["memory/train_mib"] - base < 0.6 * SIZE / MIB
    assert mem.row(ProcessGroup()) == {}  # a row empties the peaks


def test_off_by_default_measures_and_logs_nothing():
    assert Config().run.log_memory is False
    with OFF.phase("train"):
        pass
    assert OFF.row(ProcessGroup()) == {} and OFF.peaks == {}


def test_amend_adds_values_to_the_last_row_in_place(tmp_path):
    log = MetricsLog(tmp_path, Config(), keep_upto=None)
    log.write({"iteration": 0, "eval/x": 1.0})
    log.write({"iteration": 1, "train/y": 2.0})
    log.amend({"memory/save_mib": 123.4})
    log.amend({})  # nothing to add: the file is untouched
    assert read_metrics(tmp_path) == [{"iteration": 0, "eval/x": 1.0},
                                      {"iteration": 1, "train/y": 2.0, "memory/save_mib": 123.4}]
    assert log.rows[-1] == {"iteration": 1, "train/y": 2.0, "memory/save_mib": 123.4}
    assert [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()] == log.rows
