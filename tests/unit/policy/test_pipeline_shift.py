"""The time shift of a stock diffusers flow pipeline (slas.policy.schedule): scheduler options slas does not reproduce
are named."""

import pytest

from _tinypipes import STATIC_SCHEDULER
from slas.algo.samplers import TimeShift
from slas.policy import schedule


@pytest.mark.parametrize("change, needle", [
    ({"use_karras_sigmas": True}, r"sets \['use_karras_sigmas'\]"),
    ({"shift_terminal": 0.02}, r"sets \['shift_terminal'\]"),
    ({"use_dynamic_shifting": True, "time_shift_type": "linear"}, r"sets \['time_shift_type'\]"),
    ({"num_train_timesteps": 500}, r"sets \['num_train_timesteps'\]"),
    ({"_class_name": "UniPCMultistepScheduler"}, "scheduler is UniPCMultistepScheduler"),
])
def test_scheduler_options_slas_does_not_reproduce_are_named(change, needle):
    config = {**STATIC_SCHEDULER, "_class_name": schedule.SCHEDULER, **change}
    with pytest.raises(ValueError, match=needle + ".*set eval.shift"):
        schedule.pipeline_shift(config, 256)
    assert schedule.pipeline_shift(dict(STATIC_SCHEDULER, shift_terminal=None), 256) == TimeShift(3.0)
