"""Stable Diffusion 1.x adapter: an epsilon-prediction UNet (diffusers ``UNet2DConditionModel``) with
classifier-free guidance, sampled with DDIM-eta (DanceGRPO's SD1.4 path, DDPO-derived, DanceGRPO fastvideo/train_grpo_sd.py).

- Text: CLIP-L's last hidden states [N, 77, 768], as ``StableDiffusionPipeline.encode_prompt`` (diffusers 0.42;
  no clip skip; the attention mask only when the text encoder's config asks for it).
- Time input: the DDPM timestep of the DDIM schedule (``slas.algo.samplers.ddim_alphas``: leading spacing with
  steps_offset 1, SD1.x's scheduler config); the schedule's alpha-bars come from the folder's scheduler betas,
  read into a ``DDIMScheduler`` as DanceGRPO does (train_grpo_sd.py:140).
- CFG with an empty negative prompt (DanceGRPO-SD: 5.0, both branches with gradients, train_grpo_sd.py:594-678);
  ``cfg_detach_uncond`` runs the unconditional branch under ``no_grad`` as its own forward (see sd3.py).
"""

from __future__ import annotations

import numpy as np
import torch

from slas.policy import common

DEFAULT_GUIDANCE = 5.0  # DanceGRPO config_sd/base.py (sample.guidance_scale), DDPO config/base.py


class SDBackbone:
    """``Backbone`` over diffusers SD1.x components (a local folder via ``from_config``, or the components)."""

    prediction = "epsilon"
    cfg = True  # a classifier-free-guidance branch (common.cfg_free switches it off)

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler, m, identity: dict | None = None,
                 denoiser_weights=None):
        """The components and the ``model`` config section ``m`` (slas.config.ModelConfig); ``identity`` keys the
        prompt-embedding cache (the model folder); ``denoiser_weights``: the UNet's folder when it was built on the
        meta device (FSDP2 reads its shards from there)."""
        resolution, guidance_scale, cfg_detach_uncond = m.resolution or None, m.guidance_scale, m.cfg_detach_uncond
        pred = scheduler.config.get("prediction_type", "epsilon")
        if pred != "epsilon":
            raise ValueError(f"the scheduler config says prediction_type {pred!r}; the SD1.x adapter and its DDIM "
                             "sampler need epsilon prediction (SD 2.x 768-v models predict v)")
        self.device = common.resolve_device(m.device)
        self.dtype = common.compute_dtype(self.device, m.dtype)
        vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        resolution = resolution or unet.config.sample_size * vae_scale  # SD1.4: 64 x 8 = 512
        if resolution % vae_scale:
            raise ValueError(f"model.resolution {resolution} must be a multiple of the VAE downsampling {vae_scale}")
        self.sample_shape = (unet.config.in_channels, resolution // vae_scale, resolution // vae_scale)
        self.alphas_cumprod = scheduler.alphas_cumprod.float()  # [L] the DDIM schedule (sampler_for)
        self.guidance = DEFAULT_GUIDANCE if guidance_scale is None else float(guidance_scale)
        self.cfg_detach_uncond = cfg_detach_uncond
        common.setup_denoiser(unet, lora=common.lora_options(m), trainable=list(m.trainable or []),
                              gradient_checkpointing=m.gradient_checkpointing, device=self.device, dtype=self.dtype)
        self.unet = self.module = unet
        self.denoiser_weights = denoiser_weights
        self.vae = common.frozen(vae, self.device, self.dtype)
        if m.vae_tiling:
            self.vae.enable_tiling()
        self.text_encoder = common.frozen(text_encoder, common.text_encoder_device(m, self.device), self.dtype)
        self.tokenizer = tokenizer
        encode = common.offloaded(self._encode, [self.text_encoder], self.device)
        self._embed = common.embedder(encode, m.embed_cache, dict(identity or {}, backbone="sd", dtype=str(self.dtype)),
                                      self.device)
        self._negative: dict[str, torch.Tensor] | None = None

    @staticmethod
    def check(cfg) -> None:
        """Config rules of this backbone (slas.config.validate calls it)."""
        common.check_diffusers(cfg, cfg_branch=True)

    @classmethod
    def from_config(cls, m, meta: bool = False) -> SDBackbone:
        """From the ``model`` config section: components from the local diffusers folder ``model.path``; the frozen
        ones in the compute dtype. ``meta``: the UNet is built on the meta device (``common.load_denoiser``)."""
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, CLIPTextModel

        path = common.local_dir("sd", m.path)
        device = common.resolve_device(m.device)
        unet, weights = common.load_denoiser(UNet2DConditionModel, path, "unet", m, device, meta)
        dt = common.compute_dtype(device, m.dtype)
        return cls(
            unet,
            AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dt, local_files_only=True),
            CLIPTextModel.from_pretrained(path, subfolder="text_encoder", torch_dtype=dt, local_files_only=True),
            AutoTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True),
            DDIMScheduler.from_pretrained(path, subfolder="scheduler", local_files_only=True),
            m, identity={"path": str(path.resolve())}, denoiser_weights=weights,
        )

    # ---- Backbone protocol --------------------------------------------------------------------------

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """{"prompt_embeds": [N, 77, 768]} in the compute dtype."""
        return self._embed(prompts)

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
                             return_tensors="pt")
        mask = tok.attention_mask.to(self.device) if getattr(self.text_encoder.config, "use_attention_mask", False) else None
        with common.autocast(self.device, self.dtype):
            emb = self.text_encoder(tok.input_ids.to(self.device), attention_mask=mask)[0]  # [N, 77, 768]
        return {"prompt_embeds": emb.to(self.dtype)}

    def _forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        with common.autocast(self.device, self.dtype):
            out = self.unet(x, t, encoder_hidden_states=cond["prompt_embeds"], return_dict=False)[0]
        return out.float()

    def negative(self, n: int) -> dict[str, torch.Tensor]:
        """Conditioning of the empty negative prompt, [n, ...] (encoded once)."""
        if self._negative is None:
            self._negative = self.encode_prompts([""])
        return {k: v.expand(n, *v.shape[1:]) for k, v in self._negative.items()}

    def predict(self, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """Epsilon [N, C, h, w] fp32 at latents x [N, C, h, w] and DDPM timesteps t [N], after CFG."""
        N = x.shape[0]
        x, t = x.to(self.device), t.to(self.device)
        if self.guidance <= 1:
            return self._forward(x, t, cond)
        return common.guided(self._forward, x, t, cond, self.negative(N), self.guidance, self.cfg_detach_uncond)

    def decode(self, x0: torch.Tensor) -> np.ndarray:
        return common.vae_decode(self.vae, x0, self.dtype)

    def reference(self):
        return common.reference(self.unet)

    def export(self, out, info: dict):
        """A diffusers LoRA for ``StableDiffusionPipeline.load_lora_weights(out)``, or a full ``out/unet/``."""
        from diffusers import StableDiffusionPipeline

        return common.export(self.unet, out, pipeline_cls=StableDiffusionPipeline, lora_arg="unet", subfolder="unet",
                             info=info)
