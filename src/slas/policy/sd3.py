"""Stable Diffusion 3 / 3.5 adapter: an MMDiT rectified-flow transformer (diffusers ``SD3Transformer2DModel``)
with classifier-free guidance, sampled with the flow SDEs of ``slas.algo.samplers`` (Flow-GRPO's SD3.5-M path,
Flow-GRPO scripts/train_sd3.py).

- Text: three encoders, as ``StableDiffusion3Pipeline.encode_prompt`` (diffusers 0.42): CLIP-L and CLIP-G
  penultimate hidden states concatenated on channels [N, 77, 768 + 1280] and zero-padded to T5's width, then
  T5-XXL's hidden states appended on the sequence axis -> ``prompt_embeds`` [N, 77 + L, 4096]; the two CLIP
  projections concatenated -> ``pooled_prompt_embeds`` [N, 2048]. Without T5 (``text_encoder_3`` None) its part is
  zeros, as the pipeline does.
- Time input: the pipeline's timestep, sigma * 1000.
- CFG with an empty negative prompt, in rollout and in training (Flow-GRPO train_sd3.py:180-215, guidance 4.5):
  ``v = v_u + w (v_c - v_u)``. ``cfg_detach_uncond`` (Flow-GRPO: ``noise_pred_uncond.detach()``, train_sd3.py:190)
  runs the unconditional branch as its own forward under ``no_grad`` (no activations kept for it), in rollout too,
  so both passes compute the same batches and re-scoring still gives ratio 1; otherwise one forward on the
  concatenated [uncond; cond] batch with gradients through both (DanceGRPO-SD, DanceGRPO train_grpo_sd.py:594-678).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from slas.algo.samplers import TimeShift
from slas.policy import common, schedule

DEFAULT_GUIDANCE = 4.5  # Flow-GRPO config/grpo.py (all SD3.5-M recipes)
DEFAULT_MAX_SEQUENCE_LENGTH = 256  # StableDiffusion3Pipeline's default (Flow-GRPO uses 128)


class SD3Backbone:
    """``Backbone`` over diffusers SD3 components (a local folder via ``from_config``, or the components)."""

    prediction = "velocity"
    cfg = True  # a classifier-free-guidance branch (common.cfg_free switches it off)

    def __init__(self, transformer, vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2, text_encoder_3, tokenizer_3,
                 m, identity: dict | None = None, scheduler_config: dict | None = None, denoiser_weights=None):
        """The components (no T5: ``text_encoder_3`` and ``tokenizer_3`` None) and the ``model`` config section
        ``m`` (slas.config.ModelConfig); ``identity`` keys the prompt-embedding cache (the model folder);
        ``scheduler_config`` is the pipeline's (``pipeline_shift``); ``denoiser_weights``: the transformer's folder
        when it was built on the meta device (FSDP2 reads its shards from there)."""
        resolution, guidance_scale, cfg_detach_uncond = m.resolution or None, m.guidance_scale, m.cfg_detach_uncond
        max_sequence_length = m.max_sequence_length or DEFAULT_MAX_SEQUENCE_LENGTH
        self.device = common.resolve_device(m.device)
        self.dtype = common.compute_dtype(self.device, m.dtype)
        vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        patch = transformer.config.patch_size
        resolution = resolution or transformer.config.sample_size * vae_scale  # SD3.5-M: 128 x 8 = 1024
        if resolution % (vae_scale * patch):
            raise ValueError(f"model.resolution {resolution} must be a multiple of {vae_scale * patch} for SD3 "
                             f"(VAE downsampling {vae_scale} x patch size {patch})")
        self.sample_shape = (transformer.config.in_channels, resolution // vae_scale, resolution // vae_scale)
        self.guidance = DEFAULT_GUIDANCE if guidance_scale is None else float(guidance_scale)
        self.cfg_detach_uncond = cfg_detach_uncond
        common.setup_denoiser(transformer, lora=common.lora_options(m), trainable=list(m.trainable or []),
                              gradient_checkpointing=m.gradient_checkpointing, device=self.device, dtype=self.dtype)
        self.transformer = self.module = transformer
        self.denoiser_weights = denoiser_weights
        self.vae = common.frozen(vae, self.device, self.dtype)
        if m.vae_tiling:
            self.vae.enable_tiling()
        home = common.text_encoder_device(m, self.device)
        self.text_encoders = [common.frozen(e, home, self.dtype) for e in (text_encoder, text_encoder_2)]
        self.text_encoder_3 = common.frozen(text_encoder_3, home, self.dtype)
        self.tokenizers = [tokenizer, tokenizer_2]
        self.tokenizer_3 = tokenizer_3
        self.max_sequence_length = max_sequence_length
        encode = common.offloaded(self._encode, [*self.text_encoders, self.text_encoder_3], self.device)
        self._embed = common.embedder(encode, m.embed_cache, dict(identity or {}, backbone="sd3", dtype=str(
            self.dtype), max_sequence_length=max_sequence_length), self.device)
        self._negative: dict[str, torch.Tensor] | None = None
        self.scheduler_config = scheduler_config

    @staticmethod
    def check(cfg) -> None:
        """Config rules of this backbone (slas.config.validate calls it)."""
        common.check_diffusers(cfg, cfg_branch=True)

    @classmethod
    def from_config(cls, m, meta: bool = False) -> SD3Backbone:
        """From the ``model`` config section: components from the local diffusers folder ``model.path`` (a folder
        without ``text_encoder_3/`` runs without T5, as diffusers allows); the frozen components in the compute
        dtype. ``meta``: the transformer is built on the meta device (``common.load_denoiser``)."""
        from diffusers import AutoencoderKL, SD3Transformer2DModel
        from transformers import AutoTokenizer, CLIPTextModelWithProjection, T5EncoderModel

        path = common.local_dir("sd3", m.path)
        device = common.resolve_device(m.device)
        transformer, weights = common.load_denoiser(SD3Transformer2DModel, path, "transformer", m, device, meta)
        dt = common.compute_dtype(device, m.dtype)
        has_t5 = (path / "text_encoder_3").is_dir()

        def clip(sub: str):
            return CLIPTextModelWithProjection.from_pretrained(path, subfolder=sub, torch_dtype=dt, local_files_only=True)

        return cls(
            transformer,
            AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dt, local_files_only=True),
            clip("text_encoder"), AutoTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True),
            clip("text_encoder_2"), AutoTokenizer.from_pretrained(path, subfolder="tokenizer_2", local_files_only=True),
            T5EncoderModel.from_pretrained(path, subfolder="text_encoder_3", torch_dtype=dt, local_files_only=True)
            if has_t5 else None,
            AutoTokenizer.from_pretrained(path, subfolder="tokenizer_3", local_files_only=True) if has_t5 else None,
            m, identity={"path": str(path.resolve())}, scheduler_config=schedule.read_scheduler_config(path),
            denoiser_weights=weights,
        )

    def pipeline_shift(self) -> TimeShift | None:
        """The time shift StableDiffusion3Pipeline samples this resolution with (``slas.policy.schedule``): the
        config's static shift (SD3.5: 3.0), or under ``use_dynamic_shifting`` e^mu at the token count
        (h/p)(w/p) of patch size p (pipeline_stable_diffusion_3.py:1016-1028); None without a scheduler config."""
        if self.scheduler_config is None:
            return None
        _, h, w = self.sample_shape
        p = self.transformer.config.patch_size
        return schedule.pipeline_shift(self.scheduler_config, (h // p) * (w // p))

    # ---- Backbone protocol --------------------------------------------------------------------------

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """{"prompt_embeds": [N, 77 + L, D_T5], "pooled_prompt_embeds": [N, 2 x D_proj]} in the compute dtype."""
        return self._embed(prompts)

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        hidden, pooled = [], []
        with common.autocast(self.device, self.dtype):
            for tok, enc in zip(self.tokenizers, self.text_encoders, strict=True):
                ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                          return_tensors="pt").input_ids  # [N, 77]
                out = enc(ids.to(self.device), output_hidden_states=True)
                pooled.append(out[0])  # [N, D_proj] text_embeds
                hidden.append(out.hidden_states[-2])  # [N, 77, D_i] penultimate layer (clip_skip None)
            clip = torch.cat(hidden, dim=-1)  # [N, 77, D_1 + D_2]
            D = self.transformer.config.joint_attention_dim
            if self.text_encoder_3 is None:
                t5 = torch.zeros(len(prompts), self.max_sequence_length, D, device=self.device, dtype=clip.dtype)
            else:
                ids = self.tokenizer_3(prompts, padding="max_length", max_length=self.max_sequence_length,
                                       truncation=True, add_special_tokens=True, return_tensors="pt").input_ids
                t5 = self.text_encoder_3(ids.to(self.device))[0]  # [N, L, D]
            clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))  # [N, 77, D]
        return {"prompt_embeds": torch.cat([clip, t5.to(clip.dtype)], dim=-2).to(self.dtype),
                "pooled_prompt_embeds": torch.cat(pooled, dim=-1).to(self.dtype)}

    def _forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        with common.autocast(self.device, self.dtype):
            out = self.transformer(hidden_states=x, timestep=sigma * 1000, encoder_hidden_states=cond["prompt_embeds"],
                                   pooled_projections=cond["pooled_prompt_embeds"], return_dict=False)[0]
        return out.float()

    def negative(self, n: int) -> dict[str, torch.Tensor]:
        """Conditioning of the empty negative prompt, [n, ...] (encoded once)."""
        if self._negative is None:
            self._negative = self.encode_prompts([""])
        return {k: v.expand(n, *v.shape[1:]) for k, v in self._negative.items()}

    def predict(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """Velocity [N, C, h, w] fp32 at latents x [N, C, h, w] and sigma [N], after CFG."""
        N = x.shape[0]
        x, sigma = x.to(self.device), sigma.to(self.device, torch.float32)
        if self.guidance <= 1:
            return self._forward(x, sigma, cond)
        return common.guided(self._forward, x, sigma, cond, self.negative(N), self.guidance, self.cfg_detach_uncond)

    def decode(self, x0: torch.Tensor) -> np.ndarray:
        return common.vae_decode(self.vae, x0, self.dtype)

    def reference(self):
        return common.reference(self.transformer)

    def export(self, out, info: dict):
        """A diffusers LoRA for ``StableDiffusion3Pipeline.load_lora_weights(out)``, or a full ``out/transformer/``."""
        from diffusers import StableDiffusion3Pipeline

        return common.export(self.transformer, out, pipeline_cls=StableDiffusion3Pipeline, lora_arg="transformer",
                             subfolder="transformer", info=info)
