"""run.log_memory through the recipe: every metrics row carries the peak memory of the phases it ran (the checkpoint's
joins its iteration's row, a resume's the first row after it), and the run is otherwise the one without it."""

import shutil

from _toyruns import tiny_overrides
from slas.config import load_config
from slas.recipe.memory import PHASES
from slas.recipe.metrics import read_metrics
from slas.recipe.train import train

ITERATION = {"encode", "rollout", "decode", "reward", "train", "step", "eval", "save"}


def _phases(row: dict) -> set[str]:
    return {k[len("memory/"):-len("_mib")] for k in row if k.startswith("memory/")}


def _numbers(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "memory/"))} for r in rows]


def test_every_row_carries_its_phases_peaks_and_nothing_else_changes(tiny_ckpt, tmp_path):
    quiet = dict(progress=False, log=lambda s: None)
    plain = train(load_config(None, tiny_overrides(tiny_ckpt, tmp_path / "plain")), **quiet)
    logged = train(load_config(None, tiny_overrides(tiny_ckpt, tmp_path / "mem", **{"run.log_memory": True})), **quiet)
    rows = read_metrics(logged)
    assert [_phases(r) for r in rows] == [{"load", "eval"}, ITERATION, ITERATION]
    assert all(v > 100 for r in rows for k, v in r.items() if k.startswith("memory/"))  # resident MiB of a process
    assert not any(k.startswith("memory/") for r in read_metrics(plain) for k in r)  # off: nothing logged
    assert _numbers(rows) == _numbers(read_metrics(plain))

    resumed = tmp_path / "resumed"
    shutil.copytree(logged, resumed)
    shutil.rmtree(resumed / "checkpoints" / "iter_000002")
    train(load_config(resumed / "config.yaml", [f"run.out_dir={resumed}"]), resume=True, **quiet)
    again = read_metrics(resumed)
    assert _phases(again[-1]) == ITERATION | {"load", "resume"} and set(PHASES) == _phases(again[-1])
    assert _numbers(again) == _numbers(rows)
