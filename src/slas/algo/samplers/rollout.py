"""Batched stochastic rollouts of a backbone, recording what re-scoring needs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from slas.algo.samplers.dispatch import Sampler


@dataclass
class Rollout:
    """One GRPO rollout batch. Index ``i`` of the time axis is the state before step ``i``.

    It stores exactly the tensors that entered each log-prob (fp32 latents), so
    re-scoring transition ``t`` of sample ``n`` at unchanged weights gives
    ``ratio == 1`` (docs/upstream-parity.md).

    Size in bytes, with D = C*H*W elements per sample: ``4 N (T+1) D`` (latents) + ``4 N T`` (log-probs)
    + ``4 N D`` (x0) + ``4 (T+1)`` + ``16 N`` (ids), i.e. about ``4 N (T+2) D``. ShapesWorld (D = 3*32*32):
    N = 128, T = 10 -> 18.9 MB; FLUX at 720^2 (D = 16*90*90 = 129,600), N = 12 per rank, T = 16 -> 112 MB.
    """

    latents: Tensor | None  # [N, T+1, C, H, W] fp32: x at levels[0] (noise) ... levels[T]; None unless kept
    log_probs: Tensor  # [N, T] log p(latents[:, t+1] | latents[:, t])
    sigmas: Tensor  # [T+1] the sampler's noise levels (flow sigma; sqrt(1 - alpha_bar) for DDIM)
    x0: Tensor  # [N, C, H, W] the decoded sample: x0_hat of the last step (DanceGRPO)
    prompt_ids: Tensor  # [N] index into the iteration's prompt list
    group_ids: Tensor  # [N] group of each sample (prompt slot of the iteration)


@torch.no_grad()
def rollout(
    predict: Callable[[Tensor, Tensor, Tensor], Tensor],
    noise: Tensor,
    sampler: Sampler,
    *,
    eta: float | Sequence[float],
    generator: torch.Generator,
    prompt_ids: Tensor,
    group_ids: Tensor,
    batch_size: int = 0,
    global_size: int | None = None,
    offset: int = 0,
    keep_trajectory: bool = True,
) -> Rollout:
    """Integrate ``noise`` [N, ...] with the stochastic ``sampler`` (``slas.algo.samplers.sampler_for``).
    ``predict(x [B, ...], t [B], idx [B])`` returns the model output for samples ``idx`` of the batch at
    the sampler's time input t (``sampler.model_time``); ``prompt_ids`` / ``group_ids`` [N] are carried
    into the record.

    The step noise of every step is drawn for all N samples at once from ``generator`` (on the CPU, then
    moved to ``noise``'s device), so the result does not depend on ``batch_size`` chunking. A rank of a
    multi-process run passes its rows of a larger batch: ``noise`` [n] are rows ``offset .. offset+n`` of a
    global batch of ``global_size``; the step noise is then drawn for the whole global batch and sliced, so the
    ranks together integrate exactly the one-process rollout (slas.recipe.parallel).
    ``eta`` is one noise scale or one per step [T]; a step with eta 0 is a deterministic
    ODE step with log-prob 0 (an SDE window, Flow-GRPO-Fast / MixGRPO).
    ``keep_trajectory=False`` keeps only the current state, not ``latents`` (None in the record): the
    forward-process objectives train on ``x0`` alone.
    ``x0`` is x0_hat of the last step (DanceGRPO decodes it instead of x_T, so
    the last step's noise never reaches the reward: DanceGRPO train_grpo_flux.py:254).
    """
    n, t_steps = noise.shape[0], sampler.steps
    bs = batch_size or n
    n_global = global_size or n
    if not 0 <= offset <= n_global - n:
        raise ValueError(f"rows {offset}..{offset + n} are not inside a global batch of {n_global}")
    etas = [float(eta)] * t_steps if isinstance(eta, (int, float)) else [float(e) for e in eta]
    if len(etas) != t_steps:
        raise ValueError(f"eta needs one value per step ({t_steps}), got {len(etas)}")
    dev = noise.device
    latents = torch.empty(n, t_steps + 1 if keep_trajectory else 1, *noise.shape[1:], dtype=torch.float32, device=dev)
    log_probs = torch.empty(n, t_steps, dtype=torch.float32, device=dev)
    latents[:, 0] = noise.float()
    here = (lambda t: t) if keep_trajectory else (lambda t: 0)  # where the state before step t is kept
    x0 = torch.empty_like(noise, dtype=torch.float32)
    # a multistep solver (dpm2) takes each sample's x0 estimate of the previous step [n, ...]
    history = torch.empty_like(x0) if getattr(sampler, "multistep", False) else None
    for t in range(t_steps):
        step_noise = torch.randn(n_global, *noise.shape[1:], generator=generator, dtype=torch.float32)
        step_noise = step_noise[offset : offset + n].to(dev)  # [N, ...] this process's rows
        for lo in range(0, n, bs):
            idx = torch.arange(lo, min(n, lo + bs))
            steps = torch.full((len(idx),), t)  # [B]
            x = latents[idx, here(t)]
            out = predict(x, sampler.model_time(steps), idx)
            multi = {} if history is None else {"x0_prev": history[idx] if t else None}
            st = sampler.step(out, x, steps, eta=etas[t], noise=step_noise[idx], **multi)
            latents[idx, here(t + 1)] = st.prev_sample
            log_probs[idx, t] = st.log_prob
            if history is not None:
                history[idx] = sampler.x0(out, x, steps)
            if t == t_steps - 1:
                x0[idx] = sampler.x0(out, x, steps)
    return Rollout(latents if keep_trajectory else None, log_probs, sampler.levels, x0, prompt_ids, group_ids)
