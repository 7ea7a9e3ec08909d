"""The backbone protocol: what samplers, the recipe and evaluation may use.

Structural typing (``typing.Protocol``), no inheritance: an adapter is any
object with these members. Conditioning is an opaque dict of batch-first
tensors so that the recipe can index and concatenate it per sample
(``index_cond``) without knowing what is inside.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn


@runtime_checkable
class Backbone(Protocol):
    prediction: str  # "velocity" (rectified flow: v = noise - x0) or "epsilon"
    sample_shape: tuple[int, ...]  # [C, H, W] of what the sampler integrates (pixels or latents)
    module: nn.Module  # everything whose state a checkpoint must hold

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Conditioning for each prompt: batch-first tensors [N, ...]."""
        ...

    def predict(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """Model output [N, C, H, W] at x [N, C, H, W] and noise level sigma [N]."""
        ...

    def decode(self, x0: torch.Tensor) -> np.ndarray:
        """Final samples [N, C, H, W] -> uint8 images [N, H, W, 3]."""
        ...

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters RL updates (all of them for full fine-tuning, adapters for LoRA)."""
        ...


def index_cond(cond: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Select samples ``idx`` [M] from every conditioning tensor."""
    return {k: v[idx] for k, v in cond.items()}
