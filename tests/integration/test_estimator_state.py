"""A stateful estimator in the recipe (slas sigma_decay): its running sigma is carried from iteration to iteration,
stored in each checkpoint's state.json, and a resumed run continues it exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from _toyruns import tiny_overrides
from slas.config import load_config
from slas.recipe.train import train

NFT = {"train.objective": "nft", "sample.eta": 0.0, "sample.same_noise_in_group": False, "forward.timesteps": 2}


def _rows(run):
    return [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def _strip_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def _state(run, it):
    return json.loads((Path(run) / "checkpoints" / f"iter_{it:06d}" / "state.json").read_text())


def test_running_sigma_is_checkpointed_and_resume_is_exact(tiny_ckpt, tmp_path):
    # sigma_decay 0.999: the sigma is (almost) the running max of sigma_B, so it binds as soon as sigma_B falls
    ov = tiny_overrides(tiny_ckpt, tmp_path / "a", **NFT, **{
        "train.iterations": 5, "eval.every": 0, "advantage.estimator": "slas",
        "advantage.params": "{sigma_decay: 0.999}"})
    full = train(load_config(None, ov), progress=False, log=lambda s: None)
    rows = _rows(full)[1:]
    sigmas = [r["train/batch_std"] for r in rows]
    # the recipe carried the state: sigma_t = max(sigma_B_t, 0.999 sigma_(t-1)), and it bound at least once
    prev = 0.0
    for r, s in zip(rows, sigmas, strict=True):
        assert s == max(r["train/centered_std"], 0.999 * prev)
        prev = s
    assert any(s > r["train/centered_std"] for r, s in zip(rows, sigmas, strict=True))
    for it in range(1, 6):  # each checkpoint holds the sigma of its iteration
        assert _state(full, it)["advantage_state"] == {"sigma": sigmas[it - 1]}

    b = tmp_path / "b"
    shutil.copytree(full, b)
    for name in ("iter_000003", "iter_000004", "iter_000005"):  # as if killed after iteration 2's checkpoint
        shutil.rmtree(b / "checkpoints" / name)
    train(load_config(b / "config.yaml", [f"run.out_dir={b}"]), resume=True, progress=False, log=lambda s: None)
    assert _strip_time(_rows(b)) == _strip_time(_rows(full))
    assert _state(b, 5)["advantage_state"] == _state(full, 5)["advantage_state"]


def test_stateless_estimators_save_an_empty_state(tiny_ckpt, tmp_path):
    run = train(load_config(None, tiny_overrides(tiny_ckpt, tmp_path / "r", **NFT, **{"eval.every": 0})),
                progress=False, log=lambda s: None)
    assert _state(run, 2)["advantage_state"] == {}
    r = _rows(run)[-1]
    assert r["train/batch_std"] == r["train/centered_std"]  # slas at its defaults divides by sigma_B
