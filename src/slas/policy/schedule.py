"""The time shift a stock diffusers flow pipeline samples with: read from the model folder's scheduler config.

Both flow pipelines use ``FlowMatchEulerDiscreteScheduler``. With ``use_dynamic_shifting`` (FLUX.1-dev: base_shift
0.5, max_shift 1.15, base_image_seq_len 256, max_image_seq_len 4096) the shift depends on the image: mu is linear in
the transformer's token count and the sigmas are shifted by e^mu (diffusers 0.42 pipeline_flux.py:826-842,
pipeline_stable_diffusion_3.py:1015-1028, scheduling_flow_match_euler_discrete.py:352-357); otherwise it is the
config's static ``shift`` (SD3.5: 3.0). FluxPipeline's sigma grid is ``linspace(1, 1/T, T)`` (pipeline_flux.py:823),
the one ``slas.algo.samplers.flow_sigmas`` builds, so a FLUX adapter's ODE at this shift samples as the pipeline
does. StableDiffusion3Pipeline's default grid instead ends at the scheduler's sigma_min (docs/upstream-parity.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from slas.algo.samplers import TimeShift

SCHEDULER = "FlowMatchEulerDiscreteScheduler"
# scheduler options that change the sigmas (or the step) in ways slas does not reproduce -> the value that is "off"
_OFF = {"shift_terminal": None, "use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
        "invert_sigmas": False, "stochastic_sampling": False}


def calculate_shift(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096, base_shift: float = 0.5,
                    max_shift: float = 1.15) -> float:
    """mu of the dynamic shift, linear in the image's token count: diffusers' ``calculate_shift``
    (pipeline_flux.py:73-83), in its operation order so that e^mu is the same float."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    b = base_shift - m * base_seq_len
    return image_seq_len * m + b


def read_scheduler_config(path: str | Path) -> dict | None:
    """``path/scheduler/scheduler_config.json`` of a diffusers folder with the scheduler's defaults filled in (as
    ``from_pretrained`` sees it), or None when the folder has none."""
    f = Path(path) / "scheduler" / "scheduler_config.json"
    if not f.is_file():
        return None
    raw = json.loads(f.read_text())
    if raw.get("_class_name") != SCHEDULER:
        return dict(raw)  # pipeline_shift names the class it cannot read
    from diffusers import FlowMatchEulerDiscreteScheduler

    return dict(FlowMatchEulerDiscreteScheduler.from_config(raw).config)


def pipeline_shift(config: dict, seq_len: int) -> TimeShift:
    """The time shift a stock pipeline with scheduler ``config`` (``read_scheduler_config``) samples an image of
    ``seq_len`` transformer tokens with: dynamic e^mu under ``use_dynamic_shifting``, else the static ``shift``.
    ValueError naming the option when the config holds one that slas's sampler does not reproduce."""
    name = config.get("_class_name", SCHEDULER)
    if name != SCHEDULER:
        raise ValueError(f"the model's scheduler is {name}; slas reproduces only {SCHEDULER}'s shift: set "
                         "eval.shift (or --shift) to a number")
    on = [k for k, off in _OFF.items() if config.get(k, off) not in (off, 0)]
    if config.get("num_train_timesteps", 1000) != 1000:  # the transformers' time input is sigma * 1000
        on.append("num_train_timesteps")
    if config.get("use_dynamic_shifting") and config.get("time_shift_type", "exponential") != "exponential":
        on.append("time_shift_type")
    if on:
        raise ValueError(f"the model's {SCHEDULER} config sets {on}, which slas's sampler does not reproduce: set "
                         "eval.shift (or --shift) to a number")
    if not config.get("use_dynamic_shifting"):
        return TimeShift(float(config.get("shift", 1.0)))
    mu = calculate_shift(seq_len, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                         config.get("base_shift", 0.5), config.get("max_shift", 1.15))
    return TimeShift(math.exp(mu), dynamic=True)
