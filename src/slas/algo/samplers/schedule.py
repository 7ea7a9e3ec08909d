"""Which of a rollout's T steps are stochastic, and which of them are trained: pure functions of plain numbers.

Step ``i`` is the transition from noise level ``i`` to ``i + 1`` (``Rollout.log_probs[:, i]``). Inside the SDE
window a step draws noise and has a log-prob; outside it is a deterministic ODE step, so a group's spread comes only
from the window's noise (Flow-GRPO-Fast / MixGRPO, arXiv 2507.21802).
"""

from __future__ import annotations

from collections.abc import Sequence


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
