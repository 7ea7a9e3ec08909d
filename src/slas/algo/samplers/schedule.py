"""Which of a rollout's T steps are stochastic, and which of them are trained: pure functions of plain numbers (and,
for the forward-process objectives' stratified levels, of the iteration's generator).

Step ``i`` is the transition from noise level ``i`` to ``i + 1`` (``Rollout.log_probs[:, i]``). Inside the SDE
window a step draws noise and has a log-prob; outside it is a deterministic ODE step, so a group's spread comes only
from the window's noise (Flow-GRPO-Fast / MixGRPO, arXiv 2507.21802).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def sde_steps(steps: int, window: Sequence[int] = ()) -> range:
    """The stochastic step indices of a ``steps``-step rollout: ``range(start, end)`` for ``window = [start, end)``
    (``0 <= start < end <= steps``), every step for an empty window (DanceGRPO, Flow-GRPO)."""
    return range(*window) if window else range(steps)


def trainable_steps(steps: int, window: Sequence[int] = (), *, train_last_step: bool = False) -> list[int]:
    """The step indices whose transitions may be trained [S]: the SDE window, minus the last step unless
    ``train_last_step``. DanceGRPO decodes the last step's x0 prediction, so that step's noise never reaches the reward
    (DanceGRPO ``train_grpo_flux.py:505-525`` slices it off)."""
    last = steps - 1
    return [i for i in sde_steps(steps, window) if i < last or train_last_step]


def step_etas(steps: int, window: Sequence[int], eta: float) -> list[float]:
    """The per-step SDE noise scale [T]: ``eta`` inside the SDE window, 0.0 (an ODE step) outside."""
    stochastic = sde_steps(steps, window)
    return [eta if i in stochastic else 0.0 for i in range(steps)]


def trained_steps_per_sample(trainable: int, fraction: float) -> int:
    """K, the transitions of each sample that one iteration of ppo_sde trains: ``int(trainable * fraction)`` of its
    ``trainable`` steps (a random subset per sample), at least 1. DanceGRPO trains the first
    ``int((T - 1) * timestep_fraction)`` steps of a per-sample permutation (DanceGRPO ``train_grpo_flux.py:505-525``)."""
    return max(1, int(trainable * fraction))


def stratified_bounds(steps: int, k: int, fraction: float) -> list[tuple[int, int]]:
    """The K strata ``[lo, hi)`` of AWM's ``time_type: discrete_wo_init`` (scxue/advantage_weighted_matching@be51372
    scripts/train_sd3_awm.py:1197-1205): the step indices ``[1, int(steps * fraction))`` cut at
    ``linspace(1, int(steps * fraction), k + 1)`` truncated to integers, computed as upstream in float32 (whose
    rounding moves a boundary by one in rare shapes, e.g. 26 strata of [1, 29)). AWM's GenEval config (14 steps,
    fraction 0.9, 6 levels): (1, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 12), so sigma = 1 (index 0) and the two
    lowest levels are never trained. Raises ``ValueError`` when a stratum would be empty."""
    end = int(steps * fraction)
    cuts = torch.linspace(1, end, k + 1).long().tolist()  # float32, as upstream, then truncated
    bounds = list(zip(cuts[:-1], cuts[1:], strict=True))
    if end < 2 or any(hi <= lo for lo, hi in bounds):
        raise ValueError(f"{k} strata of the step indices [1, int({steps} x {fraction}) = {end}) would leave one "
                         f"empty: use at most {max(0, end - 1)} levels, more steps or a larger fraction")
    return bounds


def stratified_steps(n: int, bounds: Sequence[tuple[int, int]], generator: torch.Generator) -> Tensor:
    """[n, K] int64: for each of ``n`` samples one step index drawn uniformly in each stratum of ``bounds``
    (``stratified_bounds``): ``lo + floor(u (hi - lo))``, u ~ U[0, 1) float32 from ``generator``, as AWM draws them
    (train_sd3_awm.py:1201-1202). Upstream draws one row per training batch and shares it across the batch's samples;
    here every sample draws its own row (the same marginal levels, independent across samples)."""
    lo, hi = torch.tensor(list(bounds), dtype=torch.long).T  # [K] each
    u = torch.rand(n, len(bounds), generator=generator)  # [n, K]
    return lo + (u * (hi - lo)).long()
