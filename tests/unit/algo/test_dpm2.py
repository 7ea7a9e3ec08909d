"""DiffusionNFT's dpm2 rollout solver (slas.algo.samplers.dpm): hand-computed steps, exactness where DDIM is exact,
second order where Euler is first order, and its place in the rollout."""

from __future__ import annotations

import math

import pytest
import torch

from slas.algo.samplers import dpm2_step, flow_sigmas, sampler_for
from slas.algo.samplers.rollout import rollout

F64 = torch.float64


def _s(*v):
    return torch.tensor(v, dtype=F64)


def test_second_order_step_hand_computed():
    # sigma 3/4 -> 1/2 -> 1/4: lambda = log((1 - s) / s) = -log 3, 0, log 3, so h = h_0 = log 3, r0 = 1, e^-h = 1/3,
    # alpha_t (e^-h - 1) = 3/4 x (-2/3) = -1/2. x = 1, v = 0: D0 = x0_hat = 1; x0_prev = 1/2: D1 = 1/2.
    # x_t = (1/4 / 1/2) x + 1/2 D0 + 1/4 D1 = 1/2 + 1/2 + 1/8
    x, v = torch.ones(1, 2), torch.zeros(1, 2)
    out = dpm2_step(v, x, _s(0.5), _s(0.25), sigma_prev=_s(0.75), x0_prev=torch.full((1, 2), 0.5))
    assert out.tolist() == [[1.125, 1.125]]
    # first order (no history): DDIM, eps_hat = (1 - 1/2 x 1) / (1/2) = 1, x_t = 3/4 x 1 + 1/4 x 1 = 1 = Euler x + dt v
    assert dpm2_step(v, x, _s(0.5), _s(0.25)).tolist() == [[1.0, 1.0]]
    # x = 2, v = 1 at sigma 1/2: x0_hat = 3/2, eps_hat = (2 - 3/4) / (1/2) = 5/2, x_t = 3/4 x 3/2 + 1/4 x 5/2 = 7/4
    assert dpm2_step(torch.ones(1, 1), torch.full((1, 1), 2.0), _s(0.5), _s(0.25)).item() == 1.75


def test_last_step_returns_x0_hat_and_a_history_at_sigma_one_adds_nothing():
    x, v = torch.tensor([[0.3, -1.2]]), torch.tensor([[0.8, 0.1]])
    # to sigma = 0 the step is first order whatever the history: x0_hat = x - sigma v
    last = dpm2_step(v, x, _s(0.2), _s(0.0), sigma_prev=_s(0.4), x0_prev=torch.full((1, 2), 9.0))
    torch.testing.assert_close(last, x - 0.2 * v)
    # sigma_prev = 1: lambda_s1 = -inf, so r0 = inf and D1 = 0: the DDIM step, as upstream computes it
    a = dpm2_step(v, x, _s(0.8), _s(0.6), sigma_prev=_s(1.0), x0_prev=torch.full((1, 2), 9.0))
    torch.testing.assert_close(a, dpm2_step(v, x, _s(0.8), _s(0.6)))


def _gaussian_flow(mu: float, s0: float):
    """The exact velocity of the rectified flow from N(0, 1) to data N(mu, s0^2) (1-D), and its ODE's end point.
    x0_hat(x, sigma) = E[x0 | x_sigma] = mu + (1 - sigma) s0^2 (x - (1 - sigma) mu) / var, var = (1 - sigma)^2 s0^2 +
    sigma^2; v = (x - x0_hat) / sigma. The ODE maps eps at sigma = 1 to mu + s0 eps."""
    def predict(x, sigma, idx):
        s = sigma.double().view(-1, *[1] * (x.ndim - 1))
        xd = x.double()
        var = (1 - s) ** 2 * s0**2 + s**2
        x0 = mu + (1 - s) * s0**2 * (xd - (1 - s) * mu) / var
        return ((xd - x0) / s).float()
    return predict, (lambda eps: mu + s0 * eps)


def _end_error(family: str, steps: int) -> float:
    predict, exact = _gaussian_flow(mu=1.5, s0=1.0)
    eps = torch.linspace(-2, 2, 9).view(9, 1)
    sampler = sampler_for("velocity", steps, family=family)
    ro = rollout(predict, eps, sampler, eta=0.0, generator=torch.Generator().manual_seed(0),
                 prompt_ids=torch.zeros(9, dtype=torch.long), group_ids=torch.zeros(9, dtype=torch.long),
                 keep_trajectory=False)
    return float((ro.x0.double() - exact(eps.double())).abs().max())


def test_dpm2_converges_faster_than_euler():
    # on a uniform sigma grid the last steps keep a fixed lambda step (sigma_(T-1) / sigma_(T-2) = 1/2 at any T), so
    # dpm2 reaches its second order slowly; over 8 -> 64 steps it is well above Euler's first order
    steps = (8, 16, 32, 64)
    euler, dpm2 = ([_end_error(f, t) for t in steps] for f in ("ode", "dpm2"))
    euler_orders = [math.log2(a / b) for a, b in zip(euler, euler[1:], strict=False)]
    assert all(0.85 < p < 1.15 for p in euler_orders), euler  # halving the step halves Euler's error
    assert math.log2(dpm2[0] / dpm2[-1]) / 3 > 1.5, dpm2  # measured 1.68
    assert all(d < e / 10 for d, e in zip(dpm2, euler, strict=True)), (dpm2, euler)


def test_dpm2_rollout_matches_diffusionnfts_solver():
    # the trajectory of NVlabs/DiffusionNFT@24af555 run_sampling(solver="dpm2", determistic=True) over
    # flow_sigmas(5, 3), on the Gaussian flow (mu 1.5, s0 0.6), computed with its solver.py; fp32, so to 1 ulp-ish
    predict, _ = _gaussian_flow(mu=1.5, s0=0.6)
    eps = torch.tensor([[-1.0], [0.5], [2.0]])
    ro = rollout(predict, eps, sampler_for("velocity", 5, family="dpm2", shift=3.0), eta=0.0,
                 generator=torch.Generator().manual_seed(0), prompt_ids=torch.zeros(3, dtype=torch.long),
                 group_ids=torch.zeros(3, dtype=torch.long))
    upstream = [[-1.0, 0.5, 2.0], [-0.8076924681663513, 0.5769230127334595, 1.961538553237915],
                [-0.5488551259040833, 0.6835185289382935, 1.9158921241760254],
                [-0.18780553340911865, 0.8439027667045593, 1.8756110668182373],
                [0.3343837559223175, 1.1185224056243896, 1.9026610851287842],
                [1.1429939270019531, 1.6785030364990234, 2.214012384414673]]  # [T+1, 3]
    torch.testing.assert_close(ro.latents[:, :, 0].T, torch.tensor(upstream), rtol=0, atol=1e-6)
    torch.testing.assert_close(ro.x0[:, 0], torch.tensor(upstream[-1]), rtol=0, atol=1e-6)


def test_dpm2_is_exact_when_the_data_is_one_point():
    # data = the point c: x0_hat = c at every level, so DDIM and the 2M update follow the straight path exactly
    c = torch.tensor([[0.25, -0.5]])
    predict = lambda x, sigma, idx: (x - c) / sigma.view(-1, 1)  # noqa: E731
    eps = torch.tensor([[1.0, 2.0], [-0.5, 0.3]])
    ro = rollout(predict, eps, sampler_for("velocity", 5, family="dpm2", shift=3.0), eta=0.0,
                 generator=torch.Generator().manual_seed(0), prompt_ids=torch.zeros(2, dtype=torch.long),
                 group_ids=torch.zeros(2, dtype=torch.long))
    sig = flow_sigmas(5, 3.0).view(1, -1, 1)  # [1, T+1, 1]
    torch.testing.assert_close(ro.latents, (1 - sig) * c[:, None] + sig * eps[:, None], rtol=0, atol=2e-6)
    assert ro.log_probs.abs().sum() == 0 and torch.allclose(ro.x0, c.expand(2, 2), atol=2e-6)


def test_rollout_chunking_does_not_change_dpm2_and_it_cannot_rescore():
    predict, _ = _gaussian_flow(mu=0.5, s0=0.8)
    eps = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    sampler = sampler_for("velocity", 6, family="dpm2")
    kw = dict(eta=0.0, generator=torch.Generator().manual_seed(0), prompt_ids=torch.zeros(6, dtype=torch.long),
              group_ids=torch.zeros(6, dtype=torch.long))
    a = rollout(predict, eps, sampler, **kw)
    b = rollout(predict, eps, sampler, batch_size=4, **(kw | {"generator": torch.Generator().manual_seed(0)}))
    assert torch.equal(a.x0, b.x0) and torch.equal(a.latents, b.latents)
    with pytest.raises(ValueError, match="no log-prob"):
        sampler.step(eps, eps, torch.zeros(6, dtype=torch.long), eta=0.0, prev_sample=eps)
