"""The backbone protocol: what samplers, the recipe and evaluation may use.

Structural typing (``typing.Protocol``), no inheritance: an adapter is any
object with these members. Conditioning is an opaque dict of batch-first
tensors so that the recipe can index and concatenate it per sample
(``index_cond``) without knowing what is inside.

Optional members, looked up by the code that needs them:

- ``alphas_cumprod`` [L]: the training alpha-bars of an epsilon backbone (its DDIM schedule,
  ``slas.algo.samplers.sampler_for``);
- ``export(out_dir, info)``: write what a stock diffusers pipeline loads (``slas export``);
- ``pipeline_shift()``: the flow time shift (``slas.algo.samplers.TimeShift``) that backbone's stock diffusers
  pipeline samples its resolution with, or None; ``eval.shift: auto`` samples with it
  (``slas.policy.generate.sampling_shift``);
- ``denoiser``: the network ``predict`` runs, when ``module`` holds more (the toy model's text encoder):
  what FSDP2 shards and ``model.compile`` compiles (``slas.recipe.parallel.ParallelDenoiser``); default ``module``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn


@runtime_checkable
class Backbone(Protocol):
    # "velocity" (rectified flow: v = noise - x0) or "epsilon"; it picks the sampler (slas.algo.samplers.sampler_for)
    prediction: str
    sample_shape: tuple[int, ...]  # [C, H, W] of what the sampler integrates (pixels or latents)
    module: nn.Module  # everything whose state a checkpoint must hold
    device: torch.device  # where predict runs; the recipe keeps latents there

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Conditioning for each prompt: batch-first tensors [N, ...]."""
        ...

    def predict(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """Model output [N, C, H, W] at x [N, C, H, W] and time input sigma [N] (the sampler's ``model_time``:
        the noise level in [0, 1] for velocity models, the DDPM timestep for epsilon models)."""
        ...

    def decode(self, x0: torch.Tensor) -> np.ndarray:
        """Final samples [N, C, H, W] -> uint8 images [N, H, W, 3]."""
        ...

    def reference(self):
        """A context manager under which ``predict`` is the KL reference policy without a second copy of the
        weights (LoRA adapters switched off), or None when there is none (full fine-tuning: the recipe keeps a
        frozen copy of the starting weights)."""
        ...


def index_cond(cond: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Select samples ``idx`` [M] from every conditioning tensor."""
    return {k: v[idx] for k, v in cond.items()}
