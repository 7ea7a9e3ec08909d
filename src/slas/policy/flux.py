"""FLUX.1 [dev] / [schnell] adapter: a rectified-flow transformer over packed VAE latents (diffusers
``FluxTransformer2DModel``), sampled with the flow SDEs of ``slas.algo.samplers`` (DanceGRPO's FLUX path,
DanceGRPO fastvideo/train_grpo_flux.py).

- Text: CLIP-L's pooled output [N, 768] (``pooled_projections``) and T5-XXL's last hidden states [N, L, 4096]
  (``encoder_hidden_states``), tokenised and encoded as ``FluxPipeline.encode_prompt`` does (diffusers 0.42
  pipeline_flux.py ``_get_clip_prompt_embeds`` / ``_get_t5_prompt_embeds``; no T5 attention mask). DanceGRPO
  precomputes them (preprocess_flux_embedding.py); ``embed_cache`` keeps them on disk.
- Latents: the sampler integrates the VAE latent [N, 16, H/8, W/8] (so ``sample.noise_pool`` and shared group
  noise act on the image grid); the transformer sees it packed into 2x2 patches, [N, (H/16)(W/16), 64] tokens
  with (0, row, col) position ids (``FluxPipeline._pack_latents`` / ``_prepare_latent_image_ids``).
- Time input: sigma in [0, 1] (the pipeline passes ``timestep / 1000``); DanceGRPO floors it to 1e-3
  (DanceGRPO train_grpo_flux.py:231-232), slas passes it exactly, as the pipeline does.
- Time shift: rollouts use ``sample.shift`` (DanceGRPO: a static 3); evaluation samples as FluxPipeline does
  (``pipeline_shift``: FLUX.1-dev's resolution-dependent dynamic shift, ``slas.policy.schedule``).
- Guidance: FLUX.1-dev is guidance-distilled: the scale enters through the guidance embedding, one forward per
  step and no CFG batch (DanceGRPO: 3.5 in sampling and training, train_grpo_flux.py:239-243, 280-284);
  FLUX.1-schnell has no guidance embedding.
"""

from __future__ import annotations

import numpy as np
import torch

from slas.algo.samplers import TimeShift
from slas.policy import common, schedule

DEFAULT_RESOLUTION = 1024  # FluxPipeline: default_sample_size 128 x vae_scale_factor 8
DEFAULT_GUIDANCE = 3.5  # DanceGRPO train_grpo_flux.py:239-243; also FluxPipeline's default
DEFAULT_MAX_SEQUENCE_LENGTH = 512  # FluxPipeline's default (DanceGRPO's preprocessing uses it)


def pack(x: torch.Tensor) -> torch.Tensor:
    """[N, C, h, w] -> [N, (h/2)(w/2), 4C]: 2x2 latent patches as tokens (FluxPipeline._pack_latents)."""
    N, C, h, w = x.shape
    return x.view(N, C, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(N, (h // 2) * (w // 2), C * 4)


def unpack(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[N, (h/2)(w/2), 4C] -> [N, C, h, w], the inverse of ``pack``."""
    N, _, D = x.shape
    return x.view(N, h // 2, w // 2, D // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(N, D // 4, h, w)


def image_ids(h: int, w: int) -> torch.Tensor:
    """[h * w, 3] rotary position ids (0, row, col) of the packed tokens (h, w: the packed grid)."""
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)


class FluxBackbone:
    """``Backbone`` over diffusers FLUX components (a local folder via ``from_config``, or the components)."""

    prediction = "velocity"

    def __init__(self, transformer, vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2, m,
                 identity: dict | None = None, scheduler_config: dict | None = None, denoiser_weights=None):
        """The components and the ``model`` config section ``m`` (slas.config.ModelConfig); ``identity`` keys the
        prompt-embedding cache (the model folder); ``scheduler_config`` is the pipeline's (``pipeline_shift``);
        ``denoiser_weights``: the transformer's folder when it was built on the meta device (FSDP2 reads its shards
        from there)."""
        resolution, guidance_scale = m.resolution or DEFAULT_RESOLUTION, m.guidance_scale
        max_sequence_length = m.max_sequence_length or DEFAULT_MAX_SEQUENCE_LENGTH
        self.device = common.resolve_device(m.device)
        self.dtype = common.compute_dtype(self.device, m.dtype)
        vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        if resolution % (2 * vae_scale):
            raise ValueError(f"model.resolution {resolution} must be a multiple of {2 * vae_scale} for FLUX "
                             f"(VAE downsampling {vae_scale} x 2x2 latent packing)")
        h = w = resolution // vae_scale
        self.sample_shape = (transformer.config.in_channels // 4, h, w)  # [16, H/8, W/8] for FLUX.1
        if transformer.config.guidance_embeds:
            self.guidance = DEFAULT_GUIDANCE if guidance_scale is None else float(guidance_scale)
        elif guidance_scale is not None:
            raise ValueError("this FLUX transformer has no guidance embedding (FLUX.1-schnell) and FLUX has no CFG "
                             "branch here: leave model.guidance_scale unset")
        else:
            self.guidance = None
        common.setup_denoiser(transformer, lora=common.lora_options(m), trainable=list(m.trainable or []),
                              gradient_checkpointing=m.gradient_checkpointing, device=self.device, dtype=self.dtype)
        self.transformer = self.module = transformer
        self.denoiser_weights = denoiser_weights
        self.vae = common.frozen(vae, self.device, self.dtype)
        if m.vae_tiling:
            self.vae.enable_tiling()
        home = common.text_encoder_device(m, self.device)
        self.text_encoder = common.frozen(text_encoder, home, self.dtype)
        self.text_encoder_2 = common.frozen(text_encoder_2, home, self.dtype)
        self.tokenizer, self.tokenizer_2 = tokenizer, tokenizer_2
        self.max_sequence_length = max_sequence_length
        self.img_ids = image_ids(h // 2, w // 2).to(self.device)  # [(h/2)(w/2), 3]
        self.scheduler_config = scheduler_config
        encode = common.offloaded(self._encode, [self.text_encoder, self.text_encoder_2], self.device)
        self._embed = common.embedder(encode, m.embed_cache, dict(identity or {}, backbone="flux", dtype=str(
            self.dtype), max_sequence_length=max_sequence_length), self.device)

    @staticmethod
    def check(cfg) -> None:
        """Config rules of this backbone (slas.config.validate calls it)."""
        common.check_diffusers(cfg, cfg_branch=False)

    @classmethod
    def from_config(cls, m, meta: bool = False) -> FluxBackbone:
        """From the ``model`` config section: components from the local diffusers folder ``model.path``; the frozen
        ones in the compute dtype. ``meta``: the transformer is built on the meta device (``common.load_denoiser``)."""
        from diffusers import AutoencoderKL, FluxTransformer2DModel
        from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

        path = common.local_dir("flux", m.path)
        device = common.resolve_device(m.device)
        transformer, weights = common.load_denoiser(FluxTransformer2DModel, path, "transformer", m, device, meta)
        dt = common.compute_dtype(device, m.dtype)
        return cls(
            transformer,
            AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dt, local_files_only=True),
            CLIPTextModel.from_pretrained(path, subfolder="text_encoder", torch_dtype=dt, local_files_only=True),
            AutoTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True),
            T5EncoderModel.from_pretrained(path, subfolder="text_encoder_2", torch_dtype=dt, local_files_only=True),
            AutoTokenizer.from_pretrained(path, subfolder="tokenizer_2", local_files_only=True),
            m, identity={"path": str(path.resolve())}, scheduler_config=schedule.read_scheduler_config(path),
            denoiser_weights=weights,
        )

    def pipeline_shift(self) -> TimeShift | None:
        """The time shift FluxPipeline samples this resolution with (``slas.policy.schedule``): FLUX.1-dev's dynamic
        e^mu at the packed token count (h/2)(w/2), mu from ``calculate_shift``; None without a scheduler config."""
        if self.scheduler_config is None:
            return None
        _, h, w = self.sample_shape
        return schedule.pipeline_shift(self.scheduler_config, (h // 2) * (w // 2))  # pipeline_flux.py:826

    # ---- Backbone protocol --------------------------------------------------------------------------

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """{"prompt_embeds": [N, L, 4096] (T5), "pooled_prompt_embeds": [N, 768] (CLIP)} in the compute dtype."""
        return self._embed(prompts)

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        clip_ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                  truncation=True, return_tensors="pt").input_ids  # [N, 77]
        t5_ids = self.tokenizer_2(prompts, padding="max_length", max_length=self.max_sequence_length,
                                  truncation=True, return_tensors="pt").input_ids  # [N, L]
        with common.autocast(self.device, self.dtype):
            pooled = self.text_encoder(clip_ids.to(self.device), output_hidden_states=False).pooler_output
            embeds = self.text_encoder_2(t5_ids.to(self.device), output_hidden_states=False)[0]
        return {"prompt_embeds": embeds.to(self.dtype), "pooled_prompt_embeds": pooled.to(self.dtype)}

    def predict(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """Velocity [N, C, h, w] fp32 at latents x [N, C, h, w] and sigma [N]."""
        N, _, h, w = x.shape
        x = x.to(self.device)
        txt_ids = torch.zeros(cond["prompt_embeds"].shape[1], 3, device=self.device)  # [L, 3]: text has no position
        guidance = None if self.guidance is None else torch.full((N,), self.guidance, device=self.device)
        with common.autocast(self.device, self.dtype):
            v = self.transformer(hidden_states=pack(x), timestep=sigma.to(self.device, torch.float32),
                                 guidance=guidance, pooled_projections=cond["pooled_prompt_embeds"],
                                 encoder_hidden_states=cond["prompt_embeds"], txt_ids=txt_ids, img_ids=self.img_ids,
                                 return_dict=False)[0]  # [N, (h/2)(w/2), 4C]
        return unpack(v.float(), h, w)

    def decode(self, x0: torch.Tensor) -> np.ndarray:
        return common.vae_decode(self.vae, x0, self.dtype)

    def reference(self):
        return common.reference(self.transformer)

    def export(self, out, info: dict):
        """A diffusers LoRA for ``FluxPipeline.load_lora_weights(out)``, or a full ``out/transformer/``."""
        from diffusers import FluxPipeline

        return common.export(self.transformer, out, pipeline_cls=FluxPipeline, lora_arg="transformer",
                             subfolder="transformer", info=info)
