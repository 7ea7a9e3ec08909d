"""Advantage estimators: pure tensor functions ``(rewards [N], group ids [N]) -> advantages [N]``.

Pick one by name once at setup (``validate(name, **params)``), then call ``compute`` /
``compute_with_stats`` each iteration on the *global* batch (docs/distributed.md). An estimator that keeps a running
statistic over iterations (``slas`` with ``sigma_decay > 0``) is still a pure function: ``compute_with_state`` takes
the state the previous iteration returned and returns the next one (a dict of floats, ``{}`` at the start); the recipe
carries it and stores it in its checkpoints, so a resumed run continues it exactly.

Every estimator sees the same prepared batch (``Groups``), built in one place so that the edge cases are handled
identically for all of them:

- arithmetic is float64 (DanceGRPO train_grpo_flux.py:532-548 computes in fp32, where a group of identical rewards can get
  a large |A|: the fp32 group mean can be off by one ulp and the deviations are then of the order of eps; see
  docs/upstream-parity.md);
- a group whose finite rewards have zero spread (``max - min <= tol``, ``tol = ZERO_SPREAD_RTOL * max(1, max|r|)``)
  gets advantage exactly 0 for every member, whatever the estimator;
- NaN / +-inf rewards are masked: they take part in no mean or std and get advantage exactly 0; ``finite_mask``
  tells the recipe which samples to drop from the loss;
- ``adv_clip`` clamps the shaped advantages to ``[-adv_clip, adv_clip]`` (DanceGRPO ``adv_clip_max`` = 5,
  DanceGRPO train_grpo_flux.py:571-608).

Group ids may be arbitrary integers (not contiguous, not sorted); they are mapped to dense indices with
``torch.unique`` and every per-group reduction is a ``bincount`` / ``index_add_`` / ``scatter_reduce``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "ZERO_SPREAD_RTOL",
    "Groups",
    "available",
    "compute",
    "compute_with_state",
    "compute_with_stats",
    "finite_mask",
    "prepare",
    "validate",
]

# A group counts as "all rewards equal" when max - min <= ZERO_SPREAD_RTOL * max(1, max|r|): far below any real
# reward difference, far above the float64 rounding of the group mean (~1e-16 relative).
ZERO_SPREAD_RTOL = 1e-12



def finite_mask(rewards: Tensor) -> Tensor:
    """[N] bool: True where the reward is finite. Samples with False get advantage 0 from ``compute``; the recipe
    should also drop them from the loss (``weight=finite_mask(rewards)`` in ``losses.ppo_clip_loss``)."""
    return torch.isfinite(rewards)


@dataclass(frozen=True)
class Groups:
    """The finite rewards of one batch with their group statistics, float64, computed once in ``prepare``.

    ``n`` below is the number of finite rewards, ``K`` the number of distinct group ids in the whole batch (a group
    whose rewards are all non-finite has count 0 and counts as zero-spread).
    """

    rewards: Tensor  # [n] float64, finite rewards only
    index: Tensor  # [n] int64 in [0, K): dense group index of each finite reward
    count: Tensor  # [K] float64: number of finite rewards per group
    mean: Tensor  # [K] float64: group mean of the finite rewards (0 for empty groups)
    centered: Tensor  # [n] float64: r - mean_g, set to exactly 0 in zero-spread groups
    zero_spread: Tensor  # [K] bool: max - min <= tol (includes groups with < 2 finite rewards)
    spread: float  # max r - min r over the finite batch: the reward scale used by relative eps

    @property
    def num_groups(self) -> int:
        return self.count.shape[0]

    def group_sum(self, x: Tensor) -> Tensor:
        """[n] -> [K]: per-group sum."""
        return torch.zeros(self.num_groups, dtype=x.dtype, device=x.device).index_add_(0, self.index, x)

    def group_mean(self, x: Tensor) -> Tensor:
        """[n] -> [K]: per-group mean (0 for empty groups)."""
        return self.group_sum(x) / self.count.clamp_min(1)


def prepare(rewards: Tensor, group_ids: Tensor) -> tuple[Groups, Tensor]:
    """Build the shared ``Groups`` view of a batch; also returns the finite mask [N]."""
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if group_ids.shape != rewards.shape:
        raise ValueError(
            f"group_ids must have the same shape as rewards, got {tuple(group_ids.shape)} vs {tuple(rewards.shape)}"
        )
    if group_ids.dtype.is_floating_point or group_ids.dtype.is_complex or group_ids.dtype == torch.bool:
        raise ValueError(f"group_ids must be an integer tensor (prompt ids), got dtype {group_ids.dtype}")
    finite = finite_mask(rewards)  # [N]
    _, dense = torch.unique(group_ids.to(rewards.device), return_inverse=True)  # [N] in [0, K)
    num_groups = int(dense.max()) + 1 if dense.numel() else 0
    r = rewards[finite].to(torch.float64)  # [n]
    index = dense[finite]  # [n]
    count = torch.bincount(index, minlength=num_groups).to(torch.float64)  # [K]
    mean = torch.zeros(num_groups, dtype=torch.float64, device=r.device).index_add_(0, index, r)
    mean = mean / count.clamp_min(1)  # [K]
    # include_self=False: an empty group keeps the initial 0 for both max and min, so it reads as zero-spread.
    gmax = torch.zeros_like(mean).scatter_reduce_(0, index, r, reduce="amax", include_self=False)  # [K]
    gmin = torch.zeros_like(mean).scatter_reduce_(0, index, r, reduce="amin", include_self=False)  # [K]
    scale = max(1.0, float(r.abs().max())) if r.numel() else 1.0
    zero_spread = (gmax - gmin) <= ZERO_SPREAD_RTOL * scale  # [K]
    centered = torch.where(zero_spread[index], torch.zeros_like(r), r - mean[index])  # [n]
    spread = float(r.max() - r.min()) if r.numel() else 0.0
    groups = Groups(r, index, count, mean, centered, zero_spread, spread)
    return groups, finite


# ---------------------------------------------------------------------------------------------------------------
# Registry. An estimator takes the prepared batch and keyword-only options and returns
# (advantages of the finite samples [n] float64, the batch std it divided by or 0.0). A stateful one (registered with
# stateful=True) also takes the previous iteration's state as its second argument and returns the next state third.

Estimator = Callable[..., tuple]


@dataclass(frozen=True)
class _Entry:
    fn: Estimator
    check: Callable[..., None]  # validates option values; raises ValueError saying what is allowed
    stateful: bool = False  # fn(groups, state, **options) -> (adv, batch_std, next state)


_REGISTRY: dict[str, _Entry] = {}


def _register(name: str, check: Callable[..., None] | None = None,
              stateful: bool = False) -> Callable[[Estimator], Estimator]:
    def deco(fn: Estimator) -> Estimator:
        _REGISTRY[name] = _Entry(fn, check or (lambda **_: None), stateful)
        return fn

    return deco


def available() -> tuple[str, ...]:
    """Names of the registered estimators."""
    return tuple(sorted(_REGISTRY))


def _options(name: str) -> dict[str, object]:
    """Option name -> default of estimator ``name``."""
    entry = _REGISTRY[name]
    params = list(inspect.signature(entry.fn).parameters.values())[2 if entry.stateful else 1:]  # groups (, state)
    return {p.name: p.default for p in params}


def options(name: str) -> dict[str, object]:
    """Option name -> default of estimator ``name`` (what an empty ``advantage.params`` means)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown advantage estimator {name!r}; registered: {', '.join(available())}")
    return _options(name)


def _is_real(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_eps(eps: object) -> None:
    if not _is_real(eps) or eps < 0:
        raise ValueError(f"eps must be a finite float >= 0 (it is added to a std before dividing), got {eps!r}")


def validate(name: str, *, adv_clip: float | None = 5.0, **params: object) -> None:
    """Check an estimator name and its options; call once at setup so a bad config fails before any rollout."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown advantage estimator {name!r}; registered: {', '.join(available())}")
    allowed = _options(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        opts = ", ".join(f"{k}={v!r}" for k, v in allowed.items())
        raise ValueError(f"unknown option(s) {unknown} for advantage estimator {name!r}; it accepts: {opts}")
    if adv_clip is not None and (not _is_real(adv_clip) or adv_clip <= 0):
        raise ValueError(f"adv_clip must be a finite float > 0 (A is clamped to +-adv_clip) or None, got {adv_clip!r}")
    _REGISTRY[name].check(**{**allowed, **params})


def compute(name: str, rewards: Tensor, group_ids: Tensor, *, adv_clip: float | None = 5.0, **params: object) -> Tensor:
    """Advantages [N] in the rewards' dtype (default float dtype for integer rewards); see ``compute_with_stats``."""
    return compute_with_stats(name, rewards, group_ids, adv_clip=adv_clip, **params)[0]


def compute_with_stats(
    name: str, rewards: Tensor, group_ids: Tensor, *, adv_clip: float | None = 5.0, **params: object
) -> tuple[Tensor, dict[str, float]]:
    """Advantages [N] of estimator ``name`` and diagnostics (see ``compute_with_state``), as the first iteration of a
    run: a stateful estimator starts from an empty state."""
    adv, stats, _ = compute_with_state(name, rewards, group_ids, {}, adv_clip=adv_clip, **params)
    return adv, stats


def compute_with_state(
    name: str, rewards: Tensor, group_ids: Tensor, state: dict[str, float], *, adv_clip: float | None = 5.0,
    **params: object
) -> tuple[Tensor, dict[str, float], dict[str, float]]:
    """Advantages [N] of estimator ``name``, diagnostics, and the estimator's state for the next iteration.

    ``state`` is what the previous iteration's call returned (``{}`` at the start of a run). A stateless estimator
    ignores it and returns ``{}``; a stateful one (``slas`` with ``sigma_decay > 0``) returns a dict of floats, which
    the recipe stores in its checkpoints (state.json), so that a resumed run continues it exactly.

    Shared post-processing (all estimators): members of zero-spread groups and samples with a non-finite reward get
    exactly 0; then ``clamp(A, -adv_clip, adv_clip)`` unless ``adv_clip`` is None.

    Stats (floats): ``n_nonfinite`` (count of NaN/inf rewards); ``zero_std_groups`` (fraction of distinct group ids
    whose finite rewards have zero spread, groups with < 2 finite rewards included); ``adv_abs_mean``, ``adv_mean``,
    ``adv_std`` (ddof 0) and ``clip_frac`` (fraction with |A| > adv_clip before clamping), all over the finite-reward
    samples, i.e. the ones that train; ``batch_std`` (the batch sigma the estimator divided by, 0.0 if none).

    Push diagnostics (why a push can grow late in a run): ``centered_std`` (std of r - mean_g over the finite batch,
    ddof 0, zero-spread groups' zeros included: SLAS's sigma_B, logged for every estimator); ``informative_frac``
    (fraction of the finite samples whose group has a non-zero spread) and ``adv_abs_mean_informative`` (mean |A|
    over those samples only, 0.0 when there are none).
    """
    validate(name, adv_clip=adv_clip, **params)
    if not isinstance(state, dict):
        raise ValueError(f"the estimator state must be a dict (what the previous iteration returned, {{}} at the "
                         f"start), got {type(state).__name__}")
    groups, finite = prepare(rewards, group_ids)
    entry = _REGISTRY[name]
    if entry.stateful:
        adv, batch_std, next_state = entry.fn(groups, state, **params)  # [n] float64
    else:
        (adv, batch_std), next_state = entry.fn(groups, **params), {}
    adv = torch.where(groups.zero_spread[groups.index], torch.zeros_like(adv), adv)
    clipped = torch.zeros_like(adv, dtype=torch.bool)
    if adv_clip is not None:
        clipped = adv.abs() > adv_clip
        adv = adv.clamp(-adv_clip, adv_clip)
    out_dtype = rewards.dtype if rewards.dtype.is_floating_point else torch.get_default_dtype()
    full = torch.zeros(rewards.shape, dtype=torch.float64, device=rewards.device)  # [N]
    full[finite] = adv
    n = adv.numel()
    informative = ~groups.zero_spread[groups.index]  # [n]
    if n:
        moments = torch.stack([adv.abs().mean(), adv.mean(), adv.std(correction=0), clipped.double().mean(),
                               _batch_std(groups.centered), informative.double().mean(),
                               adv.abs()[informative].sum() / informative.sum().clamp_min(1)])
        adv_abs_mean, adv_mean, adv_std, clip_frac, centered_std, informative_frac, adv_abs_inf = moments.tolist()
    else:
        adv_abs_mean = adv_mean = adv_std = clip_frac = centered_std = informative_frac = adv_abs_inf = 0.0
    stats = {
        "n_nonfinite": float(rewards.numel() - n),
        "zero_std_groups": float(groups.zero_spread.double().mean()) if groups.num_groups else 0.0,
        "adv_abs_mean": adv_abs_mean,
        "adv_mean": adv_mean,
        "adv_std": adv_std,
        "clip_frac": clip_frac,
        "batch_std": float(batch_std),
        "centered_std": centered_std,
        "informative_frac": informative_frac,
        "adv_abs_mean_informative": adv_abs_inf,
    }
    return full.to(out_dtype), stats, next_state


def _safe_div(num: Tensor, den: Tensor | float) -> Tensor:
    """num / den, or 0 where den == 0 (a zero-spread batch: then num is 0 as well, and 0/0 must not become NaN)."""
    den = torch.as_tensor(den, dtype=num.dtype, device=num.device)
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))


def _batch_std(x: Tensor) -> Tensor:
    """Population std (ddof 0) of a [n] tensor; 0 for n == 0."""
    return x.std(correction=0) if x.numel() else x.new_zeros(())


# ---------------------------------------------------------------------------------------------------------------
# Estimators


@_register("grpo", check=lambda eps: _check_eps(eps))
def grpo(groups: Groups, *, eps: float = 1e-8) -> tuple[Tensor, float]:
    """DanceGRPO group z-score (DanceGRPO train_grpo_flux.py:532-548, ``--use_group``):

        A_i = (r_i - mean_g) / (std_g + eps),   std_g unbiased (ddof 1),   eps = 1e-8.

    DanceGRPO computes this in fp32; here float64, and zero-spread groups give exactly 0 (docs/upstream-parity.md).
    """
    dev = groups.centered  # [n]
    var = groups.group_sum(dev * dev) / (groups.count - 1).clamp_min(1)  # [K]; groups with < 2 rewards are zeroed
    return dev / (var.sqrt()[groups.index] + eps), 0.0


@_register("grpo_global_std", check=lambda eps: _check_eps(eps))
def grpo_global_std(groups: Groups, *, eps: float = 1e-4) -> tuple[Tensor, float]:
    """Flow-GRPO per-prompt mean with a batch std (Flow-GRPO flow_grpo/stat_tracking.py:25-31, ``global_std=True``):

        A_i = (r_i - mean_g) / (std_B(r) + eps),   std_B over all (finite) rewards of the batch, ddof 0, eps = 1e-4.

    Flow-GRPO computes it in float64 numpy; eps is absolute, so it is not exactly reward-scale invariant (``slas`` is).
    """
    sigma = _batch_std(groups.rewards)
    return groups.centered / (sigma + eps), float(sigma)


@_register("drgrpo")
def drgrpo(groups: Groups) -> tuple[Tensor, float]:
    """Group-centred reward without any std (Dr. GRPO, arXiv 2503.20783; the linear ascent direction SLAS starts from):

    A_i = r_i - mean_g.
    """
    return groups.centered.clone(), 0.0


_SLAS_BATCH_STD_OF = ("centered", "rewards", "informative", "half_range")
_SLAS_NORMALIZE = ("before", "after", "after_informative")


def _check_slas(gamma: object, batch_std_of: object, normalize: object, recenter: object, eps: object,
                sigma_decay: object) -> None:
    if not _is_real(gamma) or gamma < 0:
        raise ValueError(
            f"slas gamma must be a finite float >= 0 (the power on |A| is 1 + gamma: 0 is linear, > 0 super-linear),"
            f" got {gamma!r}"
        )
    if batch_std_of not in _SLAS_BATCH_STD_OF:
        raise ValueError(
            f"slas batch_std_of must be one of {_SLAS_BATCH_STD_OF} (the std of r - mean_g over the batch, of the raw"
            f" rewards, of r - mean_g over the informative groups' samples, or half the batch's reward range),"
            f" got {batch_std_of!r}"
        )
    if normalize not in _SLAS_NORMALIZE:
        raise ValueError(
            f"slas normalize must be one of {_SLAS_NORMALIZE} (divide by a batch std before the power, or by the std"
            f" of the shaped values after it, over the batch or over the informative groups' samples),"
            f" got {normalize!r}"
        )
    if normalize != "before" and batch_std_of != "centered":
        raise ValueError(
            f"slas batch_std_of={batch_std_of!r} only applies to normalize='before': normalize={normalize!r} divides"
            " by the std of the shaped (group-centred) advantages; use batch_std_of='centered' with it"
        )
    if not isinstance(recenter, bool):
        raise ValueError(f"slas recenter must be a bool (subtract the group mean of shaped values), got {recenter!r}")
    _check_eps(eps)
    if not _is_real(sigma_decay) or not 0 <= sigma_decay < 1:
        raise ValueError(
            f"slas sigma_decay must be a float in [0, 1) (sigma_t = max(sigma_B, sigma_decay x sigma_(t-1)); 0 = off),"
            f" got {sigma_decay!r}"
        )
    if sigma_decay > 0 and normalize != "before":
        raise ValueError(
            f"slas sigma_decay applies to normalize='before' (it bounds how fast the sigma divided by before the power"
            f" may shrink); normalize={normalize!r} divides by the std of the shaped values: use sigma_decay=0 with it"
        )


def _slas_sigma(groups: Groups, batch_std_of: str) -> Tensor:
    """The batch sigma of ``normalize="before"`` (0-d float64), see ``slas``."""
    if batch_std_of == "centered":
        return _batch_std(groups.centered)
    if batch_std_of == "rewards":
        return _batch_std(groups.rewards)
    if batch_std_of == "informative":
        return _batch_std(groups.centered[~groups.zero_spread[groups.index]])
    return groups.centered.new_tensor(groups.spread / 2)  # half_range


@_register("slas", check=_check_slas, stateful=True)
def slas(
    groups: Groups,
    state: dict[str, float],
    *,
    gamma: float = 1.0,
    batch_std_of: str = "centered",
    normalize: str = "before",
    recenter: bool = False,
    eps: float = 1e-8,
    sigma_decay: float = 0.0,
) -> tuple[Tensor, float, dict[str, float]]:
    """Super-Linear Advantage Shaping (Sun et al., arXiv 2605.10937):

        normalize="before" (default):  d_i = (r_i - mean_g) / (sigma + eps'),   A_i = sign(d_i) |d_i|^(1+gamma)
        normalize="after":             A'_i = sign(dr_i) |dr_i|^(1+gamma),  dr_i = r_i - mean_g,
                                       A_i  = A'_i / (std_B(A') + eps'^(1+gamma))

    with no per-prompt std. The public text fixes neither the batch std nor the order, so both are options:

    - ``gamma`` >= 0 (default 1.0): gamma = 0 is linear (``batch_std_of="rewards"`` then equals ``grpo_global_std``
      up to eps), gamma > 0 amplifies large advantages and suppresses small, likely-noise ones.
    - ``batch_std_of`` (``normalize="before"`` only), the sigma, ddof 0:
      ``"centered"`` (default) = std of r - mean_g over the batch, sigma_B;
      ``"rewards"`` = std of the raw rewards (Flow-GRPO ``global_std``);
      ``"informative"`` = std of r - mean_g over the samples of the informative groups only (those with a non-zero
      spread). As a policy improves, more groups have all-equal rewards; their zeros stay in sigma_B, so sigma_B
      shrinks with the informative fraction f (sigma_B^2 = f sigma_inf^2) and the push of the groups that still
      carry signal grows as f^-(1+gamma)/2. Leaving the zeros out removes that growth;
      ``"half_range"`` = (max r - min r) / 2 over the batch: by Popoviciu's inequality the largest std that any
      rewards inside the batch's range can have. It does not shrink as groups saturate (it moves only with the
      batch's extreme rewards: a binary reward gives 1/2 whenever the batch has any spread, sigma_B of a batch whose
      groups all sit at success rate 1/2), and it bounds the push by construction, not by the clip:
      |d| <= 2, so |A| <= 2^(1+gamma). One outlying reward widens the range and shrinks every other advantage.
    - ``normalize``: ``"before"`` (default), ``"after"`` (the std of the shaped values over the batch), or
      ``"after_informative"``: the std of the shaped values over the informative groups' samples only (ddof 0), so
      the samples that train get unit std however many groups saturate (``"after"`` counts the saturated groups'
      zeros, and its informative advantages grow as their fraction falls).
    - ``recenter`` (default False): subtract the per-group mean of the shaped values; applied before the ``"after"``
      division, so that mode returns unit batch std. The power breaks the zero group mean of r - mean_g: a group of
      mostly high rewards has a few large negative deviations, which the power keeps, and many small positive ones,
      which it shrinks, so the group pushes away from the policy's own samples more than it pulls (a net push,
      logged as ``adv_mean`` < 0; 3 of 4 successes give [-9, 1, 1, 1]/16 before sigma). docs/slas-at-scale.md.
    - ``eps`` (default 1e-8) is *relative*: eps' = eps * (max r - min r) over the finite batch, so the result is
      exactly invariant to reward scale and shift, and a zero-spread batch gives 0 (0/0 is mapped to 0).
    - ``sigma_decay`` in [0, 1) (default 0: off; ``normalize="before"`` only): a sigma that cannot shrink faster
      than a factor ``sigma_decay`` per iteration, ``sigma_t = max(sigma_B_t, sigma_decay sigma_(t-1))``, with
      sigma_B_t the ``batch_std_of`` sigma of this batch and sigma_0 = 0. A decaying running max rather than an EMA:
      it is never below the batch's own sigma, so it only ever damps SLAS's push (an EMA lags a rising sigma too and
      would amplify it, e.g. early on as groups become informative); it follows a rising sigma at once; and the
      growth of the push that saturation causes is capped at ``sigma_decay^-(1+gamma)`` per iteration. The first
      iteration is plain SLAS. The state is ``{"sigma": sigma_t}``.

    ``state`` is the previous iteration's (``{}`` at the start); returns (A [n], the sigma divided by, next state),
    the state ``{}`` unless ``sigma_decay > 0``.
    """
    dev = groups.centered  # [n]
    eps_abs = eps * groups.spread
    p = 1.0 + gamma
    if normalize == "before":
        sigma = _slas_sigma(groups, batch_std_of)
        if sigma_decay > 0:
            sigma = torch.clamp_min(sigma, sigma_decay * float(state.get("sigma", 0.0)))
        d = _safe_div(dev, sigma + eps_abs)
        adv = d.sign() * d.abs().pow(p)
    else:
        adv = dev.sign() * dev.abs().pow(p)
    if recenter:
        adv = adv - groups.group_mean(adv)[groups.index]
    if normalize != "before":
        shaped = adv if normalize == "after" else adv[~groups.zero_spread[groups.index]]
        sigma = _batch_std(shaped)
        adv = _safe_div(adv, sigma + eps_abs**p)
    return adv, float(sigma), ({"sigma": float(sigma)} if sigma_decay > 0 else {})
