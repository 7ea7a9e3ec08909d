"""Three recipe bugs, each with a test that failed before its fix: a trained text encoder, the evaluation noise
stream, and the loss weight of finite pairs beside masked (non-finite reward) ones; and train.drop_zero_advantage,
which masks zero-advantage samples the same way."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from _toyruns import tiny_overrides
from slas import rewards
from slas.config import load_config
from slas.policy.generate import EVAL_SEED_LIMIT, seeded_noise
from slas.recipe.train import iteration_seed, train
from slas.toyworld.world import CANVAS


@pytest.mark.parametrize("objective", ["ppo_sde", "nft"])
def test_a_trained_text_encoder_trains(tiny_ckpt, tmp_path, objective):
    # every micro-batch builds its own text-encoder graph: before, the rollout's one graph was backpropagated by
    # the first micro-batch and the second raised "Trying to backward through the graph a second time"
    extra = {"sample.eta": 0.0, "sample.same_noise_in_group": False} if objective == "nft" else {}
    cfg = load_config(None, tiny_overrides(tiny_ckpt, tmp_path / "r", **{
        "model.train_text_encoder": "true", "train.objective": objective, "train.iterations": 1, "eval.every": 0,
        "train.micro_batch": 2, "monitor.enabled": "false", **extra}))
    run = train(cfg, progress=False, log=lambda m: None)
    start = load_file(str(Path(tiny_ckpt) / "model.safetensors"))
    end = load_file(str(next((run / "checkpoints").glob("iter_*")) / "model.safetensors"))
    moved = [k for k in end if k.startswith("text_encoder") and not torch.equal(end[k], start[k])]
    assert moved, "the text encoder did not change"


def test_training_noise_never_equals_evaluation_noise():
    shape = (3, CANVAS, CANVAS)
    for seed in range(3):
        for it in range(1, 40):
            s = iteration_seed(seed, it)
            assert s >= EVAL_SEED_LIMIT
            g = torch.Generator().manual_seed(s)
            group0 = torch.randn(1, *shape, generator=g)  # what the recipe draws first for group 0
            for eval_seed in (it, seed * 1_000_003 + it, s % EVAL_SEED_LIMIT):  # before: seed 0 iteration it = eval seed it
                assert not torch.equal(group0, seeded_noise([eval_seed], shape))
    with pytest.raises(ValueError, match="outside"):
        seeded_noise([EVAL_SEED_LIMIT], shape)


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
