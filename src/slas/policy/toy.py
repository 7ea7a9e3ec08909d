"""Adapter for the ShapesWorld model (pixel-space rectified flow)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..toyworld import model as toymodel
from ..toyworld.world import CANVAS
from .common import add_lora, lora_options, reference, to_uint8


class ToyBackbone:
    """``Backbone`` over ``toyworld.model.ToyT2I``.

    The text encoder is frozen by default (``train_text_encoder=False``), as in
    DanceGRPO/Flow-GRPO where text embeddings are precomputed: prompt
    embeddings are then computed once per prompt and reused.
    """

    prediction = "velocity"
    sample_shape = (3, CANVAS, CANVAS)
    device = torch.device("cpu")

    def __init__(self, model: toymodel.ToyT2I, train_text_encoder: bool = False, trainable: list[str] | None = None,
                 lora: dict | None = None, gradient_checkpointing: bool = False):
        self.model = model
        self.module: nn.Module = model
        self.denoiser: nn.Module = model.unet  # what predict runs (FSDP shards it; the text encoder stays whole)
        self.train_text_encoder = train_text_encoder
        model.text_encoder.requires_grad_(train_text_encoder)
        if lora:
            add_lora(model.unet, **lora)
        if trainable:
            for name, p in model.unet.named_parameters():
                p.requires_grad_(any(s in name for s in trainable))
            if not any(p.requires_grad for p in model.unet.parameters()):
                raise ValueError(f"model.trainable {trainable} matches no UNet parameter name")
        if gradient_checkpointing:
            model.unet.enable_gradient_checkpointing()  # recompute activations in backward (diffusers ModelMixin)

    @classmethod
    def from_checkpoint(cls, path=None, train_text_encoder: bool = False, trainable: list[str] | None = None,
                        lora: dict | None = None, gradient_checkpointing: bool = False) -> ToyBackbone:
        return cls(toymodel.load(path), train_text_encoder, trainable, lora, gradient_checkpointing)

    @classmethod
    def from_config(cls, m) -> ToyBackbone:
        """From the ``model`` config section (``slas.train.build_backbone``)."""
        return cls.from_checkpoint(m.checkpoint, m.train_text_encoder, m.trainable, lora=lora_options(m),
                                   gradient_checkpointing=m.gradient_checkpointing)

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        with torch.set_grad_enabled(self.train_text_encoder and torch.is_grad_enabled()):
            return self.model.encode(prompts)

    def predict(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.velocity(x, sigma, cond)

    def decode(self, x0: torch.Tensor) -> np.ndarray:
        return to_uint8(x0)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def reference(self):
        """The KL reference without a copy: LoRA switched off; None for full fine-tuning."""
        return reference(self.model.unet)
