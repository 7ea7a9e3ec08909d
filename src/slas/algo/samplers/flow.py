"""Rectified-flow sampling: x_sigma = (1 - sigma) x0 + sigma noise, v = noise - x0.

One stateless ``flow_step_with_logprob`` both samples (``prev_sample=None``) and re-scores a stored
transition (``prev_sample`` given), so the old log-prob of the rollout and the new log-prob of the update
come from the same arithmetic (ddpo-pytorch's ``ddim_step_with_logprob`` pattern, DDPO
``ddpo_pytorch/diffusers_patch/ddim_with_logprob.py``). Sigmas are explicit per-sample arguments: there is no
scheduler state to drift out of sync (unlike Flow-GRPO ``sd3_sde_with_logprob.py:40-45``), and a micro-batch may mix
timesteps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

FAMILIES = ("dance", "flow_grpo", "ode")
REDUCTIONS = ("mean", "sum")

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class StepOutput:
    """One transition x_t -> x_{t-1} of a Gaussian (or deterministic) sampler step, all fp32
    except ``prev_sample`` when it was passed in (returned unchanged)."""

    prev_sample: Tensor  # [N, ...] x at the next (lower) noise level
    log_prob: Tensor  # [N] log p(prev_sample | x), reduced over non-batch dims; zeros for deterministic steps
    mean: Tensor  # [N, ...] Gaussian mean (differentiable in the model output; used by KL terms)
    std: Tensor  # [N, 1, ..., 1] Gaussian std, broadcastable against x; zeros for deterministic steps


@dataclass(frozen=True)
class TimeShift:
    """A flow time shift ``sigma = shift s / (1 + (shift - 1) s)`` of the unshifted grid s.

    ``dynamic``: ``shift`` is e^mu of a resolution-dependent schedule (diffusers' ``use_dynamic_shifting``, FLUX.1-dev:
    mu from the image's token count), which the scheduler writes as ``e^mu / (e^mu + 1/s - 1)``: the same map, whose
    fp32 rounding ``flow_sigmas`` then reproduces. A plain float shift is a static one (``dynamic`` False)."""

    shift: float
    dynamic: bool = False

    def __format__(self, spec: str) -> str:
        """``f"{shift:g}"`` formats like the float, marked when dynamic (a float shift formats the same way)."""
        return format(self.shift, spec) + (" (dynamic)" if self.dynamic else "")

    def __str__(self) -> str:
        return format(self, "g")


def flow_sigmas(steps: int, shift: float | TimeShift = 1.0) -> torch.Tensor:
    """[steps + 1] fp32 sigmas from 1 to 0: ``s = linspace(1, 1/T, T)`` time-shifted, then 0 appended.

    The arithmetic is diffusers' ``FlowMatchEulerDiscreteScheduler.set_timesteps(sigmas=s)`` (with ``mu = log(shift)``
    when dynamic; diffusers 0.42 scheduling_flow_match_euler_discrete.py:349-386; FluxPipeline passes this s,
    pipeline_flux.py:823), so the grid is bit-identical to the stock scheduler's: s rounded to fp32, then the static
    shift ``shift s / (1 + (shift - 1) s)`` (SD3; DanceGRPO's ``sd3_time_shift``) or the dynamic form
    ``e^mu / (e^mu + 1/s - 1)`` in fp32. ``s`` with 0 appended is ``linspace(1, 0, T + 1)``; shift 1 is the identity.
    """
    ts = shift if isinstance(shift, TimeShift) else TimeShift(float(shift))
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not ts.shift > 0:
        raise ValueError(f"shift must be > 0, got {ts.shift}")
    s = np.linspace(1.0, 1.0 / steps, steps).astype(np.float32)  # [T]
    if ts.dynamic:  # diffusers _time_shift_exponential(mu, 1.0, s) with e^mu = shift
        s = ts.shift / (ts.shift + (1 / s - 1) ** 1.0)
    else:
        s = ts.shift * s / (1 + (ts.shift - 1) * s)
    return torch.cat([torch.from_numpy(np.asarray(s, dtype=np.float32)), torch.zeros(1)])  # [T + 1]


def _per_sample(value: Tensor | float, x: Tensor, name: str) -> Tensor:
    """float, 0-d or [N] -> fp32 [N, 1, ..., 1] on x's device (broadcastable against x [N, ...]).
    A CPU value is copied without waiting for the device (no host sync in the inner loops)."""
    n = x.shape[0]
    t = torch.as_tensor(value, dtype=torch.float32).to(x.device, non_blocking=True)
    if t.ndim == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"{name} must be a float, a 0-d tensor or a [N]={n} tensor, got shape {tuple(t.shape)}")
    return t.view(n, *([1] * (x.ndim - 1)))


def _host_all(cond: Tensor) -> bool:
    """``bool(cond.all())``, evaluated where ``cond`` lives: on the CPU for the samplers' CPU schedules, so checking
    a step's noise levels never waits for the device."""
    return bool(cond.all())


def _check_common(x: Tensor, model_out: Tensor, model_out_name: str, eta: float, reduce: str,
                  prev_sample: Tensor | None, noise: Tensor | None) -> None:
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if not eta >= 0:  # also rejects NaN
        raise ValueError(f"eta is a noise scale and must be >= 0, got {eta}")
    if x.ndim < 1 or model_out.shape != x.shape:
        raise ValueError(f"{model_out_name} and x must have the same shape [N, ...], got "
                         f"{tuple(model_out.shape)} and {tuple(x.shape)}")
    if prev_sample is not None:
        if prev_sample.shape != x.shape:
            raise ValueError(f"prev_sample must have the shape of x {tuple(x.shape)}, got {tuple(prev_sample.shape)}")
        if noise is not None:
            raise ValueError("noise is only used when sampling; pass either prev_sample (re-score) or noise (sample)")
    if noise is not None and noise.shape != x.shape:
        raise ValueError(f"noise must have the shape of x {tuple(x.shape)}, got {tuple(noise.shape)}")


def _pool(y: Tensor, f: int) -> Tensor:
    """Block average over f x f spatial blocks: [N, C, H, W] -> [N, C, H/f, W/f]."""
    return torch.nn.functional.avg_pool2d(y, f)


def _project(y: Tensor, f: int) -> Tensor:
    """Orthogonal projection onto images that are constant on f x f blocks (block average, then repeat)."""
    return y if f == 1 else torch.nn.functional.interpolate(_pool(y, f), scale_factor=f, mode="nearest")


def _gaussian_step(mean: Tensor, std: Tensor, prev_sample: Tensor | None, generator: torch.Generator | None,
                   noise: Tensor | None, reduce: str, noise_pool: int = 1) -> StepOutput:
    """Sample (or take) prev ~ N(mean, std^2 I) and return its log-density reduced over non-batch dims.

    mean [N, ...] fp32, std [N, 1, ..., 1] fp32. A sample whose std is 0 (eta = 0) is a deterministic step:
    prev = mean and log_prob = 0, as the "ode" family, instead of a NaN/inf density.
    With ``noise_pool`` f > 1 the noise is constant on f x f blocks: prev = mean + std * up(z),
    z ~ N(0, I) of shape [N, C, H/f, W/f], and log_prob is the density of z = pool(prev - mean) / std,
    reduced over those D/f^2 elements.
    """
    n = mean.shape[0]
    if prev_sample is None:
        if noise is None:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=torch.float32)
        noise = noise.float()
        if noise_pool > 1:  # f * block mean of i.i.d. N(0, 1) is N(0, 1): one standard normal per block
            noise = _project(noise, noise_pool) * noise_pool
        prev_sample = mean + std * noise  # [N, ...]
        prev = prev_sample
    else:
        prev = prev_sample.float()
    deterministic = std == 0  # [N, 1, ..., 1]
    # A safe std keeps both where-branches finite, so no NaN gradient leaks through the masked branch.
    std_safe = torch.where(deterministic, torch.ones_like(std), std)
    # prev is detached as DanceGRPO (train_grpo_flux.py:159-167) and Flow-GRPO (sd3_sde_with_logprob.py:61-68):
    # the policy gradient flows through the mean only, never through the sample itself.
    resid = prev.detach() - mean  # [N, ...]
    if noise_pool > 1:
        resid = _pool(resid, noise_pool)  # [N, C, H/f, W/f]: the coordinates the noise lives in
    log_prob = -(resid**2) / (2 * std_safe**2) - torch.log(std_safe) - _HALF_LOG_2PI  # [N, ...]
    log_prob = log_prob.masked_fill(deterministic, 0.0).reshape(n, -1)  # [N, D]
    log_prob = log_prob.mean(dim=1) if reduce == "mean" else log_prob.sum(dim=1)  # [N]
    return StepOutput(prev_sample=prev_sample, log_prob=log_prob, mean=mean, std=std)


def flow_step_with_logprob(
    family: str,
    v: Tensor,
    x: Tensor,
    sigma: Tensor | float,
    sigma_next: Tensor | float,
    *,
    eta: float,
    prev_sample: Tensor | None = None,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    reduce: str = "mean",
    noise_pool: int = 1,
) -> StepOutput:
    """One step sigma -> sigma_next of a flow-matching sampler, with the Gaussian log-prob of the result.

    Convention: x_sigma = (1 - sigma) x0 + sigma*noise, the model predicts v = noise - x0, sigma decreases
    from 1 to 0. ``dt = sigma_next - sigma < 0``.

    Families:

    - ``"dance"``: DanceGRPO ``flux_step(sde_solver=True)`` (DanceGRPO train_grpo_flux.py:131-170).
      ``x0_hat = x - sigma v``, ``score = -(x - (1-sigma) x0_hat)/sigma^2``,
      ``mean = x + dt v - 0.5 eta^2 score dt``, ``std = eta sqrt(sigma - sigma_next)`` (constant diffusion
      coefficient eta). DanceGRPO default eta = 0.3.
    - ``"flow_grpo"``: Flow-GRPO ``sde_step_with_logprob`` (Flow-GRPO sd3_sde_with_logprob.py:40-68).
      ``g = eta sqrt(sigma / (1 - sigma'))`` where sigma' = sigma except that sigma == 1 is replaced by
      ``sigma_next`` in the denominator (Flow-GRPO uses ``sigmas[1]``, i.e. sigma_next at the first step,
      to avoid dividing by zero; the numerator keeps sigma = 1);
      ``mean = x + dt (v + g^2 (x + (1-sigma) v) / (2 sigma))``, ``std = g sqrt(-dt)``.
      Flow-GRPO default eta (``noise_level``) = 0.7.
    - ``"ode"``: deterministic Euler ``x + dt v`` (evaluation, or non-stochastic steps of a mixed schedule);
      std and log_prob are zeros; ``eta``, ``noise`` and ``generator`` are ignored.

    Args:
        family: one of ``FAMILIES``.
        v: [N, ...] velocity prediction for x at sigma (any float dtype).
        x: [N, ...] current latent at sigma.
        sigma, sigma_next: [N] per-sample noise levels (a float or 0-d tensor is broadcast), with
            ``0 <= sigma_next < sigma <= 1``. Per-sample values let one micro-batch mix timesteps.
        eta: noise scale, >= 0. With eta = 0 the stochastic families reduce to the ODE step and, having
            no density, report log_prob 0 (as ``"ode"``).
        prev_sample: [N, ...] stored x at sigma_next to re-score; None to sample one. Returned unchanged.
        generator: RNG for the sampling noise (ignored if ``noise`` or ``prev_sample`` is given).
        noise: [N, ...] explicit standard-normal noise for sampling: prev = mean + std * noise.
        reduce: how the per-element log-density is reduced over the D non-batch elements.
            ``"mean"`` (default; DanceGRPO / Flow-GRPO / DDPO parity) gives log_prob_sum / D, so the PPO
            ratio is ``ratio_sum ** (1/D)`` and a clip range eps in mean-space is a trust region of about
            ``D * eps`` nats of the true log-prob: it widens with the latent size (DanceGRPO train_grpo_flux.py:159-167,
            Flow-GRPO sd3_sde_with_logprob.py:61-68; e.g. FLUX 720^2 D=129,600: eps=1e-4 -> ~13 nats). ``"sum"`` is
            the true log-density of the step; the clip range then bounds the real probability ratio
            independently of resolution, but needs an eps about D times smaller for the same behaviour.
        noise_pool: f >= 1. f > 1 injects noise that is constant on f x f pixel blocks of x [N, C, H, W]
            (low-frequency exploration: D/f^2 random coordinates per step instead of D), and projects the
            SDE's score correction onto the same block-constant subspace, so the step is the same SDE
            with its diffusion restricted to that subspace (the correction is what keeps the marginals).
            The policy gradient then carries no noise from the high-frequency coordinates that decide no
            reward (slas extension; f = 1 is DanceGRPO / Flow-GRPO exactly). ``noise`` stays [N, ...] at
            full resolution: it is block-averaged (and rescaled to unit variance) inside.

    Returns:
        StepOutput with fp32 ``mean`` [N, ...], ``std`` [N, 1, ..., 1] and ``log_prob`` [N].
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown flow sampler family {family!r}; expected one of {FAMILIES}")
    _check_common(x, v, "v", eta, reduce, prev_sample, noise)
    if not (isinstance(noise_pool, int) and noise_pool >= 1):
        raise ValueError(f"noise_pool must be an int >= 1, got {noise_pool!r}")
    if noise_pool > 1 and (x.ndim != 4 or x.shape[-1] % noise_pool or x.shape[-2] % noise_pool):
        raise ValueError(f"noise_pool {noise_pool} needs x [N, C, H, W] with H and W divisible by it, "
                         f"got {tuple(x.shape)}")
    # Everything in fp32 (DanceGRPO train_grpo_flux.py:250,291): the rollout may run the model in bf16/fp16, but the step
    # must see the same fp32 inputs in the sampling and the re-scoring pass, or ratio != 1 before any update.
    # Flow-GRPO also notes bf16 overflows in the mean (sd3_sde_with_logprob.py:34-38).
    v = v.float()
    x = x.float()
    s = _per_sample(sigma, x, "sigma")  # [N, 1, ..., 1]
    s_next = _per_sample(sigma_next, x, "sigma_next")  # [N, 1, ..., 1]
    s_in = torch.as_tensor(sigma, dtype=torch.float32)
    n_in = torch.as_tensor(sigma_next, dtype=torch.float32).to(s_in.device)
    if not _host_all((n_in >= 0) & (n_in < s_in) & (s_in <= 1)):
        raise ValueError("sigmas must satisfy 0 <= sigma_next < sigma <= 1 (sigma decreases from 1 to 0 along the "
                         f"trajectory), got sigma={s.flatten().tolist()} sigma_next={s_next.flatten().tolist()}")
    dt = s_next - s  # [N, 1, ..., 1], < 0

    if family == "ode":
        mean = x + dt * v  # [N, ...]
        return StepOutput(
            prev_sample=mean if prev_sample is None else prev_sample,
            log_prob=torch.zeros(x.shape[0], dtype=torch.float32, device=x.device),
            mean=mean,
            std=torch.zeros_like(s),
        )

    if family == "dance":
        # DanceGRPO train_grpo_flux.py:143-153, kept in its operation order for numerical parity.
        x0_hat = x - s * v
        score = -(x - (1 - s) * x0_hat) / s**2  # s > 0 by the check above
        mean = x + dt * v + (-0.5 * eta**2 * _project(score, noise_pool)) * dt
        std = eta * torch.sqrt(s - s_next)
    else:  # flow_grpo, sd3_sde_with_logprob.py:47-50
        s_den = torch.where(s == 1, s_next, s)  # sigma == 1 -> sigmas[1]; s_next < 1 so 1 - s_den > 0
        g = eta * torch.sqrt(s / (1 - s_den))
        if noise_pool == 1:
            mean = x * (1 + g**2 / (2 * s) * dt) + v * (1 + g**2 * (1 - s) / (2 * s)) * dt
        else:  # the same, with the g^2 (score) term projected onto the noise subspace
            mean = x + dt * v + dt * g**2 / (2 * s) * _project(x + (1 - s) * v, noise_pool)
        std = g * torch.sqrt(-dt)
    return _gaussian_step(mean, std, prev_sample, generator, noise, reduce, noise_pool)


@torch.no_grad()
def euler_ode(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    sigmas: torch.Tensor,
) -> torch.Tensor:
    """Deterministic Euler integration from ``noise`` [N, ...] at sigmas[0]=1 to
    x0 at sigmas[-1]=0. ``velocity(x, sigma[N])`` returns v [N, ...]."""
    x = noise.float()
    n = x.shape[0]
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i].expand(n), sigmas[i + 1].expand(n)
        x = flow_step_with_logprob("ode", velocity(x, sigma), x, sigma, sigma_next, eta=0.0).prev_sample
    return x
