"""Batched stochastic rollouts of a flow backbone, recording what re-scoring needs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .flow import flow_step_with_logprob


@dataclass
class Rollout:
    """One GRPO rollout batch. Index ``i`` of the time axis is the state at ``sigmas[i]``.

    It stores exactly the tensors that entered each log-prob (fp32 latents), so
    re-scoring transition ``t`` of sample ``n`` at unchanged weights gives
    ``ratio == 1`` (ANCHORS_ALGO §6.3).
    """

    latents: Tensor  # [N, T+1, C, H, W] fp32: x at sigmas[0] = 1 (noise) ... sigmas[T] = 0
    log_probs: Tensor  # [N, T] log p(latents[:, t+1] | latents[:, t])
    sigmas: Tensor  # [T+1]
    x0: Tensor  # [N, C, H, W] the decoded sample: x0_hat of the last step (DanceGRPO)
    prompt_ids: Tensor  # [N] index into the iteration's prompt list
    group_ids: Tensor  # [N] group of each sample (prompt slot of the iteration)


@torch.no_grad()
def rollout(
    predict: Callable[[Tensor, Tensor, Tensor], Tensor],
    noise: Tensor,
    sigmas: Tensor,
    *,
    family: str,
    eta: float | Sequence[float],
    reduce: str,
    generator: torch.Generator,
    prompt_ids: Tensor,
    group_ids: Tensor,
    batch_size: int = 0,
    noise_pool: int = 1,
) -> Rollout:
    """Integrate ``noise`` [N, ...] along ``sigmas`` [T+1] with the stochastic
    ``family`` step. ``predict(x [B, ...], sigma [B], idx [B])`` returns the
    velocity for samples ``idx`` of the batch; ``prompt_ids`` / ``group_ids``
    [N] are carried into the record.

    The step noise of every step is drawn for all N samples at once from
    ``generator``, so the result does not depend on ``batch_size`` chunking.
    ``eta`` is one noise scale or one per step [T]; a step with eta 0 is a deterministic
    ODE step with log-prob 0 (an SDE window, Flow-GRPO-Fast / MixGRPO).
    ``noise_pool`` > 1 draws block-constant (low-frequency) step noise (see ``flow_step_with_logprob``).
    ``x0`` is x0_hat of the last step (DanceGRPO decodes it instead of x_T, so
    the last step's noise never reaches the reward: ANCHORS_ALGO §1.A.3).
    """
    n, t_steps = noise.shape[0], len(sigmas) - 1
    bs = batch_size or n
    etas = [float(eta)] * t_steps if isinstance(eta, (int, float)) else [float(e) for e in eta]
    if len(etas) != t_steps:
        raise ValueError(f"eta needs one value per step ({t_steps}), got {len(etas)}")
    latents = torch.empty(n, t_steps + 1, *noise.shape[1:], dtype=torch.float32)
    log_probs = torch.empty(n, t_steps, dtype=torch.float32)
    latents[:, 0] = noise.float()
    x0 = torch.empty_like(noise, dtype=torch.float32)
    for t in range(t_steps):
        step_noise = torch.randn(noise.shape, generator=generator, dtype=torch.float32)  # [N, ...]
        for lo in range(0, n, bs):
            idx = torch.arange(lo, min(n, lo + bs))
            x = latents[idx, t]
            s, s_next = sigmas[t].expand(len(idx)), sigmas[t + 1].expand(len(idx))
            v = predict(x, s, idx)
            out = flow_step_with_logprob(family, v, x, s, s_next, eta=etas[t], noise=step_noise[idx], reduce=reduce,
                                         noise_pool=noise_pool)
            latents[idx, t + 1] = out.prev_sample
            log_probs[idx, t] = out.log_prob
            if t == t_steps - 1:
                x0[idx] = x - s.view(-1, *[1] * (x.ndim - 1)) * v.float()
    return Rollout(latents, log_probs, sigmas, x0, prompt_ids, group_ids)
