"""The upstream options of nft and awm in the recipe: DiffusionNFT's dpm2 rollouts, adv_mode binary and return_decay
type 2 (forward.old_decay_flat), AWM's stratified levels and t**2 weighting; their config rules, and exact resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from _toyruns import tiny_overrides
from slas.config import ConfigError, load_config
from slas.recipe.objectives import ForwardObjective, old_decay
from slas.recipe.train import train

FORWARD = {"sample.eta": 0.0, "sample.same_noise_in_group": False, "forward.timesteps": 2, "eval.every": 0}


def _rows(run):
    return [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def _strip_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def _run(ckpt, out, **extra):
    return train(load_config(None, tiny_overrides(ckpt, out, **{**FORWARD, **extra})), progress=False,
                 log=lambda s: None)


def test_old_decay_flat_start_is_diffusionnft_return_decay_type_2():
    # DiffusionNFT train_nft_sd3.py:169-189, decay_type 2: 0 before step 75, then min(0.0075 (step - 75), 0.999)
    cfg = load_config(None, ["train.objective=nft", "sample.same_noise_in_group=false", "sample.eta=0",
                             "forward.old_decay_flat=75", "forward.old_decay_rate=0.0075", "forward.old_decay_max=0.999"])
    got = [old_decay(cfg, s) for s in (0, 74, 75, 76, 100, 208, 209, 10_000)]
    assert got == [0.0, 0.0, 0.0, pytest.approx(0.0075), pytest.approx(0.1875), pytest.approx(0.9975), 0.999, 0.999]
    # flat 0 (the default) is the linear schedule, type 1: min(0.001 step, 0.5)
    cfg = load_config(None, ["train.objective=nft", "sample.same_noise_in_group=false", "sample.eta=0"])
    assert [old_decay(cfg, s) for s in (0, 100, 500, 4000)] == [0.0, 0.1, 0.5, 0.5]


def _draw(overrides, n=500, seed=0):
    cfg = load_config(None, ["train.objective=awm", "sample.same_noise_in_group=false", "sample.eta=0", *overrides])
    fake = SimpleNamespace(cfg=cfg, pairs_per_sample=lambda: cfg.forward.timesteps)
    return ForwardObjective.draw_pairs(fake, n, torch.Generator().manual_seed(seed))


def test_forward_levels_uniform_is_unchanged_and_stratified_is_awms():
    n_idx, t_idx = _draw(["forward.timesteps=2"])
    # uniform (the default): K distinct levels of all T per sample, drawn as before (argsort of T uniforms)
    g = torch.Generator().manual_seed(0)
    steps_k = torch.rand(500, 10, generator=g).argsort(dim=1)[:, :2]
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    order = torch.randperm(1000, generator=g)
    assert torch.equal(t_idx, steps_k.reshape(-1)[order]) and seed > 0
    # stratified: 2 levels of [1, 9) of the 10-step schedule, one in [1, 5) and one in [5, 9), for every sample
    n_idx, t_idx = _draw(["forward.timesteps=2", "forward.time_sampling=stratified"])
    per = torch.zeros(500, 2, dtype=torch.long)
    for n, t in zip(n_idx.tolist(), t_idx.tolist(), strict=True):
        per[n, int(t >= 5)] += 1
    assert (per == 1).all() and t_idx.min() >= 1 and t_idx.max() <= 8
    assert set(t_idx.tolist()) == set(range(1, 9))


@pytest.mark.parametrize("overrides, needle", [
    (["forward.r_map=sign"], "r_map 'sign' was renamed.*'hard_sign'.*'binary'"),
    (["forward.weighting=t**3"], r"forward.weighting must be one of \('uniform', 't', 't2', 'huber', 'ghuber'\)"),
    (["forward.time_sampling=logit_normal"], "forward.time_sampling must be 'uniform'"),
    (["forward.time_sampling=stratified", "forward.timesteps=9"], "use at most 8 levels"),
    (["forward.time_fraction=1.5"], r"forward.time_fraction must be in \(0, 1\]"),
    (["forward.old_decay_flat=-3"], "forward.old_decay_flat must be an integer >= 0"),
    (["sample.family=dpm2", "sample.eta=0.3"], "dpm2.*injects no noise: set sample.eta 0"),
    (["train.objective=ppo_sde", "sample.family=dpm2", "sample.eta=0.3", "sample.same_noise_in_group=true"],
     "'dpm2' is deterministic: it has no log-prob"),
])
def test_upstream_option_errors(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, ["train.objective=nft", "sample.same_noise_in_group=false", "sample.eta=0", *overrides])


def test_nft_with_dpm2_rollouts_binary_r_and_a_flat_start_trains(tiny_ckpt, tmp_path):
    nft = {"train.objective": "nft", "forward.kl_beta": 1e-4}
    ode = _run(tiny_ckpt, tmp_path / "ode", **nft, **{"sample.family": "ode"})
    run = _run(tiny_ckpt, tmp_path / "dpm2", **nft, **{
        "sample.family": "dpm2", "forward.r_map": "binary", "forward.old_decay_flat": 1})
    rows, base = _rows(run)[1:], _rows(ode)[1:]
    assert all(0.4 - 1e-6 <= r["train/r_mean"] <= 0.6 + 1e-6 for r in rows)  # binary r: 0.4, 0.5 or 0.6
    assert all(r["train/r_push_informative"] == pytest.approx(0.1) for r in rows if r["train/informative_frac"])
    assert rows[0]["train/fm_err"] != base[0]["train/fm_err"]  # other rollouts than Euler's
    start = load_file(str(tiny_ckpt / "model.safetensors"))
    after = load_file(str(run / "checkpoints" / "iter_000002" / "model.safetensors"))
    assert any(not torch.equal(start[k].float(), after[k]) for k in start if k.startswith("unet."))
    # the flat start: after iteration 1 (2 optimizer steps, flat 1) the old policy moved with decay 0.001 x 1
    old = load_file(str(run / "checkpoints" / "iter_000001" / "old.safetensors"))
    pol = load_file(str(run / "checkpoints" / "iter_000001" / "model.safetensors"))
    k = next(k for k in old if k.startswith("unet.") and not torch.equal(start[k].float(), pol[k]))
    torch.testing.assert_close(old[k], 0.001 * start[k].float() + 0.999 * pol[k], rtol=1e-5, atol=1e-7)


def test_awm_stratified_t2_resume_is_exact(tiny_ckpt, tmp_path):
    # 3 steps: strata [1, 2) and [2, 3) at time_fraction 1
    extra = {"train.objective": "awm", "forward.time_sampling": "stratified", "forward.time_fraction": 1.0,
             "forward.weighting": "t2", "train.iterations": 4, "train.ema_decay": 0.5}
    full = _run(tiny_ckpt, tmp_path / "a", **extra)
    b = tmp_path / "b"
    shutil.copytree(full, b)
    for name in ("iter_000003", "iter_000004"):  # as if killed after iteration 2's checkpoint
        shutil.rmtree(b / "checkpoints" / name)
    train(load_config(b / "config.yaml", [f"run.out_dir={b}"]), resume=True, progress=False, log=lambda s: None)
    assert _strip_time(_rows(b)) == _strip_time(_rows(full))
    for f in ("model", "old", "ema"):
        wa = load_file(str(full / "checkpoints" / "iter_000004" / f"{f}.safetensors"))
        wb = load_file(str(b / "checkpoints" / "iter_000004" / f"{f}.safetensors"))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), f
