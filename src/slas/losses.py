"""Policy-gradient losses. Pure functions returning ``(loss, stats)``; stats are detached floats from a fixed
vocabulary (``PPO_STATS``, ``KL_STATS``) so the recipe logs them in one place. With ``sync_stats=False`` they are
detached 0-d tensors instead: reading a float is a host-device sync, which the recipe's inner loop avoids by
accumulating the tensors and reading them once per iteration.

Log-probabilities here are per-transition Gaussian log-densities as the samplers return them: a **mean over the D
latent elements**, not a sum (DanceGRPO / Flow-GRPO / DDPO convention, ANCHORS_ALGO.md §6.1). The ratio, the clip
range and ``approx_kl`` all live in that mean-over-D space.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["KL_STATS", "PPO_STATS", "gaussian_kl", "kl_loss", "ppo_clip_loss"]

PPO_STATS = ("ratio_mean", "ratio_max_dev", "clipfrac", "approx_kl", "policy_loss", "adv_mean")
KL_STATS = ("kl_mean",)

_KL_FORMS = ("analytic", "flow_grpo")
_REDUCES = ("mean", "sum")


def _at_least_fp32(x: Tensor) -> Tensor:
    # exp / squares of small log-ratio differences lose most of their bits in bf16 / fp16
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _mask(weight: Tensor | None, like: Tensor) -> tuple[Tensor, Tensor]:
    """(weight as a float tensor [M], bool mask [M] of entries that count)."""
    if weight is None:
        return torch.ones_like(like), torch.ones_like(like, dtype=torch.bool)
    if weight.shape != like.shape:
        raise ValueError(f"weight must have the shape of log_prob {tuple(like.shape)}, got {tuple(weight.shape)}")
    w = weight.detach().to(like.dtype)
    return w, w != 0


def _weighted_mean(x: Tensor, w: Tensor) -> Tensor:
    """sum(w x) / sum(w); 0 (still connected to x's graph) when sum(w) == 0. x must be 0 where w == 0."""
    wsum = w.sum()
    return (w * x).sum() / torch.where(wsum > 0, wsum, torch.ones_like(wsum))


def ppo_clip_loss(
    log_prob: Tensor,
    old_log_prob: Tensor,
    advantages: Tensor,
    clip_range: float,
    *,
    weight: Tensor | None = None,
    sync_stats: bool = True,
) -> tuple[Tensor, dict[str, float]]:
    """PPO clipped surrogate in the DanceGRPO / Flow-GRPO / DDPO form (DG train_grpo_flux.py:571-608,
    FG train_sd3.py:873-899):

        rho = exp(log_prob - old_log_prob)                                              # [M]
        L   = sum_i w_i max(-A_i rho_i, -A_i clamp(rho_i, 1 - clip, 1 + clip)) / sum_i w_i

    All inputs are [M] (e.g. samples x trained timesteps, flattened). ``old_log_prob`` and ``advantages`` are
    treated as constants (detached). ``weight`` (0/1 or non-negative float, default all ones) masks entries: an
    entry with weight 0 contributes nothing and does not count in the denominator, and NaN/inf in its advantage or
    log-probs cannot leak into the loss or the gradient (they are replaced by 0 with ``torch.where`` *before* any
    arithmetic). If the weights sum to 0 the loss is an exact 0 that is still connected to ``log_prob``'s graph.
    DG additionally divides by (grad_acc * train_timesteps); that scaling belongs to the recipe.

    Stats (weighted over the unmasked entries; 0.0 when none): ``ratio_mean``; ``ratio_max_dev`` = max |rho - 1|;
    ``clipfrac`` = fraction with |rho - 1| > clip; ``approx_kl`` = 0.5 mean((log_prob - old_log_prob)^2) as DDPO / FG
    log it (DG train_grpo_sd.py:658-661, FG train_sd3.py:901-904) -- in mean-over-D space, so tiny and not comparable
    to LLM-RL KL values (ANCHORS_ALGO.md §6.15); ``policy_loss`` = the loss; ``adv_mean``.
    """
    if not (log_prob.shape == old_log_prob.shape == advantages.shape):
        raise ValueError(
            "log_prob, old_log_prob and advantages must have the same shape (no silent broadcasting), got "
            f"{tuple(log_prob.shape)}, {tuple(old_log_prob.shape)}, {tuple(advantages.shape)}"
        )
    if isinstance(clip_range, bool) or not isinstance(clip_range, (int, float)) or not 0 < clip_range < math.inf:
        raise ValueError(f"clip_range must be a finite float > 0 (rho is clamped to 1 +- clip), got {clip_range!r}")
    log_prob = _at_least_fp32(log_prob)
    w, keep = _mask(weight, log_prob)  # [M], [M]
    zero = torch.zeros_like(log_prob)
    log_ratio = torch.where(keep, log_prob - old_log_prob.detach().to(log_prob.dtype), zero)  # [M]
    adv = torch.where(keep, advantages.detach().to(log_prob.dtype), zero)  # [M]
    ratio = torch.exp(log_ratio)  # [M]; 1 on masked entries
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = _weighted_mean(torch.maximum(unclipped, clipped), w)

    with torch.no_grad():
        dev = (ratio - 1).abs()  # [M]; 0 on masked entries
        stats_t = torch.stack(
            [
                _weighted_mean(ratio, w),
                dev.max() if dev.numel() else zero.sum(),
                _weighted_mean((dev > clip_range).to(w.dtype), w),
                0.5 * _weighted_mean(log_ratio**2, w),
                loss.detach(),
                _weighted_mean(adv, w),
            ]
        )
    return loss, dict(zip(PPO_STATS, stats_t.tolist() if sync_stats else stats_t.unbind(), strict=True))


def _per_sample(x: Tensor | float, like: Tensor) -> Tensor:
    """Broadcast a scalar, a per-sample [M] tensor or a tensor broadcastable to ``like`` [M, ...] against ``like``.

    A 1-D tensor of length M is always read as per-sample (reshaped to [M, 1, ..., 1])."""
    x = torch.as_tensor(x, dtype=like.dtype, device=like.device)
    if x.ndim == 1 and like.ndim > 1 and x.shape[0] == like.shape[0]:
        x = x.reshape(-1, *([1] * (like.ndim - 1)))
    return x


def gaussian_kl(
    mean: Tensor,
    ref_mean: Tensor,
    std: Tensor | float,
    *,
    form: str = "analytic",
    dt: Tensor | float | None = None,
    reduce: str = "mean",
) -> Tensor:
    """[M] KL(N(mean, std^2) || N(ref_mean, std^2)) per sample, for two Gaussian transitions with the same std.

    ``mean``, ``ref_mean``: [M, ...] (policy and reference step means); ``std``: scalar, [M] (per sample) or
    broadcastable to [M, ...]; ``dt``: same, required for ``form="flow_grpo"``.

    - ``form="analytic"``: per element (mean - ref_mean)^2 / (2 std^2), the exact KL of each latent coordinate.
    - ``form="flow_grpo"``: Flow-GRPO's code (FG train_sd3.py:894-897), mean_D((mu - mu_ref)^2) / (2 g^2) with
      std = g sqrt(|dt|), i.e. ``|dt| * analytic`` (ANCHORS_ALGO.md §1.C.7, §6.7). It down-weights small steps.
      **beta values are not transferable between the two forms**: FG's beta = 0.04 / 0.01 are calibrated for this one.

    ``reduce`` over the non-batch dims: ``"mean"`` (FG, and the mean-over-D log-prob convention) or ``"sum"`` (the
    true KL of the whole latent; D times larger). Computed in at least fp32. ``std`` must be > 0 (not checked, to
    avoid a device sync).
    """
    if form not in _KL_FORMS:
        raise ValueError(f"gaussian_kl form must be one of {_KL_FORMS}, got {form!r}")
    if reduce not in _REDUCES:
        raise ValueError(f"gaussian_kl reduce must be one of {_REDUCES} (over the non-batch dims), got {reduce!r}")
    if mean.shape != ref_mean.shape:
        raise ValueError(f"mean and ref_mean must have the same shape: {tuple(mean.shape)}, {tuple(ref_mean.shape)}")
    if form == "flow_grpo" and dt is None:
        raise ValueError("gaussian_kl form='flow_grpo' needs dt (sigma_next - sigma): its KL is |dt| x the analytic KL")
    if form == "analytic" and dt is not None:
        raise ValueError("gaussian_kl form='analytic' does not use dt; pass form='flow_grpo' for the |dt|-scaled KL")
    mean = _at_least_fp32(mean)
    diff = mean - ref_mean.to(mean.dtype)  # [M, ...]
    kl = diff.square() / (2 * _per_sample(std, mean).square())  # [M, ...]
    if form == "flow_grpo":
        kl = kl * _per_sample(dt, mean).abs()
    dims = tuple(range(1, kl.ndim))
    if not dims:
        return kl
    return kl.mean(dim=dims) if reduce == "mean" else kl.sum(dim=dims)


def kl_loss(kl: Tensor, beta: float, weight: Tensor | None = None,
            sync_stats: bool = True) -> tuple[Tensor, dict[str, float]]:
    """``beta * sum_i w_i kl_i / sum_i w_i`` for a per-sample KL [M] (FG train_sd3.py:894-897: loss += beta * kl).

    Masking follows ``ppo_clip_loss``: weight-0 entries cannot leak NaN. Stats: ``kl_mean`` (weighted mean of kl,
    before beta).
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < math.inf:
        raise ValueError(f"beta must be a finite float >= 0 (weight of the KL penalty), got {beta!r}")
    kl = _at_least_fp32(kl)
    w, keep = _mask(weight, kl)
    kl_mean = _weighted_mean(torch.where(keep, kl, torch.zeros_like(kl)), w)
    stat = kl_mean.detach()
    return beta * kl_mean, dict(zip(KL_STATS, [stat.item() if sync_stats else stat], strict=True))
