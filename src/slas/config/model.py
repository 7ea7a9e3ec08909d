"""The ``model`` section: the backbone, what of it trains, and how it runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from slas.config.errors import need


@dataclass
class ModelConfig:
    backbone: str = "toy"
    """adapter name (slas.policy): "toy" is the ShapesWorld model"""
    checkpoint: str | None = None
    """checkpoint dir or a shipped name (toy_S, toy_M, toy_L); None = the shipped M"""
    train_text_encoder: bool = False
    """frozen text encoder => prompt embeddings are cached"""
    trainable: list = field(default_factory=list)
    """train only parameters whose name contains one of these substrings (e.g. [attn] = the UNet's self/cross-
    attention); empty = all of them
    """
    lora_rank: int = 0
    """LoRA (peft) on the UNet: rank 0 = full fine-tuning. The base weights are frozen and only the low-rank factors
    train (Flow-GRPO: r 32, alpha 64 on SD3.5's attention).
    """
    lora_alpha: float = 0.0
    """scale = alpha / rank; 0 = alpha equals the rank (scale 1)"""
    lora_targets: list = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    """module-name suffixes that get LoRA factors (with lora_rank > 0)"""
    path: str | None = None
    """real backbones (flux, sd3, sd; docs/real-models.md): the local diffusers folder (model_index.json,
    transformer/ or unet/, vae/, ...). Weights load only from disk; a missing folder is an error when the model
    loads, not at config validation"""
    resolution: int = 0
    """image side in pixels; 0 = the backbone's default (FLUX 1024, SD3.5 1024, SD1.x 512)"""
    guidance_scale: float | None = None
    """FLUX.1-dev: the guidance-embedding value (no CFG batch); SD3 / SD1.x: the CFG scale (<= 1: no CFG). null = the
    backbone's default (FLUX 3.5 DanceGRPO, SD3 4.5 Flow-GRPO, SD1.x 5.0 DanceGRPO/DDPO)
    """
    cfg_detach_uncond: bool = False
    """CFG in training: true = the unconditional branch is detached and runs under no_grad (Flow-GRPO
    train_sd3.py:190); false = gradients through both branches (DanceGRPO-SD train_grpo_sd.py:594-678)
    """
    max_sequence_length: int = 0
    """T5 tokens; 0 = the backbone's default (FLUX 512, SD3 256)"""
    gradient_checkpointing: bool = False
    """recompute the denoiser's activations in backward (memory for time)"""
    compile: bool = False
    """torch.compile the denoiser (nn.Module.compile: same parameter names). Off by default: on 2 CPU cores it does not
    pay for its compile time in a short run (docs/performance.md)
    """
    dtype: str = "bfloat16"
    """autocast dtype on a GPU (bfloat16, float16, float32); the CPU always runs float32"""
    device: str = "auto"
    """ "auto" = cuda if available, else cpu; or e.g. "cuda:1" """
    embed_cache: str | None = None
    """directory for prompt embeddings on disk (keyed by hash); null = none"""
    text_encoder_offload: bool = True
    """real backbones on a GPU: the frozen text encoders live on the CPU and visit model.device only to encode prompts
    not seen yet (FLUX.1's T5-XXL: 9.5 GB of bf16 off the GPU while training); false keeps them on the GPU"""
    vae_tiling: bool = False
    """decode latents to images tile by tile (diffusers enable_tiling): less memory at >= 1024 px, slightly different
    pixels at the tile seams; images are always decoded a few at a time"""

    def check(self) -> None:
        """This section's own rules; the backbone's rules that read other sections run in ``validate``."""
        from slas.policy import adapters

        known = adapters()
        need(self.backbone in known, f"model.backbone {self.backbone!r} is not available; known: {sorted(known)}")
        need(self.resolution >= 0 and self.max_sequence_length >= 0, "model.resolution and model.max_sequence_length "
             "must be >= 0 (0 = the backbone's default)")
        need(self.guidance_scale is None or self.guidance_scale >= 0,
             "model.guidance_scale must be >= 0 (or null = default)")
        need(self.dtype in ("bfloat16", "float16", "float32"),
             f"model.dtype must be bfloat16, float16 or float32, got {self.dtype!r}")
        need(bool(self.device), "model.device must be 'auto' or a torch device such as 'cuda:0'")
        need(all(isinstance(x, str) and x for x in self.trainable),
             "model.trainable must be a list of non-empty parameter-name substrings, e.g. [attn]")
        need(self.lora_rank >= 0, "model.lora_rank must be >= 0 (0 = full fine-tuning)")
        need(self.lora_alpha >= 0, "model.lora_alpha must be >= 0 (0 = equal to the rank)")
        need(not (self.lora_rank and self.trainable),
             "model.trainable selects base parameters for full fine-tuning; with model.lora_rank > 0 only the LoRA "
             "factors train (choose their modules with model.lora_targets)")
        need(bool(self.lora_targets) and all(isinstance(x, str) and x for x in self.lora_targets),
             "model.lora_targets must be a non-empty list of module-name suffixes, e.g. [to_q, to_k, to_v, to_out.0]")
