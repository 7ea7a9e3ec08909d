"""Which steps are stochastic and which are trained (slas.algo.samplers.schedule), against hand-computed tables."""

from __future__ import annotations

import pytest

from slas.algo.samplers.schedule import sde_steps, step_etas, trainable_steps, trained_steps_per_sample


@pytest.mark.parametrize("steps, window, expected", [
    (5, [], [0, 1, 2, 3, 4]),  # no window: every step is an SDE step (DanceGRPO, Flow-GRPO)
    (5, [1, 3], [1, 2]),  # [start, end)
    (10, [0, 10], list(range(10))),
    (10, [9, 10], [9]),
    (2, [0, 1], [0]),
])
def test_sde_steps(steps, window, expected):
    out = sde_steps(steps, window)
    assert isinstance(out, range) and list(out) == expected


@pytest.mark.parametrize("steps, window, last, expected", [
    (5, [], False, [0, 1, 2, 3]),  # the last step (4) is decoded, not trained
    (5, [], True, [0, 1, 2, 3, 4]),
    (5, [1, 3], False, [1, 2]),  # the window does not reach the last step
    (5, [3, 5], False, [3]),  # it does: step 4 drops out
    (5, [3, 5], True, [3, 4]),
    (10, [9, 10], False, []),  # only the last step: nothing to train (the config refuses it under ppo_sde)
    (2, [], False, [0]),
])
def test_trainable_steps(steps, window, last, expected):
    assert trainable_steps(steps, window, train_last_step=last) == expected


def test_step_etas_are_eta_inside_the_window_and_zero_outside():
    assert step_etas(5, [1, 3], 0.7) == [0.0, 0.7, 0.7, 0.0, 0.0]
    assert step_etas(4, [], 0.3) == [0.3, 0.3, 0.3, 0.3]
    assert step_etas(3, [2, 3], 1.0) == [0.0, 0.0, 1.0]
    assert step_etas(3, [], 0.0) == [0.0, 0.0, 0.0]  # the ODE


@pytest.mark.parametrize("trainable, fraction, expected", [
    (10, 0.6, 6),  # int(6.0)
    (9, 0.6, 5),  # int(5.4): rounds down, as DanceGRPO's int(len * timestep_fraction)
    (2, 0.6, 1),  # int(1.2)
    (1, 0.6, 1),  # int(0.6) = 0: at least one
    (49, 1.0, 49),  # DanceGRPO-SD: 49 of 50 DDIM steps
    (4, 0.25, 1),
])
def test_trained_steps_per_sample(trainable, fraction, expected):
    assert trained_steps_per_sample(trainable, fraction) == expected
