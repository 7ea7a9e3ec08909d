"""Samplers with log-probs: ratio == 1 at unchanged weights (also for shuffled, mixed-timestep micro-batches),
hand-checked formulas, the eta = 0 limit, reductions, empirical std, input validation, DDIM and the flow sigma grid vs
diffusers, the forward process the forward-process objectives train on, and which sampler a backbone gets
(sampler_for)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

from slas.algo.samplers import (
    FAMILIES,
    DDIMSampler,
    FlowSampler,
    StepOutput,
    TimeShift,
    ddim_alphas,
    ddim_step_with_logprob,
    euler_ode,
    flow_sigmas,
    flow_step_with_logprob,
    sampler_for,
)

N, T, SHAPE = 8, 5, (3, 8, 8)
D = 3 * 8 * 8
ETA = {"dance": 0.3, "flow_grpo": 0.7, "ode": 0.0, "ddim": 1.0}
ALL = (*FAMILIES, "ddim")


def sd_scheduler() -> DDIMScheduler:
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")


class TinyModel(torch.nn.Module):
    """Seeded conv predicting v (flow) or eps (ddim) from x, conditioned on the per-sample noise level."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.conv.weight.copy_(0.2 * torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.copy_(0.1 * torch.randn(self.conv.bias.shape, generator=g))

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        level = level.view(-1, 1, 1, 1)  # [N, 1, 1, 1]
        return self.conv(x) * (1 + level) + level


def levels(family: str) -> tuple[torch.Tensor, torch.Tensor]:
    """[T] current and next noise levels: sigmas for flow families, alpha-bars for DDIM."""
    if family == "ddim":
        _, ab, ab_prev = ddim_alphas(sd_scheduler().alphas_cumprod, T)
        return ab, ab_prev
    sigmas = flow_sigmas(T, shift=3.0)
    return sigmas[:-1], sigmas[1:]


def step(family: str, model: TinyModel, x: torch.Tensor, lvl: torch.Tensor, lvl_next: torch.Tensor,
         **kw) -> StepOutput:
    out = model(x, lvl)
    if family == "ddim":
        return ddim_step_with_logprob(out, x, lvl, lvl_next, eta=ETA[family], **kw)
    return flow_step_with_logprob(family, out, x, lvl, lvl_next, eta=ETA[family], **kw)


@torch.no_grad()
def rollout(family: str, model: TinyModel, reduce: str) -> tuple[torch.Tensor, torch.Tensor]:
    """latents [N, T+1, ...] and log_probs [N, T] of one rollout."""
    g = torch.Generator().manual_seed(1)
    lvl, lvl_next = levels(family)
    x = torch.randn(N, *SHAPE, generator=g)
    xs, lps = [x], []
    for t in range(T):
        out = step(family, model, x, lvl[t].expand(N), lvl_next[t].expand(N), generator=g, reduce=reduce)
        x = out.prev_sample
        xs.append(x)
        lps.append(out.log_prob)
    return torch.stack(xs, 1), torch.stack(lps, 1)


@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize("family", ALL)
def test_ratio_is_one_at_unchanged_weights(family, reduce):
    model = TinyModel()
    latents, old = rollout(family, model, reduce)  # [N, T+1, ...], [N, T]
    assert latents.shape == (N, T + 1, *SHAPE) and old.shape == (N, T)
    assert torch.isfinite(latents).all() and torch.isfinite(old).all()
    if family != "ode":
        assert (old != 0).all()  # a real density, not the deterministic fallback
    lvl, lvl_next = levels(family)

    # same batch shape as the rollout
    with torch.no_grad():
        for t in range(T):
            new = step(family, model, latents[:, t], lvl[t].expand(N), lvl_next[t].expand(N),
                       prev_sample=latents[:, t + 1], reduce=reduce).log_prob
            assert (torch.exp(new - old[:, t]) - 1).abs().max() < 1e-6

    # shuffled micro-batches mixing (sample, timestep) pairs: per-sample level vectors
    pairs = torch.cartesian_prod(torch.arange(N), torch.arange(T))  # [N*T, 2]
    pairs = pairs[torch.randperm(len(pairs), generator=torch.Generator().manual_seed(2))]
    with torch.no_grad():
        for mb in pairs.split(N):
            n, t = mb[:, 0], mb[:, 1]
            assert len(t.unique()) > 1
            new = step(family, model, latents[n, t], lvl[t], lvl_next[t], prev_sample=latents[n, t + 1],
                       reduce=reduce).log_prob
            assert (torch.exp(new - old[n, t]) - 1).abs().max() < 1e-6

    # the check can fail: changed weights move the ratio of every stochastic family
    if family != "ode":
        with torch.no_grad():
            model.conv.weight.add_(0.01)
            new = step(family, model, latents[:, 0], lvl[0].expand(N), lvl_next[0].expand(N),
                       prev_sample=latents[:, 1], reduce=reduce).log_prob
        assert (torch.exp(new - old[:, 0]) - 1).abs().max() > 1e-4


def numpy_flow(family: str, x, v, s, s_next, eta):
    """Direct float64 transcription of DanceGRPO flux_step / Flow-GRPO sde_step_with_logprob."""
    s, s_next = s[:, None], s_next[:, None]
    dt = s_next - s
    if family == "dance":
        x0 = x - s * v
        score = -(x - (1 - s) * x0) / s**2
        return x + dt * v - 0.5 * eta**2 * score * dt, eta * np.sqrt(s - s_next)
    s_den = np.where(s == 1, s_next, s)
    g = eta * np.sqrt(s / (1 - s_den))
    return x + dt * (v + g**2 * (x + (1 - s) * v) / (2 * s)), g * np.sqrt(-dt)


@pytest.mark.parametrize("family", ["dance", "flow_grpo"])
def test_flow_formulas_by_hand(family):
    rng = np.random.default_rng(0)
    x, v, z = rng.standard_normal((3, 2, 4))
    s, s_next, eta = np.array([1.0, 0.6]), np.array([0.75, 0.0]), 0.7
    mean, std = numpy_flow(family, x, v, s, s_next, eta)
    if family == "flow_grpo":
        # sigma == 1 uses sigma_next (= Flow-GRPO's sigmas[1]) in the denominator only:
        # g = 0.7 sqrt(1 / (1 - 0.75)) = 1.4, std = 1.4 sqrt(0.25) = 0.7
        assert std[0, 0] == pytest.approx(0.7)
        assert std[1, 0] == pytest.approx(0.7 * math.sqrt(0.6 / 0.4) * math.sqrt(0.6))
    else:
        assert std[:, 0] == pytest.approx([0.7 * 0.5, 0.7 * math.sqrt(0.6)])
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    out = flow_step_with_logprob(family, f(v), f(x), f(s), f(s_next), eta=eta, noise=f(z), reduce="sum")
    np.testing.assert_allclose(out.mean.numpy(), mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.std.numpy(), std, rtol=1e-6)
    np.testing.assert_allclose(out.prev_sample.numpy(), mean + std * z, rtol=1e-6, atol=1e-6)
    lp = (-(z**2) / 2 - np.log(std) - 0.5 * np.log(2 * np.pi)).sum(1)
    np.testing.assert_allclose(out.log_prob.numpy(), lp, rtol=1e-5)


@pytest.mark.parametrize("family", ["dance", "flow_grpo"])
def test_eta_zero_is_the_ode_step(family):
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(2, N, *SHAPE, generator=g)
    s, s_next = torch.rand(N, generator=g) * 0.5 + 0.5, torch.rand(N, generator=g) * 0.4
    s[0] = 1.0
    ode = flow_step_with_logprob("ode", v, x, s, s_next, eta=0.0)
    torch.testing.assert_close(ode.mean, x + (s_next - s).view(-1, 1, 1, 1) * v)
    v.requires_grad_(True)
    out = flow_step_with_logprob(family, v, x, s, s_next, eta=0.0)
    torch.testing.assert_close(out.mean, ode.mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.prev_sample, out.mean)
    assert (out.std == 0).all() and (out.log_prob == 0).all()
    out.log_prob.sum().backward()  # the masked deterministic branch must not leak NaN gradients
    assert torch.isfinite(v.grad).all()


def test_ode_family_and_euler_ode():
    g = torch.Generator().manual_seed(0)
    x, v, prev = torch.randn(3, N, *SHAPE, generator=g)
    out = flow_step_with_logprob("ode", v, x, 0.5, 0.25, eta=0.0, prev_sample=prev)
    assert out.prev_sample is prev and (out.log_prob == 0).all() and out.log_prob.shape == (N,)
    assert out.std.shape == (N, 1, 1, 1)

    model = TinyModel()
    sigmas = flow_sigmas(6, shift=3.0)
    expected = x.clone()
    with torch.no_grad():
        for i in range(6):
            expected = expected + (sigmas[i + 1] - sigmas[i]) * model(expected, sigmas[i].expand(N))
    torch.testing.assert_close(euler_ode(model, x, sigmas), expected, rtol=0, atol=0)


def _known_noise_step(family: str, x, out, z, reduce):
    if family == "ddim":
        return ddim_step_with_logprob(out, x, 0.3, 0.5, eta=1.0, noise=z, reduce=reduce)
    return flow_step_with_logprob(family, out, x, 0.8, 0.6, eta=ETA[family], noise=z, reduce=reduce)


@pytest.mark.parametrize("family", ["dance", "flow_grpo", "ddim"])
def test_logprob_of_known_noise_and_reductions(family):
    g = torch.Generator().manual_seed(0)
    x, out, z = torch.randn(3, N, *SHAPE, generator=g)
    s = _known_noise_step(family, x, out, z, "sum")
    m = _known_noise_step(family, x, out, z, "mean")
    std = s.std.flatten()  # [N]
    assert std.shape == (N,) and (std > 0).all()
    expected = (-(z**2) / 2).flatten(1).sum(1) - D * (torch.log(std) + 0.5 * math.log(2 * math.pi))
    torch.testing.assert_close(s.log_prob, expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(s.log_prob, D * m.log_prob, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(s.prev_sample, m.prev_sample, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["dance", "flow_grpo", "ddim"])
def test_empirical_std(family):
    g = torch.Generator().manual_seed(0)
    n = 20_000
    x, out = torch.randn(2, n, 1, generator=g)
    if family == "ddim":
        res = ddim_step_with_logprob(out, x, 0.3, 0.5, eta=1.0, generator=g)
    else:
        res = flow_step_with_logprob(family, out, x, 0.8, 0.6, eta=ETA[family], generator=g)
    resid = (res.prev_sample - res.mean).flatten()  # [n]
    std = res.std.flatten()[0].item()
    assert torch.allclose(res.std, torch.full_like(res.std, std))
    assert resid.std().item() == pytest.approx(std, rel=0.03)
    assert abs(resid.mean().item()) < 4 * std / math.sqrt(n)


def test_scalar_and_vector_sigmas_agree_and_generator_is_reproducible():
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(2, N, *SHAPE, generator=g)
    a = flow_step_with_logprob("dance", v, x, 0.7, torch.tensor(0.5), eta=0.3,
                               generator=torch.Generator().manual_seed(3))
    b = flow_step_with_logprob("dance", v, x, torch.full((N,), 0.7), torch.full((N,), 0.5), eta=0.3,
                               generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.prev_sample, b.prev_sample, rtol=0, atol=0)
    torch.testing.assert_close(a.log_prob, b.log_prob, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["dance", "flow_grpo", "ddim"])
def test_logprob_gradient_flows_through_the_mean_only(family):
    model = TinyModel()
    g = torch.Generator().manual_seed(0)
    x, prev = torch.randn(2, N, *SHAPE, generator=g)
    lvl = torch.full((N,), 0.3 if family == "ddim" else 0.8)
    lvl_next = torch.full((N,), 0.5 if family == "ddim" else 0.6)
    out = step(family, model, x, lvl, lvl_next, prev_sample=prev)
    out.log_prob.mean().backward()
    grad = model.conv.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert out.std.requires_grad is False


def test_bad_inputs_raise():
    x = torch.zeros(N, *SHAPE)
    with pytest.raises(ValueError, match="unknown flow sampler family 'foo'"):
        flow_step_with_logprob("foo", x, x, 0.5, 0.4, eta=0.3)
    with pytest.raises(ValueError, match="reduce must be one of"):
        flow_step_with_logprob("dance", x, x, 0.5, 0.4, eta=0.3, reduce="max")
    for eta in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="eta .* must be >= 0"):
            flow_step_with_logprob("dance", x, x, 0.5, 0.4, eta=eta)
    for s, s_next in [(0.5, 0.5), (0.4, 0.5), (1.2, 0.5), (0.5, -0.1)]:
        with pytest.raises(ValueError, match="0 <= sigma_next < sigma <= 1"):
            flow_step_with_logprob("flow_grpo", x, x, s, s_next, eta=0.7)
    with pytest.raises(ValueError, match="0 <= sigma_next < sigma <= 1"):  # one bad sample in a vector
        flow_step_with_logprob("ode", x, x, torch.full((N,), 0.5), torch.tensor([0.4] * (N - 1) + [0.6]), eta=0.0)
    with pytest.raises(ValueError, match=r"sigma must be .* \[N\]=8"):
        flow_step_with_logprob("dance", x, x, torch.full((3,), 0.5), 0.4, eta=0.3)
    with pytest.raises(ValueError, match="v and x must have the same shape"):
        flow_step_with_logprob("dance", x[:, :2], x, 0.5, 0.4, eta=0.3)
    with pytest.raises(ValueError, match="prev_sample must have the shape of x"):
        flow_step_with_logprob("dance", x, x, 0.5, 0.4, eta=0.3, prev_sample=x[:4])
    with pytest.raises(ValueError, match="noise is only used when sampling"):
        flow_step_with_logprob("dance", x, x, 0.5, 0.4, eta=0.3, prev_sample=x, noise=x)
    with pytest.raises(ValueError, match="noise must have the shape of x"):
        flow_step_with_logprob("dance", x, x, 0.5, 0.4, eta=0.3, noise=x[:, :1])
    for ab, ab_prev in [(0.5, 0.5), (0.5, 0.3), (0.0, 0.3), (0.5, 1.1)]:
        with pytest.raises(ValueError, match="0 < alpha_bar < alpha_bar_prev <= 1"):
            ddim_step_with_logprob(x, x, ab, ab_prev, eta=1.0)
    with pytest.raises(ValueError, match="DDIM eta must be in"):
        ddim_step_with_logprob(x, x, 0.3, 0.5, eta=1.5)
    with pytest.raises(ValueError, match="eps and x must have the same shape"):
        ddim_step_with_logprob(x[:2], x, 0.3, 0.5, eta=1.0)
    ac = sd_scheduler().alphas_cumprod
    for steps in (0, 1000):
        with pytest.raises(ValueError, match=r"steps must be in \[1, 999\]"):
            ddim_alphas(ac, steps)


@pytest.mark.parametrize("steps", [1, 7, 10, 50, 999])
def test_ddim_alphas_match_diffusers(steps):
    sched = sd_scheduler()
    sched.set_timesteps(steps)
    timesteps, ab, ab_prev = ddim_alphas(sched.alphas_cumprod, steps)
    assert timesteps.dtype == torch.int64
    assert torch.equal(timesteps, sched.timesteps)
    assert torch.equal(ab, sched.alphas_cumprod[sched.timesteps])
    prev_t = sched.timesteps - sched.config.num_train_timesteps // steps
    expected_prev = torch.stack([sched.alphas_cumprod[t] if t >= 0 else sched.final_alpha_cumprod for t in prev_t])
    assert torch.equal(ab_prev, expected_prev)


def test_flow_sigmas_are_the_flow_match_schedulers_bit_for_bit():
    """FluxPipeline's grid, linspace(1, 1/T, T) (pipeline_flux.py:823), through FlowMatchEulerDiscreteScheduler: with a
    static shift, and with FLUX.1-dev's dynamic one (mu from the token count: 720 px and 1024 px give 2025 and 4096
    tokens), every sigma is the same float as flow_sigmas'."""
    dynamic = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                              base_image_seq_len=256, max_image_seq_len=4096)
    for steps in (*range(1, 31), 50, 100, 1000):
        grid = np.linspace(1.0, 1 / steps, steps)
        for shift in (1.0, 3.0, 2.5):
            sched = FlowMatchEulerDiscreteScheduler(shift=shift)
            sched.set_timesteps(sigmas=grid)
            assert torch.equal(flow_sigmas(steps, shift), sched.sigmas), (steps, shift)
        for mu in (0.7994, 1.15, 0.45):
            dynamic.set_timesteps(sigmas=grid, mu=mu)
            assert torch.equal(flow_sigmas(steps, TimeShift(math.exp(mu), dynamic=True)), dynamic.sigmas), (steps, mu)
    # the static form at e^mu is the same map, rounded differently: a plain float shift is not the dynamic grid
    dynamic.set_timesteps(sigmas=np.linspace(1.0, 1 / 16, 16), mu=0.7994)
    diff = (flow_sigmas(16, math.exp(0.7994)) - dynamic.sigmas).abs().max()
    assert 0 < diff < 1e-6, diff


def test_flow_sigmas_at_shift_one_are_the_plain_grid():
    """Shift 1 (every ShapesWorld run) is linspace(1, 0, T + 1) itself, as before the scheduler's arithmetic."""
    for steps in range(1, 1001):
        assert torch.equal(flow_sigmas(steps), torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).float()), steps
    assert f"{TimeShift(2.5):g}" == "2.5" and str(TimeShift(math.exp(0.5), dynamic=True)) == "1.64872 (dynamic)"
    for bad in (0.0, -1.0, float("nan"), TimeShift(0.0, dynamic=True)):
        with pytest.raises(ValueError, match="shift must be > 0"):
            flow_sigmas(4, bad)


def test_ddim_step_matches_diffusers():
    sched = sd_scheduler()
    steps = 10
    sched.set_timesteps(steps)
    timesteps, ab, ab_prev = ddim_alphas(sched.alphas_cumprod, steps)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 4, 8, 8, generator=g)
    for i, t in enumerate(timesteps):
        eps, noise = torch.randn(2, N, 4, 8, 8, generator=g)
        ref = sched.step(eps, t, x, eta=1.0, variance_noise=noise).prev_sample
        out = ddim_step_with_logprob(eps, x, ab[i], ab_prev[i], eta=1.0, noise=noise)
        torch.testing.assert_close(out.prev_sample, ref, rtol=1e-5, atol=1e-5)
        std_ref = sched._get_variance(t, t - 1000 // steps).sqrt()
        torch.testing.assert_close(out.std.flatten(), std_ref.expand(N), rtol=1e-5, atol=1e-7)
        x = ref


@pytest.mark.parametrize("family", ["dance", "flow_grpo"])
def test_noise_pool_block_noise_logprob_and_ratio_one(family):
    """noise_pool f: block-constant noise, the density of the block coordinates, a projected score
    correction, and ratio == 1 on re-scoring; f = 1 is the plain step bit for bit."""
    f = 4
    g = torch.Generator().manual_seed(0)
    model = TinyModel()
    x = torch.randn(N, *SHAPE, generator=g)  # [N, 3, 8, 8]
    s, s_next = torch.full((N,), 0.7), torch.full((N,), 0.5)
    v = model(x, s)
    noise = torch.randn(N, *SHAPE, generator=g)
    plain = flow_step_with_logprob(family, v, x, s, s_next, eta=ETA[family], noise=noise)
    same = flow_step_with_logprob(family, v, x, s, s_next, eta=ETA[family], noise=noise, noise_pool=1)
    assert torch.equal(plain.prev_sample, same.prev_sample) and torch.equal(plain.log_prob, same.log_prob)

    out = flow_step_with_logprob(family, v, x, s, s_next, eta=ETA[family], noise=noise, reduce="sum", noise_pool=f)
    resid = out.prev_sample - out.mean  # [N, 3, 8, 8], constant on 4 x 4 blocks
    blocks = resid.unflatten(2, (2, 4)).unflatten(4, (2, 4))  # [N, 3, 2, 4, 2, 4]
    assert torch.allclose(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks), atol=1e-6)
    z = f * noise.unflatten(2, (2, 4)).unflatten(4, (2, 4)).mean((3, 5))  # [N, 3, 2, 2] the block normals
    assert torch.allclose(blocks[:, :, :, 0, :, 0], out.std.view(N, 1, 1, 1) * z, atol=1e-6)
    std = out.std.flatten()
    by_hand = (-(z**2) / 2).flatten(1).sum(1) - 12 * (torch.log(std) + 0.5 * math.log(2 * math.pi))
    assert torch.allclose(out.log_prob, by_hand, atol=1e-4)
    # the score correction is projected: mean - ode_mean is block-constant
    ode = x + (s_next - s).view(-1, 1, 1, 1) * v
    corr = (out.mean - ode).unflatten(2, (2, 4)).unflatten(4, (2, 4))
    assert torch.allclose(corr, corr[:, :, :, :1, :, :1].expand_as(corr), atol=1e-6)
    assert not torch.allclose(out.mean, plain.mean)
    rescored = flow_step_with_logprob(family, v, x, s, s_next, eta=ETA[family], prev_sample=out.prev_sample,
                                      reduce="sum", noise_pool=f)
    assert (torch.exp(rescored.log_prob - out.log_prob) - 1).abs().max() < 1e-5
    with pytest.raises(ValueError, match="divisible"):
        flow_step_with_logprob(family, v, x, s, s_next, eta=ETA[family], noise_pool=3)
    with pytest.raises(ValueError, match="noise_pool must be an int"):
        flow_step_with_logprob(family, v, x, s, s_next, eta=ETA[family], noise_pool=0)


def test_noise_pool_empirical_std_per_block():
    x = torch.zeros(4000, 1, 8, 8)
    v = torch.zeros_like(x)
    out = flow_step_with_logprob("dance", v, x, 0.8, 0.6, eta=0.5, generator=torch.Generator().manual_seed(0),
                                 noise_pool=8)
    resid = (out.prev_sample - out.mean)[:, 0]  # [4000, 8, 8], one value per sample
    assert torch.allclose(resid, resid[:, :1, :1].expand_as(resid), atol=1e-6)
    assert abs(float(resid[:, 0, 0].std()) / (0.5 * math.sqrt(0.2)) - 1) < 0.05


def test_forward_process_of_the_samplers():
    """``noised`` / ``velocity``, what nft / awm train on: the flow sampler's x_t = (1 - sigma) x0 + sigma eps; DDIM's
    VP x_t = sqrt(ab) x0 + sqrt(1 - ab) eps is the flow point at t = sqrt(1 - ab) / (sqrt(ab) + sqrt(1 - ab)),
    rescaled, and an epsilon prediction converts to the rectified-flow velocity eps - x0 (exactly when the
    prediction is exact). For both, the x0-space error t (v - target) is x0 - x0_hat (DiffusionNFT's e)."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 4, 8, 8, generator=g), torch.randn(6, 4, 8, 8, generator=g)
    delta = 0.1 * torch.randn(6, 4, 8, 8, generator=g)  # a prediction error
    idx = torch.tensor([0, 1, 2, 3, 4, 4])
    bc = lambda v: v.view(-1, 1, 1, 1)  # noqa: E731

    flow = sampler_for("velocity", 5, family="flow_grpo", shift=3.0)
    x_t, t = flow.noised(x0, eps, idx)
    sigma = flow.sigmas[idx]
    assert torch.equal(t, sigma) and (t > 0).all() and (t <= 1).all()  # step 0 is pure noise, t = 1
    torch.testing.assert_close(x_t, (1 - bc(sigma)) * x0 + bc(sigma) * eps)
    v = flow.velocity(eps - x0 + delta, x_t, idx)
    torch.testing.assert_close(v, eps - x0 + delta)
    torch.testing.assert_close(bc(t) * (v - (eps - x0)), x0 - flow.x0(v, x_t, idx))

    ac = torch.linspace(0.9999, 0.98, 1000).cumprod(0)  # SD-like: alpha-bar from ~1 down to ~0
    ddim = sampler_for("epsilon", 5, family="ddim", alphas_cumprod=ac)
    x_t, t = ddim.noised(x0, eps, idx)
    ab = ddim.alpha_bar[idx]
    a, s = ab.sqrt(), (1 - ab).sqrt()
    torch.testing.assert_close(x_t, bc(a) * x0 + bc(s) * eps)  # the model's own (VP) input at model_time(idx)
    torch.testing.assert_close(t, s / (a + s))
    assert (t[1:] <= t[:-1]).all() and t[0] > 0.9 and t[-1] < 0.1  # from noise to data along the schedule
    torch.testing.assert_close(x_t / bc(a + s), (1 - bc(t)) * x0 + bc(t) * eps, atol=1e-5, rtol=1e-5)
    v = ddim.velocity(eps, x_t, idx)  # exact epsilon -> exact velocity
    assert (v - (eps - x0)).abs().max() < 1e-5 * (eps - x0).abs().max(), (v - (eps - x0)).abs().max()
    v = ddim.velocity(eps + delta, x_t, idx)  # the velocity error is (1 + s / a) x the epsilon error
    torch.testing.assert_close(v - (eps - x0), bc(1 + s / a) * delta, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(bc(t) * (v - (eps - x0)), x0 - ddim.x0(eps + delta, x_t, idx), atol=1e-5, rtol=1e-5)


def test_sampler_dispatch():
    s = sampler_for("velocity", 4, family="dance", shift=3.0)
    assert isinstance(s, FlowSampler) and torch.equal(s.sigmas, flow_sigmas(4, 3.0))
    ac = torch.linspace(0.999, 0.01, 1000).cumprod(0)
    d = sampler_for("epsilon", 5, family="ddim", alphas_cumprod=ac)
    assert isinstance(d, DDIMSampler) and torch.equal(d.timesteps, ddim_alphas(ac, 5)[0])
    assert torch.equal(d.model_time(torch.tensor([0, 4])), d.timesteps[[0, 4]].float())
    with pytest.raises(ValueError, match="epsilon-prediction backbone samples with family 'ddim'"):
        sampler_for("epsilon", 5, family="dance", alphas_cumprod=ac)
    with pytest.raises(ValueError, match="flow family"):
        sampler_for("velocity", 5, family="ddim")
    with pytest.raises(ValueError, match="DDIM has no sigma step"):
        d.dt(torch.tensor([0]))
