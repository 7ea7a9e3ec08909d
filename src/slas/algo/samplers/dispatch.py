"""Which sampler a backbone gets: its schedule and the one step-with-log-prob that rollout and re-scoring share.

A backbone declares what its network predicts (``Backbone.prediction``); ``sampler_for`` turns that and the
``sample`` config into a frozen sampler object holding the whole schedule as explicit tensors. Rollout calls
``sampler.step(..., noise=...)`` and the PPO update calls ``sampler.step(..., prev_sample=...)`` on the same
object, so the old and the new log-prob come from the same arithmetic (ddpo-pytorch's pattern, DDPO
``ddpo_pytorch/diffusers_patch/ddim_with_logprob.py``) for every backbone, and a stored transition is addressed by
its step index alone (no scheduler state, unlike Flow-GRPO ``flow_grpo/diffusers_patch/sd3_sde_with_logprob.py:40-45``).

- ``"velocity"`` (rectified flow: FLUX, SD3, ShapesWorld): ``FlowSampler`` over sigmas [T+1], the DanceGRPO or
  Flow-GRPO SDE (``flow_step_with_logprob``); the model's time input is sigma.
- ``"epsilon"`` (SD1.x): ``DDIMSampler`` over the DDIM alpha-bars [T] (``ddim_step_with_logprob``, DDPO /
  DanceGRPO-SD); the model's time input is the DDPM timestep.

``eta = 0`` makes either deterministic (ODE / DDIM sampling for evaluation, log-prob 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from slas.algo.samplers.ddim import ddim_alphas, ddim_step_with_logprob
from slas.algo.samplers.dpm import dpm2_step
from slas.algo.samplers.flow import FAMILIES, StepOutput, TimeShift, flow_sigmas, flow_step_with_logprob

PREDICTIONS = ("velocity", "epsilon")
# the flow families: the one-step families of flow_step_with_logprob, and DiffusionNFT's deterministic multistep dpm2
FLOW_FAMILIES = (*FAMILIES, "dpm2")
# sample.family values: the flow families, and DDIM for epsilon prediction
SAMPLER_FAMILIES = (*FLOW_FAMILIES, "ddim")


def _bcast(v: Tensor, x: Tensor) -> Tensor:
    """[M] -> [M, 1, ..., 1] fp32 on x's device."""
    return v.to(device=x.device, dtype=torch.float32).view(-1, *[1] * (x.ndim - 1))


@dataclass(frozen=True)
class FlowSampler:
    """Rectified-flow SDE over explicit sigmas (x_sigma = (1 - sigma) x0 + sigma noise, v = noise - x0)."""

    sigmas: Tensor  # [T+1] fp32, from 1 down to 0
    family: str = "dance"  # flow_step_with_logprob family: "dance" (DanceGRPO), "flow_grpo", "ode"; or "dpm2"
    reduce: str = "mean"
    noise_pool: int = 1

    @property
    def steps(self) -> int:
        return self.sigmas.numel() - 1

    @property
    def multistep(self) -> bool:
        """Whether ``step`` takes the previous step's x0 estimate (``x0_prev``): the dpm2 solver."""
        return self.family == "dpm2"

    @property
    def levels(self) -> Tensor:
        """[T+1] noise level of each trajectory index: sigma."""
        return self.sigmas

    def model_time(self, idx: Tensor) -> Tensor:
        """[M] time input of ``Backbone.predict`` at step indices idx [M]: sigma."""
        return self.sigmas[idx.cpu()]

    def step(self, out: Tensor, x: Tensor, idx: Tensor, *, eta: float, prev_sample: Tensor | None = None,
             noise: Tensor | None = None, generator: torch.Generator | None = None,
             x0_prev: Tensor | None = None) -> StepOutput:
        """Transition idx -> idx+1 of each sample: out, x [M, ...] (model output at x), idx [M] step indices.
        ``x0_prev`` [M, ...]: dpm2 only, the x0 estimate (``x0``) of each sample's previous step, None at the first;
        dpm2 is deterministic (log-prob 0) and cannot re-score a stored transition."""
        idx = idx.cpu()
        if self.family == "dpm2":
            if prev_sample is not None:
                raise ValueError("the dpm2 solver has no log-prob: it cannot re-score a transition (PPO needs an SDE "
                                 "family; the forward-process objectives train on x0 alone)")
            prev = dpm2_step(out, x, self.sigmas[idx], self.sigmas[idx + 1], x0_prev=x0_prev,
                             sigma_prev=None if x0_prev is None else self.sigmas[(idx - 1).clamp_min(0)])
            zeros = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
            return StepOutput(prev, zeros, prev, _bcast(zeros, x))
        return flow_step_with_logprob(self.family, out, x, self.sigmas[idx], self.sigmas[idx + 1],  # CPU: no sync
                                      eta=eta, prev_sample=prev_sample, noise=noise, generator=generator,
                                      reduce=self.reduce, noise_pool=self.noise_pool)

    def x0(self, out: Tensor, x: Tensor, idx: Tensor) -> Tensor:
        """[M, ...] fp32 clean-sample estimate x0_hat = x - sigma v (DanceGRPO decodes it at the last step)."""
        return x.float() - _bcast(self.sigmas[idx.cpu()], x) * out.float()

    def noised(self, x0: Tensor, eps: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Forward process at level idx [M]: (x_t = (1 - sigma) x0 + sigma eps [M, ...], flow level t = sigma [M]).
        The forward-process objectives (DiffusionNFT, AWM) train here; ``model_time(idx)`` is the model's input."""
        s = self.sigmas[idx.cpu()]
        return (1 - _bcast(s, x0)) * x0.float() + _bcast(s, x0) * eps.float(), s

    def velocity(self, out: Tensor, x: Tensor, idx: Tensor) -> Tensor:
        """[M, ...] the model output as a rectified-flow velocity (eps - x0): a velocity model's output itself."""
        return out

    def dt(self, idx: Tensor) -> Tensor:
        """[M] sigma_next - sigma (< 0): Flow-GRPO's KL scales by |dt| (Flow-GRPO scripts/train_sd3.py:894-897)."""
        idx = idx.cpu()
        return self.sigmas[idx + 1] - self.sigmas[idx]


@dataclass(frozen=True)
class DDIMSampler:
    """DDIM with eta for epsilon prediction over explicit alpha-bars (``ddim_alphas``)."""

    timesteps: Tensor  # [T] int64 DDPM timesteps, decreasing (the model's time input)
    alpha_bar: Tensor  # [T] fp32 alpha-bar at each step
    alpha_bar_prev: Tensor  # [T] fp32 alpha-bar after each step
    reduce: str = "mean"

    @property
    def steps(self) -> int:
        return self.timesteps.numel()

    @property
    def levels(self) -> Tensor:
        """[T+1] noise level of each trajectory index: the VP noise std sqrt(1 - alpha_bar)."""
        return torch.cat([self.alpha_bar, self.alpha_bar_prev[-1:]]).neg().add(1).sqrt()

    def model_time(self, idx: Tensor) -> Tensor:
        """[M] time input of ``Backbone.predict`` at step indices idx [M]: the DDPM timestep (as float)."""
        return self.timesteps[idx.cpu()].float()

    def step(self, out: Tensor, x: Tensor, idx: Tensor, *, eta: float, prev_sample: Tensor | None = None,
             noise: Tensor | None = None, generator: torch.Generator | None = None) -> StepOutput:
        idx = idx.cpu()
        return ddim_step_with_logprob(out, x, self.alpha_bar[idx], self.alpha_bar_prev[idx],  # CPU: no sync
                                      eta=eta, prev_sample=prev_sample, noise=noise, generator=generator,
                                      reduce=self.reduce)

    def x0(self, out: Tensor, x: Tensor, idx: Tensor) -> Tensor:
        """[M, ...] fp32 x0_hat = (x - sqrt(1 - ab) eps) / sqrt(ab)."""
        ab = _bcast(self.alpha_bar[idx.cpu()], x)
        return (x.float() - (1 - ab).sqrt() * out.float()) / ab.sqrt()

    def noised(self, x0: Tensor, eps: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Forward process at step idx [M]: x_t = sqrt(ab) x0 + sqrt(1 - ab) eps, and the flow level it equals,
        t = sqrt(1 - ab) / (sqrt(ab) + sqrt(1 - ab)): x_t / (sqrt(ab) + sqrt(1 - ab)) = (1 - t) x0 + t eps. So the
        forward-process objectives treat an epsilon model as the rectified flow it is a rescaling of."""
        ab = self.alpha_bar[idx.cpu()]
        a, s = ab.sqrt(), (1 - ab).sqrt()
        return _bcast(a, x0) * x0.float() + _bcast(s, x0) * eps.float(), s / (a + s)

    def velocity(self, out: Tensor, x: Tensor, idx: Tensor) -> Tensor:
        """[M, ...] the epsilon prediction as a rectified-flow velocity: eps_hat - x0_hat, x0_hat from ``x0``. The
        velocity error is (1 + sqrt((1 - ab) / ab)) times the epsilon error, so the x0-space error t (v - target)
        equals x0 - x0_hat exactly as for a flow model (t from ``noised``)."""
        return out.float() - self.x0(out, x, idx)

    def dt(self, idx: Tensor) -> Tensor:
        raise ValueError("train.kl_form 'flow_grpo' scales the KL by a flow step's |dt|; DDIM has no sigma step: "
                         "use train.kl_form analytic")


Sampler = FlowSampler | DDIMSampler


def sampler_for(prediction: str, steps: int, *, family: str, shift: float | TimeShift = 1.0, reduce: str = "mean",
                noise_pool: int = 1, alphas_cumprod: Tensor | None = None) -> Sampler:
    """The sampler of a backbone that predicts ``prediction``, with ``steps`` steps.

    Args:
        prediction: ``Backbone.prediction``, one of ``PREDICTIONS``.
        steps: T.
        family: ``sample.family``: a flow family (``FLOW_FAMILIES``) for velocity, ``"ddim"`` for epsilon.
        shift: flow time shift (``flow_sigmas``: a float is static, a ``TimeShift`` may be dynamic); must be 1 for
            DDIM, whose spacing is the scheduler's.
        reduce, noise_pool: as ``flow_step_with_logprob`` (noise_pool must be 1 for DDIM).
        alphas_cumprod: [L] training alpha-bars of an epsilon backbone (``Backbone.alphas_cumprod``).
    """
    if prediction == "velocity":
        if family not in FLOW_FAMILIES:
            raise ValueError(f"a velocity-prediction backbone samples with a flow family {FLOW_FAMILIES}, got {family!r}")
        return FlowSampler(flow_sigmas(steps, shift), family, reduce, noise_pool)
    if prediction == "epsilon":
        if family != "ddim":
            raise ValueError(f"an epsilon-prediction backbone samples with family 'ddim', got {family!r}")
        if alphas_cumprod is None:
            raise ValueError("an epsilon-prediction backbone must expose alphas_cumprod [L] for the DDIM schedule")
        if shift != 1.0 or noise_pool != 1:
            raise ValueError(f"sample.shift ({shift}) and sample.noise_pool ({noise_pool}) apply to flow samplers "
                             "only; DDIM needs 1 for both")
        return DDIMSampler(*ddim_alphas(alphas_cumprod, steps), reduce=reduce)
    raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")
