"""Adapter for the ShapesWorld model (pixel-space rectified flow)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..toyworld import model as toymodel
from ..toyworld.world import CANVAS


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3]."""
    x = ((x.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def add_lora(unet: nn.Module, rank: int, alpha: float, targets: list[str]) -> None:
    """Inject peft LoRA factors into ``unet`` and freeze everything else. B starts at 0, so the
    adapted model is the base model until the first update (the KL reference is that start)."""
    try:
        from peft import LoraConfig
    except ImportError:
        raise ImportError("model.lora_rank > 0 needs peft: pip install peft") from None
    names = [n for n, _ in unet.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ValueError(f"model.lora_targets {missing} match no module of the UNet")
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=True))
    for n, p in unet.named_parameters():
        p.requires_grad_("lora_" in n)


class ToyBackbone:
    """``Backbone`` over ``toyworld.model.ToyT2I``.

    The text encoder is frozen by default (``train_text_encoder=False``), as in
    DanceGRPO/Flow-GRPO where text embeddings are precomputed: prompt
    embeddings are then computed once per prompt and reused.
    """

    prediction = "velocity"
    sample_shape = (3, CANVAS, CANVAS)

    def __init__(self, model: toymodel.ToyT2I, train_text_encoder: bool = False, trainable: list[str] | None = None,
                 lora: dict | None = None):
        self.model = model
        self.module: nn.Module = model
        self.train_text_encoder = train_text_encoder
        model.text_encoder.requires_grad_(train_text_encoder)
        if lora:
            add_lora(model.unet, **lora)
        if trainable:
            for name, p in model.unet.named_parameters():
                p.requires_grad_(any(s in name for s in trainable))
            if not any(p.requires_grad for p in model.unet.parameters()):
                raise ValueError(f"model.trainable {trainable} matches no UNet parameter name")

    @classmethod
    def from_checkpoint(cls, path=None, train_text_encoder: bool = False, trainable: list[str] | None = None,
                        lora: dict | None = None) -> ToyBackbone:
        return cls(toymodel.load(path), train_text_encoder, trainable, lora)

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        with torch.set_grad_enabled(self.train_text_encoder and torch.is_grad_enabled()):
            return self.model.encode(prompts)

    def predict(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.velocity(x, sigma, cond)

    def decode(self, x0: torch.Tensor) -> np.ndarray:
        return to_uint8(x0)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]
