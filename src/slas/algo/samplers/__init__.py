"""Samplers: pure functions of (model output, state, explicit sigmas / alpha-bars); no scheduler state."""

from slas.algo.samplers.ddim import ddim_alphas, ddim_step_with_logprob
from slas.algo.samplers.dispatch import (
    FLOW_FAMILIES,
    PREDICTIONS,
    SAMPLER_FAMILIES,
    DDIMSampler,
    FlowSampler,
    Sampler,
    sampler_for,
)
from slas.algo.samplers.dpm import dpm2_step
from slas.algo.samplers.flow import FAMILIES, StepOutput, TimeShift, euler_ode, flow_sigmas, flow_step_with_logprob
from slas.algo.samplers.schedule import sde_steps, step_etas, trainable_steps, trained_steps_per_sample

__all__ = [
    "FAMILIES",
    "FLOW_FAMILIES",
    "PREDICTIONS",
    "SAMPLER_FAMILIES",
    "DDIMSampler",
    "FlowSampler",
    "Sampler",
    "StepOutput",
    "TimeShift",
    "ddim_alphas",
    "ddim_step_with_logprob",
    "dpm2_step",
    "euler_ode",
    "flow_sigmas",
    "flow_step_with_logprob",
    "sampler_for",
    "sde_steps",
    "step_etas",
    "trainable_steps",
    "trained_steps_per_sample",
]
