"""A failed start leaves nothing behind: a `slas train` that fails before its first checkpoint removes what it
wrote (the run directory itself when it made it), so that `--resume` of it says there is no run and a fresh start
is never blocked. A directory that a killed start left (kill -9 cannot clean up) is reported honestly by both."""

from __future__ import annotations

import shutil

import pytest

from _toyruns import tiny_overrides
from slas import rewards
from slas.apps.cli import main
from slas.recipe.metrics import read_metrics

CRASH = "test_failed_start_crash"  # a reward that raises, as a reward model that runs out of memory would


@rewards.register(CRASH)
def _crash():
    def fn(images, prompts, metas):
        raise RuntimeError("the reward model crashed")

    return fn


def _crashing(tiny_ckpt, run):
    return ["train", "--no-progress", *tiny_overrides(tiny_ckpt, run, **{"reward.weights": f"{{{CRASH}: 1.0}}"})]


def test_a_reward_that_raises_in_the_first_evaluation_leaves_no_run_folder(tiny_ckpt, tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="the reward model crashed"):  # the iteration-0 evaluation's monitor
        main(_crashing(tiny_ckpt, run))
    assert not run.exists()
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --resume {run}: no config.yaml there; is it a run directory of `slas train`? (a start "
                   "that fails before its first checkpoint leaves none: start it again without --resume)")


def test_a_failed_start_in_an_existing_folder_removes_only_what_it_wrote(tiny_ckpt, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="the reward model crashed"):
        main(_crashing(tiny_ckpt, run))
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_a_folder_a_killed_start_left_is_reported_honestly(tiny_ckpt, tmp_path, capsys):
    """kill -9 during the iteration-0 evaluation leaves config.yaml, a metrics log and no checkpoint: a fresh start
    into it is not blocked (it holds no run to protect), and `--resume` says it trains from iteration 0."""
    run, ref = tmp_path / "run", tmp_path / "ref"
    ov = tiny_overrides(tiny_ckpt, run, **{"train.iterations": 1})
    assert main(["train", "--no-progress", *tiny_overrides(tiny_ckpt, ref, **{"train.iterations": 1})]) == 0
    run.mkdir()
    (run / "config.yaml").write_text((ref / "config.yaml").read_text().replace(str(ref), str(run)))
    (run / "metrics.jsonl").write_text('{"iteration": 0, "eval/gold_acc')  # cut by the kill
    assert main(["train", "--no-progress", *ov]) == 0
    strip = [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_metrics(run)]
    assert strip == [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_metrics(ref)]
    shutil.rmtree(run / "checkpoints")  # as if killed again before its first checkpoint
    capsys.readouterr()
    assert main(["train", "--no-progress", "--resume", str(run)]) == 0
    assert (f"nothing to resume in {run}: it holds no checkpoint (it stopped before saving one); training it from "
            "iteration 0") in capsys.readouterr().out
    assert len(read_metrics(run)) == 2
