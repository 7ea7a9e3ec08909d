"""Policy-gradient losses. Pure functions returning ``(loss, stats)``; stats are detached floats from a fixed
vocabulary (``PPO_STATS``, ``KL_STATS``) so the recipe logs them in one place. With ``sync_stats=False`` they are
detached 0-d tensors instead: reading a float is a host-device sync, which the recipe's inner loop avoids by
accumulating the tensors and reading them once per iteration.

Log-probabilities here are per-transition Gaussian log-densities as the samplers return them: a **mean over the D
latent elements**, not a sum (DanceGRPO / Flow-GRPO / DDPO convention, DanceGRPO train_grpo_flux.py:159-167,
Flow-GRPO sd3_sde_with_logprob.py:61-68). The ratio, the clip range and ``approx_kl`` all live in that mean-over-D space.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["AWM_STATS", "AWM_WEIGHTINGS", "KL_STATS", "NFT_STATS", "PPO_STATS", "R_MAPS", "R_MAP_SIGN_ERROR",
           "awm_loss", "awm_weighted_error", "gaussian_kl", "kl_loss", "nft_loss", "nft_optimality", "ppo_clip_loss",
           "velocity_kl"]

PPO_STATS = ("ratio_mean", "ratio_max_dev", "clipfrac", "approx_kl", "policy_loss", "adv_mean")
KL_STATS = ("kl_mean",)
NFT_STATS = ("policy_loss", "fm_err", "old_dev", "r_mean")
AWM_STATS = ("policy_loss", "fm_err", "ratio_mean", "clipfrac", "adv_mean")
AWM_WEIGHTINGS = ("uniform", "t", "t2", "huber", "ghuber")

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
    """PPO clipped surrogate in the DanceGRPO / Flow-GRPO / DDPO form (DanceGRPO train_grpo_flux.py:571-608,
    Flow-GRPO train_sd3.py:873-899):

        rho = exp(log_prob - old_log_prob)                                              # [M]
        L   = sum_i w_i max(-A_i rho_i, -A_i clamp(rho_i, 1 - clip, 1 + clip)) / sum_i w_i

    All inputs are [M] (e.g. samples x trained timesteps, flattened). ``old_log_prob`` and ``advantages`` are
    treated as constants (detached). ``weight`` (0/1 or non-negative float, default all ones) masks entries: an
    entry with weight 0 contributes nothing and does not count in the denominator, and NaN/inf in its advantage or
    log-probs cannot leak into the loss or the gradient (they are replaced by 0 with ``torch.where`` *before* any
    arithmetic). If the weights sum to 0 the loss is an exact 0 that is still connected to ``log_prob``'s graph.
    DanceGRPO additionally divides by (grad_acc * train_timesteps); that scaling belongs to the recipe.

    Stats (weighted over the unmasked entries; 0.0 when none): ``ratio_mean``; ``ratio_max_dev`` = max |rho - 1|;
    ``clipfrac`` = fraction with |rho - 1| > clip; ``approx_kl`` = 0.5 mean((log_prob - old_log_prob)^2) as DDPO /
    Flow-GRPO log it (DanceGRPO train_grpo_sd.py:658-661, Flow-GRPO train_sd3.py:901-904) -- in mean-over-D space, so
    tiny and not comparable to LLM-RL KL values; ``policy_loss`` = the loss; ``adv_mean``.
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
    - ``form="flow_grpo"``: Flow-GRPO's code (Flow-GRPO train_sd3.py:894-897), mean_D((mu - mu_ref)^2) / (2 g^2) with
      std = g sqrt(|dt|), i.e. ``|dt| * analytic`` (docs/upstream-parity.md). It down-weights small steps.
      **beta values are not transferable between the two forms**: Flow-GRPO's beta = 0.04 / 0.01 are calibrated for this one.

    ``reduce`` over the non-batch dims: ``"mean"`` (Flow-GRPO, and the mean-over-D log-prob convention) or ``"sum"`` (the
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
    """``beta * sum_i w_i kl_i / sum_i w_i`` for a per-sample KL [M] (Flow-GRPO train_sd3.py:894-897: loss += beta * kl).

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


# ----------------------------------------------------------------------------
# Forward-process objectives: the flow-matching loss on the policy's own clean samples, re-noised
# (x_t = (1 - t) x0 + t eps, target velocity eps - x0). No likelihoods, no SDE, no trajectory.
# ----------------------------------------------------------------------------


def _mean_d(x: Tensor) -> Tensor:
    """[M, ...] -> [M]: mean over the non-batch dims."""
    return x.mean(dim=tuple(range(1, x.ndim))) if x.ndim > 1 else x


def _check_forward(v: Tensor, target: Tensor, t: Tensor, per_pair: Tensor, name: str) -> None:
    if v.shape != target.shape or v.ndim < 1:
        raise ValueError(f"v and target must have the same shape [M, ...], got {tuple(v.shape)}, {tuple(target.shape)}")
    m = v.shape[0]
    if t.shape != (m,) or per_pair.shape != (m,):
        raise ValueError(f"t and {name} must be [M]={m} (one per (sample, t) pair), got {tuple(t.shape)}, "
                         f"{tuple(per_pair.shape)}")


R_MAPS = ("linear", "binary", "hard_sign")
R_MAP_SIGN_ERROR = ("r_map 'sign' was renamed, because DiffusionNFT's adv_mode 'binary' is not it: 'hard_sign' is "
                 "r in {0, 1/2, 1} by the sign of A (a 5x stronger preference than upstream's at r_scale 5); 'binary' "
                 "is DiffusionNFT's adv_mode binary, r = sign(A) / r_scale / 2 + 1/2, in {0.4, 0.5, 0.6} at r_scale 5")


def nft_optimality(advantages: Tensor, scale: float, mapping: str = "linear") -> Tensor:
    """Optimality probability r in [0, 1] of each sample from its advantage [M] (DiffusionNFT
    scripts/train_nft_sd3.py:910-929 at NVlabs/DiffusionNFT@24af555, whose ``scale`` is ``adv_clip_max`` = 5):

    - ``"linear"`` (their default ``adv_mode``): ``r = clamp(clamp(A, -scale, scale) / scale / 2 + 0.5, 0, 1)``, so
      A = 0 is r = 0.5 (no preference) and |A| >= scale is certainty.
    - ``"binary"`` (their ``adv_mode: binary``, lines 924-925): the clamped advantage is replaced by its sign before
      the same map, ``r = sign(A) / scale / 2 + 0.5``: r in {0.4, 0.5, 0.6} at scale 5 (r in {0, 1/2, 1} only at
      scale 1).
    - ``"hard_sign"`` (slas's, no upstream): ``r = sign(A) / 2 + 0.5`` in {0, 0.5, 1} whatever the scale.

    ``"sign"`` is refused with a message naming the two it could mean (it used to be ``"hard_sign"``).
    """
    if not scale > 0:
        raise ValueError(f"the r scale must be > 0 (advantage that maps to certainty), got {scale!r}")
    if mapping == "linear":
        return (advantages.clamp(-scale, scale) / scale / 2 + 0.5).clamp(0, 1)
    if mapping == "binary":
        return (torch.sign(advantages) / scale / 2 + 0.5).clamp(0, 1)
    if mapping == "hard_sign":
        return torch.sign(advantages) / 2 + 0.5
    if mapping == "sign":
        raise ValueError(R_MAP_SIGN_ERROR)
    raise ValueError(f"unknown r mapping {mapping!r}; expected one of {R_MAPS}")


def nft_loss(
    v: Tensor,
    v_old: Tensor,
    target: Tensor,
    t: Tensor,
    r: Tensor,
    beta: float = 1.0,
    *,
    adaptive_weight: bool = True,
    loss_scale: float = 1.0,
    weight: Tensor | None = None,
    sync_stats: bool = True,
) -> tuple[Tensor, dict]:
    """DiffusionNFT's negative-aware fine-tuning loss (Zheng et al. 2025, arXiv 2509.16117, eq. 8; code
    scripts/train_nft_sd3.py:934-960 at NVlabs/DiffusionNFT@24af555).

    Inputs, one row per (sample, t) pair: ``v`` [M, ...] the policy's velocity at x_t (with gradient), ``v_old``
    [M, ...] the old policy's (constant), ``target`` [M, ...] = eps - x0, ``t`` [M] the noise level, ``r`` [M] the
    optimality probability (``nft_optimality``).

        v+ = beta v + (1 - beta) v_old          v- = (1 + beta) v_old - beta v           (implicit policies)
        e+ = t (v+ - target) = x0 - x0_hat(v+)   e- likewise                              (x0-space errors)
        L  = loss_scale mean_i [ r_i mean_D(e+^2) / w+_i + (1 - r_i) mean_D(e-^2) / w-_i ] / beta

    ``w`` is the paper's adaptive weight, the detached per-pair mean |e| (clipped at 1e-5); ``adaptive_weight=False``
    drops it (w = 1). DiffusionNFT multiplies by ``adv_clip_max`` (their loss_scale 5). With r = 1 and beta = 1 this is
    the flow-matching loss of ``v`` in x0 space (t^2 mean_D((v - target)^2), per-pair weighted); with r = 1/2 and
    v = v_old the two halves' gradients cancel exactly; away from v_old, r = 1/2 pulls v back to v_old (the implicit
    trust region). ``weight`` masks pairs as in ``ppo_clip_loss``.

    Stats: ``policy_loss``; ``fm_err`` = mean_D((v - target)^2), the flow-matching error on the policy's own samples
    (it climbs when a model collapses); ``old_dev`` = mean_D((v - v_old)^2); ``r_mean``.
    """
    _check_forward(v, target, t, r, "r")
    if v_old.shape != v.shape:
        raise ValueError(f"v_old must have the shape of v {tuple(v.shape)}, got {tuple(v_old.shape)}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0 (the implicit policies' step), got {beta!r}")
    v = _at_least_fp32(v)
    w, keep = _mask(weight, t.detach().to(v.dtype))  # [M], [M]
    v_old, target = v_old.detach().to(v.dtype), target.detach().to(v.dtype)
    tt = _per_sample(t.detach(), v)  # [M, 1, ..., 1]
    pos = tt * (beta * v + (1 - beta) * v_old - target)  # [M, ...] e+
    neg = tt * ((1 + beta) * v_old - beta * v - target)  # [M, ...] e-

    def half(e: Tensor) -> Tensor:  # [M]
        if not adaptive_weight:
            return _mean_d(e.square())
        with torch.no_grad():
            wf = _mean_d(e.abs().double()).clamp(min=1e-5).to(e.dtype)  # [M] (fp64 as upstream)
        return _mean_d(e.square()) / wf

    rr = torch.where(keep, r.detach().to(v.dtype), torch.full_like(w, 0.5))  # [M]; NaN r of masked pairs never leaks
    per = (rr * half(pos) + (1 - rr) * half(neg)) / beta  # [M]
    per = torch.where(keep, per, torch.zeros_like(per))
    loss = loss_scale * _weighted_mean(per, w)
    with torch.no_grad():
        zero = torch.zeros_like(per)
        stats_t = torch.stack([
            loss.detach(),
            _weighted_mean(torch.where(keep, _mean_d((v - target).square()), zero), w),
            _weighted_mean(torch.where(keep, _mean_d((v - v_old).square()), zero), w),
            _weighted_mean(torch.where(keep, rr, zero), w),
        ])
    return loss, dict(zip(NFT_STATS, stats_t.tolist() if sync_stats else stats_t.unbind(), strict=True))


def awm_weighted_error(v: Tensor, target: Tensor, t: Tensor, weighting: str = "ghuber", power: float = 0.25) -> Tensor:
    """[M] AWM's per-pair matching error, the negative of its "log-prob" (``compute_log_prob_awm``,
    scripts/train_sd3_awm.py:210-252 at scxue/advantage_weighted_matching@be51372), from err = mean_D((v - target)^2)
    in fp64:

    - ``"uniform"`` (their ``Uniform``): err (the flow-matching loss);
    - ``"t"``: t err;
    - ``"t2"`` (their ``t**2``, line 242): t^2 err, the x0-space error t^2 mean_D((v - target)^2) = mean_D((x0 -
      x0_hat)^2);
    - ``"huber"`` (line 246): t (sqrt(err + 1e-10) - 1e-5), a pseudo-Huber loss: ghuber at p = 1/2 times 1/2
      (sqrt(1e-10) = 1e-5), whose gradient t / (2 sqrt(err)) shrinks as the error grows;
    - ``"ghuber"`` (line 248): t ((err + 1e-10)^p - 1e-10^p) / p, a generalised Huber loss whose gradient shrinks as
      the error grows (p = 0.25 in the official GenEval config), so a negative advantage cannot push it up without
      bound as fast as the square does.
    """
    if weighting not in AWM_WEIGHTINGS:
        raise ValueError(f"unknown AWM weighting {weighting!r}; expected one of {AWM_WEIGHTINGS}")
    err = _mean_d((v.double() - target.detach().double()).square())  # [M]
    tt = t.detach().to(err.dtype)
    if weighting == "uniform":
        return err
    if weighting == "t":
        return tt * err
    if weighting == "t2":
        return tt.square() * err
    eps = torch.tensor(1e-10, dtype=err.dtype, device=err.device)
    if weighting == "huber":
        return tt * ((err + eps).sqrt() - 1e-5)
    if not 0 < power <= 1:
        raise ValueError(f"the ghuber power must be in (0, 1], got {power!r}")
    return tt * ((err + eps).pow(power) - eps.pow(power)) / power


def awm_loss(
    err: Tensor,
    advantages: Tensor,
    *,
    old_err: Tensor | None = None,
    clip_range: float = 1.0,
    weight: Tensor | None = None,
    fm_err: Tensor | None = None,
    sync_stats: bool = True,
) -> tuple[Tensor, dict]:
    """Advantage Weighted Matching (Xue et al. 2025, arXiv 2509.25050): the pretraining flow-matching loss of each
    sample weighted by its advantage, inside AWM's PPO-style ratio clip (train_sd3_awm.py:1293-1327 at
    scxue/advantage_weighted_matching@be51372, loss_type exp_first).

    ``err`` [M] is ``awm_weighted_error`` (with gradient); ``old_err`` [M] the same under the policy that sampled
    (None: on-policy, ratio 1). Their code maximises ``min(A rho, A clamp(rho, 1 - c, 1 + c))`` with
    ``rho = exp(old_err - err)``; its gradient is ``A rho grad(err)`` where that branch is unclipped, 0 where it is
    clipped. This function returns the loss with that same gradient whose *value* is the advantage-weighted matching
    loss:

        L = sum_i w_i A_i sg(rho_i) err_i [not clipped_i] / sum_i w_i

    so with all advantages 1 and on-policy it equals the mean matching error. A positive advantage lowers a sample's
    error, a negative one raises it, and A = 0 gives exactly no gradient. ``fm_err`` [M] (optional, detached) is
    logged as ``fm_err``; stats also give ``ratio_mean``, ``clipfrac`` and ``adv_mean``.
    """
    if err.ndim != 1 or advantages.shape != err.shape:
        raise ValueError(f"err and advantages must be [M] tensors of one shape, got {tuple(err.shape)}, "
                         f"{tuple(advantages.shape)}")
    if old_err is not None and old_err.shape != err.shape:
        raise ValueError(f"old_err must have the shape of err {tuple(err.shape)}, got {tuple(old_err.shape)}")
    if not 0 < clip_range < math.inf:
        raise ValueError(f"clip_range must be a finite float > 0, got {clip_range!r}")
    w, keep = _mask(weight, err)
    zero = torch.zeros_like(err)
    adv = torch.where(keep, advantages.detach().to(err.dtype), zero)  # [M]
    old = err.detach() if old_err is None else old_err.detach().to(err.dtype)
    ratio = torch.exp(torch.where(keep, old - err.detach(), zero))  # [M] constant
    clipped = ((adv > 0) & (ratio > 1 + clip_range)) | ((adv < 0) & (ratio < 1 - clip_range))  # [M]
    per = torch.where(keep & ~clipped, adv * ratio * err, zero)  # [M]
    loss = _weighted_mean(per, w)
    with torch.no_grad():
        fm = torch.where(keep, (err if fm_err is None else fm_err).detach().to(err.dtype), zero)
        stats_t = torch.stack([loss.detach(), _weighted_mean(fm, w), _weighted_mean(ratio, w),
                               _weighted_mean(clipped.to(err.dtype), w), _weighted_mean(adv, w)])
    return loss, dict(zip(AWM_STATS, stats_t.tolist() if sync_stats else stats_t.unbind(), strict=True))


def velocity_kl(v: Tensor, v_ref: Tensor) -> Tensor:
    """[M] mean_D((v - v_ref)^2): the velocity-space KL that DiffusionNFT (train_nft_sd3.py:966-970) and AWM
    (train_sd3_awm.py:1334-1340, kl_weight 'Uniform') add to keep the policy near a reference; combine with
    ``kl_loss``. Equal-variance Gaussians' KL is proportional to it at a fixed noise level."""
    if v.shape != v_ref.shape:
        raise ValueError(f"v and v_ref must have the same shape, got {tuple(v.shape)}, {tuple(v_ref.shape)}")
    v = _at_least_fp32(v)
    return _mean_d((v - v_ref.detach().to(v.dtype)).square())
