"""Rollout and re-scoring (slas.algo.samplers.rollout): ratio == 1 at unchanged weights at the recipe's batch shapes,
with an SDE window, and through every sampler a backbone can get."""

import pytest
import torch

from slas.algo.samplers import FlowSampler, flow_sigmas, flow_step_with_logprob, sampler_for, step_etas, trainable_steps
from slas.algo.samplers.rollout import rollout
from slas.config import derived, load_config
from slas.policy.base import index_cond
from slas.toyworld.backbone import ToyBackbone


@pytest.mark.parametrize("family", ["dance", "flow_grpo"])
def test_recipe_rescoring_gives_ratio_one_at_unchanged_weights(tiny_ckpt, family):
    """The recipe's rollout + re-scoring path at the recipe's batch shapes."""
    bb = ToyBackbone.from_checkpoint(tiny_ckpt)
    prompts = ["a photo of a red circle", "a photo of two squares"]
    cond = bb.encode_prompts(prompts)
    pid = torch.arange(2).repeat_interleave(4)  # N = 8
    g = torch.Generator().manual_seed(0)
    sig = flow_sigmas(4)
    with torch.no_grad():
        ro = rollout(lambda x, s, idx: bb.predict(x, s, index_cond(cond, pid[idx])), torch.randn(8, 3, 32, 32),
                     FlowSampler(sig, family), eta=0.7, generator=g, prompt_ids=pid, group_ids=pid)
        lat, lp = ro.latents, ro.log_probs  # [N, T+1, ...], [N, T]
        assert lat.shape == (8, 5, 3, 32, 32) and lp.shape == (8, 4) and torch.equal(ro.sigmas, sig)
        for t in range(4):  # same shape as the rollout: all N samples at one step
            v = bb.predict(lat[:, t], sig[t].expand(8), index_cond(cond, pid))
            out = flow_step_with_logprob(family, v, lat[:, t], sig[t].expand(8), sig[t + 1].expand(8), eta=0.7,
                                         prev_sample=lat[:, t + 1])
            assert (out.log_prob - lp[:, t]).exp().sub(1).abs().max() < 1e-6


def test_sde_window_rollout_is_ode_outside_and_rescoring_still_gives_ratio_one(tiny_ckpt):
    """Steps outside sample.sde_window are deterministic ODE steps with log-prob 0; inside, the
    stored transitions re-score to ratio 1 (Flow-GRPO-Fast / MixGRPO windows)."""
    cfg = load_config(None, ["train.objective=ppo_sde", "sample.steps=5", "sample.sde_window=[1,3]", "sample.eta=0.7",
                             "train.timestep_fraction=0.6"])
    sample = cfg.sample
    etas = step_etas(sample.steps, sample.sde_window, sample.eta)
    assert etas == [0.0, 0.7, 0.7, 0.0, 0.0] and trainable_steps(sample.steps, sample.sde_window) == [1, 2]
    assert derived(cfg)["trained_steps_per_sample"] == 1  # int(2 * 0.6)
    bb = ToyBackbone.from_checkpoint(tiny_ckpt)
    cond = bb.encode_prompts(["a photo of a red circle"])
    pid = torch.zeros(4, dtype=torch.long)
    sig = flow_sigmas(5)
    noise = torch.randn(1, 3, 32, 32).expand(4, -1, -1, -1)  # one shared start: spread only from the window
    with torch.no_grad():
        ro = rollout(lambda x, s, idx: bb.predict(x, s, index_cond(cond, pid[idx])), noise, FlowSampler(sig, "dance"),
                     eta=etas, generator=torch.Generator().manual_seed(0),
                     prompt_ids=pid, group_ids=pid)
        lat, lp = ro.latents, ro.log_probs
        assert torch.equal(lp[:, [0, 3, 4]], torch.zeros(4, 3))
        assert torch.equal(lat[0, 1], lat[3, 1])  # step 0 is an ODE step: the group is still identical
        assert (lat[0, 2] - lat[3, 2]).abs().max() > 1e-3  # step 1 is stochastic
        assert (lp[:, 1:3] != 0).all()
        for t in (1, 2):
            v = bb.predict(lat[:, t], sig[t].expand(4), index_cond(cond, pid))
            out = flow_step_with_logprob("dance", v, lat[:, t], sig[t].expand(4), sig[t + 1].expand(4), eta=0.7,
                                         prev_sample=lat[:, t + 1])
            assert (out.log_prob - lp[:, t]).exp().sub(1).abs().max() < 1e-6
    with pytest.raises(ValueError, match="one value per step"):
        rollout(lambda x, s, idx: x, noise, FlowSampler(sig, "dance"), eta=[0.5, 0.5],
                generator=torch.Generator(), prompt_ids=pid, group_ids=pid)


@pytest.mark.parametrize("prediction, family", [("velocity", "dance"), ("velocity", "flow_grpo"), ("epsilon", "ddim")])
def test_dispatched_sampler_rescoring_gives_ratio_one(prediction, family):
    """Rollout and re-scoring through one sampler object agree at unchanged weights, with grad on and shuffled
    micro-batches that mix steps (the recipe's update pass), for each sampler a backbone can get."""
    torch.manual_seed(0)
    net = torch.nn.Conv2d(4, 4, 3, padding=1)
    ac = torch.linspace(0.9999, 0.98, 1000).cumprod(0)
    s = sampler_for(prediction, 4, family=family, alphas_cumprod=ac if prediction == "epsilon" else None)

    def predict(x, t, idx=None):
        return net(x) * (1 + t.view(-1, 1, 1, 1) / 1000)

    ids = torch.arange(6)
    ro = rollout(predict, torch.randn(6, 4, 8, 8), s, eta=0.8 if family != "ddim" else 1.0,
                 generator=torch.Generator().manual_seed(1), prompt_ids=ids, group_ids=ids)
    assert (ro.log_probs != 0).all()
    pairs = torch.cartesian_prod(torch.arange(6), torch.arange(4))[torch.randperm(24)]
    for mb in pairs.split(5):
        n, t = mb[:, 0], mb[:, 1]
        x = ro.latents[n, t]
        out = s.step(predict(x, s.model_time(t)), x, t, eta=0.8 if family != "ddim" else 1.0,
                     prev_sample=ro.latents[n, t + 1])
        assert (out.log_prob - ro.log_probs[n, t]).exp().sub(1).abs().max() < 1e-6
