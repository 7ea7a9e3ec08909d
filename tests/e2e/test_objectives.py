"""The policy objectives end to end (train.objective ppo_sde / nft / awm): one advantage registry feeds all three,
exact resume under the forward-process objectives, and their config rules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _toyruns import tiny_overrides
from slas.config import ConfigError, derived, load_config
from slas.recipe.objectives import ForwardObjective, old_decay, pair_noise
from slas.recipe.train import train

FORWARD = {"sample.eta": 0.0, "sample.same_noise_in_group": False, "forward.timesteps": 2}
OBJECTIVES = {
    "ppo_sde": {},
    "nft": {"train.objective": "nft", **FORWARD, "forward.kl_beta": 1e-4},
    "awm": {"train.objective": "awm", **FORWARD, "forward.kl_beta": 1e-3},
}


def _rows(run):
    return [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def _strip_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def _run(ckpt, out, **extra):
    return train(load_config(None, tiny_overrides(ckpt, out, **{"eval.every": 0, **extra})), progress=False,
                 log=lambda s: None)


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_slas_gamma0_is_grpo_global_std_under_every_objective(objective, tiny_ckpt, tmp_path):
    extra = OBJECTIVES[objective]
    # the two differ only in where their eps enters the std (absolute 1e-4 vs relative 1e-8): make both negligible
    a = _run(tiny_ckpt, tmp_path / "slas", **extra, **{
        "advantage.estimator": "slas", "advantage.params": "{gamma: 0.0, batch_std_of: rewards, eps: 1.0e-12}"})
    b = _run(tiny_ckpt, tmp_path / "gstd", **extra, **{
        "advantage.estimator": "grpo_global_std", "advantage.params": "{eps: 1.0e-12}"})
    ra, rb = _rows(a), _rows(b)
    for x, y in zip(ra[1:], rb[1:], strict=True):
        assert x["train/reward_mean"] == y["train/reward_mean"]  # the same rollouts
        assert x["train/adv_abs_mean"] == pytest.approx(y["train/adv_abs_mean"], rel=1e-9)
        assert x["train/policy_loss"] == pytest.approx(y["train/policy_loss"], rel=1e-6, abs=1e-9)
    wa = load_file(str(a / "checkpoints" / "iter_000002" / "model.safetensors"))
    wb = load_file(str(b / "checkpoints" / "iter_000002" / "model.safetensors"))
    start = load_file(str(tiny_ckpt / "model.safetensors"))
    moved = max((wa[k].float() - start[k].float()).abs().max().item() for k in wa if k.startswith("unet."))
    gap = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert moved > 1e-4 and gap < 1e-6 * moved  # the same run, up to float rounding


@pytest.mark.parametrize("objective", ["nft", "awm"])
def test_forward_objective_resume_is_exact(objective, tiny_ckpt, tmp_path):
    extra = {**OBJECTIVES[objective], "train.iterations": 4, "eval.every": 2, "train.ema_decay": 0.5}
    full = _run(tiny_ckpt, tmp_path / "a", **extra)
    rows = _rows(full)
    assert all("train/fm_err" in r and "train/policy_loss" in r for r in rows[1:])
    assert (full / "checkpoints" / "iter_000004" / "old.safetensors").is_file()
    b = tmp_path / "b"
    shutil.copytree(full, b)
    for name in ("iter_000003", "iter_000004"):  # as if killed after iteration 2's checkpoint
        shutil.rmtree(b / "checkpoints" / name)
    train(load_config(b / "config.yaml", [f"run.out_dir={b}"]), resume=True, progress=False, log=lambda s: None)
    assert _strip_time(_rows(b)) == _strip_time(rows)
    for f in ("model", "old", "ema"):
        wa = load_file(str(full / "checkpoints" / "iter_000004" / f"{f}.safetensors"))
        wb = load_file(str(b / "checkpoints" / "iter_000004" / f"{f}.safetensors"))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), f


def test_forward_objectives_keep_no_trajectory_and_train_every_unet_part(tiny_ckpt, tmp_path):
    run = _run(tiny_ckpt, tmp_path / "r", **OBJECTIVES["nft"])
    r = _rows(run)[-1]
    assert 0.0 <= r["train/r_mean"] <= 1.0 and r["train/fm_err"] > 0 and r["train/kl"] > 0
    assert "train/ratio_mean" not in r  # PPO's diagnostics are PPO's
    before = load_file(str(tiny_ckpt / "model.safetensors"))
    after = load_file(str(run / "checkpoints" / "iter_000002" / "model.safetensors"))
    assert any(not torch.equal(before[k].float(), after[k]) for k in before if k.startswith("unet."))
    assert all(torch.equal(before[k].float(), after[k]) for k in before if k.startswith("text_encoder."))


def test_old_policy_decay_schedule():
    cfg = load_config(None, ["train.objective=nft", "sample.same_noise_in_group=false", "sample.eta=0"])
    assert [old_decay(cfg, s) for s in (0, 100, 500, 4000)] == [0.0, pytest.approx(0.1), 0.5, 0.5]


def test_pair_noise_is_a_function_of_the_key_only():
    a = pair_noise(7, torch.tensor([3, 1, 2]), (2, 2))
    b = pair_noise(7, torch.tensor([2, 3]), (2, 2))
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0]) and not torch.equal(a[0], a[1])


@pytest.mark.parametrize("overrides, needle", [
    (["train.objective=dpo"], "train.objective must be one of"),
    (["train.objective=nft", "sample.eta=0", "sample.same_noise_in_group=true"], "same_noise_in_group false"),
    (["train.objective=nft", "sample.same_noise_in_group=false", "train.kl_beta=0.1"], "forward.kl_beta"),
    (["train.objective=awm", "sample.same_noise_in_group=false", "forward.timesteps=11"], "forward.timesteps"),
    (["train.objective=nft", "forward.r_map=softmax"], "forward.r_map"),
    (["train.objective=awm", "forward.weighting=l1"], "forward.weighting"),
    (["train.objective=ppo_sde", "sample.eta=0"], "sample.eta must be > 0"),
    (["train.objective=ppo_sde", "sample.family=ode"], "forward-process objectives can"),
])
def test_objective_config_errors(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, overrides)


def test_forward_objectives_may_roll_out_with_the_ode_family():
    cfg = load_config(None, ["train.objective=nft", "sample.family=ode", "sample.same_noise_in_group=false"])
    assert derived(cfg)["trained_steps_per_sample"] == cfg.forward.timesteps


class _PositiveMatching(ForwardObjective):
    """A fourth objective, as a plugin would add it: flow matching on the samples with a positive advantage only."""

    def pair_loss(self, batch, mb, v, v_old, target, level, weight):
        w = weight * batch.adv[mb.n].clamp(min=0)  # [M]
        per = (v.float() - target).square().flatten(1).mean(1)  # [M]
        loss = (per * w).sum() / w.sum().clamp(min=1e-8)
        return loss, {"policy_loss": loss.detach()}


def test_a_fourth_objective_is_one_class_and_one_registry_line(tiny_ckpt, tmp_path, monkeypatch):
    from slas import plugins

    monkeypatch.setitem(plugins._OBJECTIVES, "positive_fm", _PositiveMatching)  # = register_objective, undone after
    with pytest.raises(ConfigError, match="train.objective must be one of"):
        load_config(None, ["train.objective=no_such_objective"])
    cfg = load_config(None, tiny_overrides(tiny_ckpt, tmp_path / "run", **{
        "train.objective": "positive_fm", **FORWARD, "train.iterations": 1, "eval.every": 0}))
    run = train(cfg, progress=False, log=lambda s: None)
    rows = _rows(run)
    assert [r["iteration"] for r in rows] == [0, 1] and rows[1]["train/policy_loss"] > 0
    after = load_file(str(run / "checkpoints" / "iter_000001" / "model.safetensors"))
    start = load_file(str(tiny_ckpt / "model.safetensors"))
    assert max((after[k].float() - start[k].float()).abs().max().item() for k in after if k.startswith("unet.")) > 0
