"""DiffusionNFT's deterministic rollout solver ``dpm2``: the multistep DPM-Solver++(2M) in data prediction on a
rectified flow (NVlabs/DiffusionNFT@24af555 flow_grpo/diffusers_patch/solver.py:207-356, selected by
``config.sample.solver = "dpm2"`` in config/nft.py:66).

On the flow x_sigma = alpha x0 + sigma eps with alpha = 1 - sigma, the data prediction is x0_hat = x - sigma v and
the log signal-to-noise ratio lambda = log(alpha / sigma). One step sigma_s0 -> sigma_t, with h = lambda_t -
lambda_s0 (solver.py:317-350):

    x_t = (sigma_t / sigma_s0) x - alpha_t (e^-h - 1) D0 - 1/2 alpha_t (e^-h - 1) D1
    D0 = x0_hat(s0),  D1 = (x0_hat(s0) - x0_hat(s1)) / r0,  r0 = (lambda_s0 - lambda_s1) / h

with s1 the previous level; D1 = 0 is DPM-Solver++(1), which equals DDIM and the Euler step of the flow ODE. As
upstream (solver.py:229-253), the first step and the last (to sigma = 0, which returns x0_hat) are first-order
DDIM steps, ``(1 - sigma_t) x0_hat + sigma_t eps_hat`` with eps_hat = (x - (1 - sigma_s0) x0_hat) / sigma_s0
(solver.py:275-295 at eta 0), and every other step is second order. At sigma_s1 = 1 (the step after the first on a
schedule from 1), lambda_s1 = -inf, so r0 = inf and D1 = 0 there too, exactly as upstream computes it.

Arithmetic as upstream: the coefficients from the schedule in float64, cast to the sample's float32 when they
multiply it (a 0-d float64 tensor times a float32 tensor is float32 in torch), the sample and the data predictions
in float32. There is no log-prob: the rollout of the forward-process objectives (nft, awm) keeps only x0.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _coef(c: Tensor, x: Tensor) -> Tensor:
    """float64 [M] -> float32 [M, 1, ..., 1] on x's device: upstream's 0-d float64 scalars multiply float32 samples."""
    return c.to(device=x.device, dtype=torch.float32).view(-1, *[1] * (x.ndim - 1))


def _lam(sigma: Tensor) -> Tensor:
    """lambda = log(alpha) - log(sigma), alpha = 1 - sigma (solver.py:353-356), float64; -inf at sigma = 1."""
    return torch.log(1 - sigma) - torch.log(sigma)


def ddim_step(x0_hat: Tensor, x: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
    """[M, ...] the first-order step sigma -> sigma_next (DDIM at eta 0, solver.py:275-295): x0_hat, x [M, ...]
    float32, sigma, sigma_next [M] float64."""
    eps_hat = (x - _coef(1 - sigma, x) * x0_hat) / _coef(sigma, x)
    return _coef(1 - sigma_next, x) * x0_hat + _coef(sigma_next, x) * eps_hat


def dpm2_update(x0_hat: Tensor, x0_prev: Tensor, x: Tensor, sigma_prev: Tensor, sigma: Tensor,
                sigma_next: Tensor) -> Tensor:
    """[M, ...] the second-order multistep update sigma -> sigma_next (solver.py:317-350), from the data predictions
    at sigma (``x0_hat``) and at the previous level sigma_prev (``x0_prev``), all [M, ...] float32; the sigmas [M]
    float64 with 0 < sigma_next < sigma < sigma_prev <= 1."""
    lam_t, lam_s0, lam_s1 = _lam(sigma_next), _lam(sigma), _lam(sigma_prev)
    h, h_0 = lam_t - lam_s0, lam_s0 - lam_s1
    r0 = h_0 / h  # inf when sigma_prev = 1: then D1 = 0 (first order), as upstream
    phi = (1 - sigma_next) * (torch.exp(-h) - 1)  # alpha_t (e^-h - 1)
    d1 = _coef(1.0 / r0, x) * (x0_hat - x0_prev)
    return _coef(sigma_next / sigma, x) * x - _coef(phi, x) * x0_hat - _coef(0.5 * phi, x) * d1


def dpm2_step(v: Tensor, x: Tensor, sigma: Tensor, sigma_next: Tensor, *, sigma_prev: Tensor | None = None,
              x0_prev: Tensor | None = None) -> Tensor:
    """[M, ...] float32: one step of DiffusionNFT's ``dpm2`` from x [M, ...] at sigma to sigma_next, with v the
    velocity at x. ``x0_prev`` (the data prediction of the previous step, [M, ...]) and ``sigma_prev`` [M] make it
    second order; without them (the first step), or where sigma_next = 0 (the last), it is the first-order DDIM step.
    Sigmas are [M] tensors (any float dtype; computed in float64)."""
    x = x.float()
    sigma, sigma_next = sigma.double(), sigma_next.double()
    x0_hat = x - _coef(sigma, x) * v.float()  # the data prediction (solver.py:263-272)
    first = ddim_step(x0_hat, x, sigma, sigma_next)
    if x0_prev is None:
        return first
    if sigma_prev is None:
        raise ValueError("dpm2_step with x0_prev needs sigma_prev, the level x0_prev was predicted at")
    last = _coef((sigma_next == 0).double(), x).bool()  # [M, 1, ...]
    safe_next = torch.where(sigma_next == 0, sigma / 2, sigma_next)  # keeps the branch that is not used finite
    second = dpm2_update(x0_hat, x0_prev.float(), x, sigma_prev.double(), sigma, safe_next)
    return torch.where(last, first, second)
