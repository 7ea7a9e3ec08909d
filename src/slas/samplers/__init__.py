"""Samplers: pure functions of (model output, state, explicit sigmas / alpha-bars); no scheduler state."""

from .ddim import ddim_alphas, ddim_step_with_logprob
from .flow import FAMILIES, StepOutput, euler_ode, flow_sigmas, flow_step_with_logprob

__all__ = [
    "FAMILIES",
    "StepOutput",
    "ddim_alphas",
    "ddim_step_with_logprob",
    "euler_ode",
    "flow_sigmas",
    "flow_step_with_logprob",
]
