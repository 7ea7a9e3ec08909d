"""Adapter for the ShapesWorld model (pixel-space rectified flow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slas.policy.common import add_lora, has_lora, lora_options, reference, to_uint8
from slas.toyworld import model as toymodel
from slas.toyworld.world import CANVAS


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

    @staticmethod
    def check(cfg) -> None:
        """Config rules of the toy backbone (slas.config.validate calls it)."""
        m = cfg.model
        if m.guidance_scale is not None:
            raise ValueError("model.guidance_scale: the toy backbone has no guidance (leave it null)")
        if m.cfg_detach_uncond:
            raise ValueError("model.cfg_detach_uncond: the toy backbone has no CFG branch")
        if CANVAS % cfg.sample.noise_pool:
            raise ValueError(f"sample.noise_pool must divide the ShapesWorld image side {CANVAS}, got "
                             f"{cfg.sample.noise_pool}")

    @classmethod
    def from_config(cls, m) -> ToyBackbone:
        """From the ``model`` config section (``slas.recipe.train.build_backbone``)."""
        return cls.from_checkpoint(m.checkpoint, m.train_text_encoder, m.trainable, lora=lora_options(m),
                                   gradient_checkpointing=m.gradient_checkpointing)

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        with torch.set_grad_enabled(self.train_text_encoder and torch.is_grad_enabled()):
            return self.model.encode(prompts)

    def predict(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.velocity(x, sigma, cond)

    def decode(self, x0: torch.Tensor) -> np.ndarray:
        return to_uint8(x0)

    def reference(self):
        """The KL reference without a copy: LoRA switched off; None for full fine-tuning."""
        return reference(self.model.unet)

    def export(self, out, info: dict) -> list[Path]:
        """The model as stock library folders (``slas export``): ``out/unet/`` (diffusers ``UNet2DConditionModel``,
        LoRA factors merged in), ``out/text_encoder/`` (transformers ``CLIPTextModel``), ``out/tokenizer/``
        (``PreTrainedTokenizerFast``), and ``out/slas_export.json`` with ``info``, the rest of the toy model's
        config and how the parts compose into the velocity. Returns the written paths."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        m = self.model
        _merged(m.unet).save_pretrained(out / "unet")
        m.text_encoder.save_pretrained(out / "text_encoder")
        m.tokenizer.save_pretrained(out / "tokenizer")
        toy = {k: v for k, v in m.config.items() if k not in ("weights_dtype",)} | {
            "canvas": CANVAS, "patch": toymodel.PATCH, "max_tokens": toymodel.MAX_TOKENS, "timestep_scale": 1000.0,
            "prediction": self.prediction}
        usage = ("tokens = tokenizer(prompts, padding='max_length', max_length=max_tokens, truncation=True); "
                 "hidden = text_encoder(**tokens).last_hidden_state; x_sigma = (1 - sigma) x0 + sigma noise "
                 "([N, 3, canvas, canvas] in [-1, 1]); v = noise - x0 = pixel_shuffle(unet(pixel_unshuffle(x_sigma, "
                 "patch), timestep_scale * sigma, encoder_hidden_states=hidden, "
                 "encoder_attention_mask=tokens.attention_mask).sample, patch)")
        meta = dict(info, kind="full", model="ShapesWorld ToyT2I", subfolders=["unet", "text_encoder", "tokenizer"],
                    toy_config=toy, usage=usage)
        (out / "slas_export.json").write_text(json.dumps(meta, indent=2) + "\n")
        return [out / "unet", out / "text_encoder", out / "tokenizer", out / "slas_export.json"]


def _merged(unet: nn.Module) -> nn.Module:
    """``unet`` itself, or for a LoRA run a plain copy with the factors merged into the base weights, so that a
    stock ``UNet2DConditionModel.from_pretrained`` reloads it without peft."""
    if not has_lora(unet):
        return unet
    import copy

    from diffusers import UNet2DConditionModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    work = copy.deepcopy(unet)
    for mod in work.modules():
        if isinstance(mod, BaseTunerLayer):
            mod.merge()
    state = {k.replace(".base_layer.", "."): v for k, v in work.state_dict().items() if ".lora_" not in k}
    plain = UNet2DConditionModel.from_config(unet.config)
    plain.load_state_dict(state)  # strict: every base weight, nothing left over
    return plain
