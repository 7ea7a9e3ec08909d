"""DDIM with eta for epsilon-prediction diffusion models (SD1.x), stateless, with per-step log-probs.

Port of DDPO's ``ddim_step_with_logprob`` as used by DanceGRPO-SD
(DanceGRPO:fastvideo/models/stable_diffusion/ddim_with_logprob.py:34-187), with alpha-bars passed explicitly per
sample instead of looked up from a scheduler's ``alphas_cumprod`` and timestep.
"""

from __future__ import annotations

import torch
from torch import Tensor

from slas.algo.samplers.flow import StepOutput, _check_common, _gaussian_step, _host_all, _per_sample


def ddim_alphas(alphas_cumprod: Tensor, steps: int) -> tuple[Tensor, Tensor, Tensor]:
    """Timesteps and alpha-bars of a ``steps``-step DDIM schedule, as ``DDIMScheduler.set_timesteps`` and
    ``DDIMScheduler.step`` with the SD1.x config: ``timestep_spacing="leading"``, ``steps_offset=1``,
    ``set_alpha_to_one=False``.

    ``t_i = i * (L // steps) + 1`` in decreasing order, ``t_prev = t - L // steps``; a negative ``t_prev`` (the
    last step) uses ``alphas_cumprod[0]`` (the ``final_alpha_cumprod`` of ``set_alpha_to_one=False``, which is
    also what DDPO's clamp of t_prev to 0 gives, ddim_with_logprob.py:88-104).

    Args:
        alphas_cumprod: [L] cumulative products of the training alphas (e.g. ``scheduler.alphas_cumprod``).
        steps: number of sampling steps T, 1 <= T < L.

    Returns:
        timesteps [T] int64 (model conditioning), alpha_bar [T] and alpha_bar_prev [T] fp32, in sampling order.
    """
    n_train = alphas_cumprod.shape[0]
    if alphas_cumprod.ndim != 1 or n_train < 2:
        raise ValueError(f"alphas_cumprod must be a 1-d tensor of length >= 2, got shape {tuple(alphas_cumprod.shape)}")
    if not 1 <= steps < n_train:
        # steps_offset=1 shifts the top timestep to (steps-1)*(L//steps)+1, out of range when steps == L
        raise ValueError(f"steps must be in [1, {n_train - 1}] for {n_train} training timesteps, got {steps}")
    ratio = n_train // steps
    timesteps = torch.arange(steps - 1, -1, -1, dtype=torch.int64) * ratio + 1  # [T], decreasing
    prev = timesteps - ratio  # [T]
    ac = alphas_cumprod.detach().float().cpu()
    alpha_bar = ac[timesteps]
    alpha_bar_prev = torch.where(prev >= 0, ac[prev.clamp(min=0)], ac[0])
    return timesteps, alpha_bar, alpha_bar_prev


def ddim_step_with_logprob(
    eps: Tensor,
    x: Tensor,
    alpha_bar: Tensor | float,
    alpha_bar_prev: Tensor | float,
    *,
    eta: float,
    prev_sample: Tensor | None = None,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    reduce: str = "mean",
) -> StepOutput:
    """One DDIM step t -> t_prev with eta, and the Gaussian log-prob of the result (DDPO / DanceGRPO-SD).

    ``x0_hat = (x - sqrt(1-ab) eps) / sqrt(ab)``;
    ``sigma_t = eta sqrt((1-ab_prev)/(1-ab) * (1 - ab/ab_prev))``;
    ``mean = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma_t^2) eps``; ``std = sigma_t``.
    No x0 clipping (SD1.x configs use ``clip_sample=False``). eta = 1 (DDPO / DanceGRPO-SD default) is
    DDPM-like ancestral sampling; eta = 0 is deterministic DDIM with log_prob 0.

    Args:
        eps: [N, ...] epsilon prediction for x (after CFG, if any).
        x: [N, ...] latent at timestep t.
        alpha_bar, alpha_bar_prev: [N] per-sample alpha-bars of t and t_prev (float or 0-d broadcast), with
            ``0 < alpha_bar < alpha_bar_prev <= 1``; see ``ddim_alphas``.
        eta, prev_sample, generator, noise, reduce: as ``flow_step_with_logprob`` (``reduce="mean"`` is the
            DDPO parity; the clip range then acts on ratio_sum ** (1/D), DanceGRPO train_grpo_flux.py:159-167,
            DanceGRPO ddim_with_logprob.py:178-185).

    Returns:
        StepOutput with fp32 ``mean`` [N, ...], ``std`` [N, 1, ..., 1] and ``log_prob`` [N].
    """
    _check_common(x, eps, "eps", eta, reduce, prev_sample, noise)
    if eta > 1:
        # 1 - ab_prev - sigma_t^2 goes negative: the DDIM mean is undefined (diffusers would return NaN)
        raise ValueError(f"DDIM eta must be in [0, 1] (1 = DDPM-like ancestral sampling), got {eta}")
    # fp32 inside the step (DanceGRPO ddim_with_logprob.py:176-187): DanceGRPO-SD computed log-probs on fp32 x_prev but stored it
    # in bf16, so the re-scored ratio was != 1 on-policy. Same fp32 inputs in both passes -> identical log-probs.
    eps = eps.float()
    x = x.float()
    ab = _per_sample(alpha_bar, x, "alpha_bar")  # [N, 1, ..., 1]
    ab_prev = _per_sample(alpha_bar_prev, x, "alpha_bar_prev")  # [N, 1, ..., 1]
    a_in = torch.as_tensor(alpha_bar, dtype=torch.float32)
    p_in = torch.as_tensor(alpha_bar_prev, dtype=torch.float32).to(a_in.device)
    if not _host_all((a_in > 0) & (a_in < p_in) & (p_in <= 1)):
        raise ValueError("alpha-bars must satisfy 0 < alpha_bar < alpha_bar_prev <= 1 (the step goes to a less noisy "
                         f"timestep), got alpha_bar={ab.flatten().tolist()} "
                         f"alpha_bar_prev={ab_prev.flatten().tolist()}")
    # ddim_with_logprob.py:110-161 (DDPO), diffusers DDIMScheduler.step
    x0_hat = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
    variance = (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)  # [N, 1, ..., 1]
    std = eta * variance.sqrt()
    # clamp: 1 - ab_prev - std^2 >= 0 exactly for eta <= 1, but fp32 rounding can make it slightly negative
    direction = (1 - ab_prev - std**2).clamp(min=0).sqrt() * eps
    mean = ab_prev.sqrt() * x0_hat + direction
    return _gaussian_step(mean, std, prev_sample, generator, noise, reduce)
