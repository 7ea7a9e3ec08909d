"""Which pairs the loss averages over: finite pairs keep their weight beside masked (non-finite reward) ones whatever
the micro-batching, and train.drop_zero_advantage masks zero-advantage samples the same way."""

import json

import numpy as np
import pytest

from _toyruns import tiny_overrides
from slas import rewards
from slas.config import load_config
from slas.recipe.train import train

_calls = {"n": 0}


@rewards.register("test_half_nan")
def _half_nan():
    """toy_score with NaN on every other image: those samples are masked out of the loss."""
    base = rewards.build({"toy_score": 1.0})

    def fn(images, prompts, metas):
        s = base(images, prompts, metas)["total"].copy()
        s[::2] = np.nan
        return s

    return fn


@rewards.register("test_one_flat_group")
def _one_flat_group():
    """0.5 for every image of the batch's first prompt (a zero-spread group: advantage 0), 0.1 * index otherwise."""

    def fn(images, prompts, metas):
        return np.array([0.5 if p == prompts[0] else 0.1 * i for i, p in enumerate(prompts)])

    return fn


def _grad_norm(tiny_ckpt, out, micro_batch, reward="test_half_nan", **extra):
    cfg = load_config(None, tiny_overrides(tiny_ckpt, out, **{
        "reward.weights": f"{{{reward}: 1.0}}", "train.iterations": 1, "eval.every": 0, "monitor.enabled": "false",
        "train.updates_per_iter": 1, "train.micro_batch": micro_batch, "train.max_grad_norm": 1e9,
        "advantage.estimator": "grpo_global_std", **extra}))
    train(cfg, progress=False, log=lambda m: None)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["train/grad_norm"], rows[-1]["train/n_nonfinite_rewards"], rows[-1]["train/n_in_loss"]


def test_masked_pairs_do_not_reweight_finite_ones(tiny_ckpt, tmp_path):
    # 6 samples x 3 steps = 18 pairs, 9 of them masked. The step's gradient is the mean over the finite pairs
    # whatever the micro-batching; before, a finite pair sharing a micro-batch with masked ones weighed more
    whole, nonfinite, used = _grad_norm(tiny_ckpt, tmp_path / "one", 18)
    assert nonfinite == 3 and used == 3
    for mb in (2, 5):
        split, _, _ = _grad_norm(tiny_ckpt, tmp_path / f"mb{mb}", mb)
        assert split == pytest.approx(whole, rel=1e-4)


def test_drop_zero_advantage_averages_over_the_nonzero_samples(tiny_ckpt, tmp_path):
    # 2 prompts x 3 samples; the first prompt's group is flat (advantage 0). PPO's policy term of a zero advantage is
    # 0, so kept in the denominator it halves the step (DanceGRPO); dropped, the step is the mean over the other 3
    kept, _, n_kept = _grad_norm(tiny_ckpt, tmp_path / "keep", 4, "test_one_flat_group")
    dropped, _, n_dropped = _grad_norm(tiny_ckpt, tmp_path / "drop", 4, "test_one_flat_group",
                                       **{"train.drop_zero_advantage": "true"})
    assert (n_kept, n_dropped) == (6, 3)
    assert dropped == pytest.approx(2 * kept, rel=1e-4)
