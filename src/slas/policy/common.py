"""What the backbone adapters share: LoRA / full fine-tuning setup, device and precision, the KL reference
without a second copy, VAE decoding, an on-disk prompt-embedding cache and the diffusers export.

Functions, not a base class: each adapter (toy.py, flux.py, sd3.py, sd.py) stays one readable file behind the
``Backbone`` protocol and calls what it needs from here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# where the weights of each real backbone come from (docs/real-models.md); only used in error messages
HUB_IDS = {
    "flux": "black-forest-labs/FLUX.1-dev",
    "sd3": "stabilityai/stable-diffusion-3.5-medium",
    "sd": "CompVis/stable-diffusion-v1-4",
}


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3]."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


# ----------------------------------------------------------------------------
# Loading, device, precision
# ----------------------------------------------------------------------------


def local_dir(backbone: str, path: str | None) -> Path:
    """The local diffusers folder of ``model.path``; a missing path, or a folder that is not a whole diffusers folder
    (``diffusers_folder_problem``), is an error that says what to do."""
    if not path:
        raise ValueError(f"model.path is not set: backbone {backbone!r} loads its weights from a local diffusers folder "
                         "(docs/real-models.md)")
    p = Path(path).expanduser()
    problem = diffusers_folder_problem(p)
    if problem:
        hint = f", e.g. `hf download {HUB_IDS[backbone]} --local-dir {p}`" if backbone in HUB_IDS else ""
        raise FileNotFoundError(f"model.path {str(p)!r} {problem}: backbone {backbone!r} loads only from a local "
                                f"diffusers folder (model_index.json, transformer/ or unet/, vae/, ...); download it "
                                f"first{hint} (docs/real-models.md)")
    return p


# the subfolders of a diffusers folder that the adapters load (flux.py, sd3.py, sd.py from_config; the scheduler's config
# for eval.shift auto, policy/schedule.py)
LOADED_COMPONENTS = ("transformer", "unet", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
                     "text_encoder_3", "tokenizer_3", "scheduler")


def diffusers_folder_problem(path: Path) -> str | None:
    """What keeps ``path`` from being a diffusers folder as ``save_pretrained`` writes it (None when nothing does): not
    a directory, no ``model_index.json`` (an empty or unfinished download), or a component folder that
    ``model_index.json`` names missing. Checked before anything loads, so that a bad folder is one line naming it,
    not a diffusers traceback after minutes of loading the other components."""
    if not path.is_dir():
        return "is not a directory"
    index = path / "model_index.json"
    if not index.is_file():
        return "holds no model_index.json" + (" (the folder is empty)" if not any(path.iterdir()) else "")
    try:
        components = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"has an unreadable model_index.json ({e})"
    # model_index.json: {"unet": ["diffusers", "UNet2DConditionModel"], "safety_checker": [null, null], "_class_name":
    # ...}; a component saved as null is not on disk, and one the adapters never load (a safety checker) may be left out
    missing = [k for k, v in components.items() if k in LOADED_COMPONENTS and isinstance(v, list) and len(v) == 2
               and v[0] is not None and not (path / k).is_dir()]
    if missing:
        return f"lacks {', '.join(m + '/' for m in missing)} (named in its model_index.json; an unfinished download?)"
    return None


def resolve_device(name: str) -> torch.device:
    """``model.device``: "auto" = the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"model.device {name!r} asked for, but torch sees no CUDA device")
    return dev


# Tests only: with SLAS_CPU_AUTOCAST=1 the CPU honours model.dtype too, so the bf16 / fp16 paths (frozen LoRA base
# in that dtype, autocast forwards, fp32 steps) run without a GPU, at a fraction of fp32's speed (CONTRIBUTING.md).
CPU_AUTOCAST_ENV = "SLAS_CPU_AUTOCAST"


def compute_dtype(device: torch.device, name: str) -> torch.dtype:
    """The autocast dtype (``model.dtype``) on a GPU; float32 on the CPU, which has no fast bf16/fp16 matmul, unless
    ``SLAS_CPU_AUTOCAST=1`` (tests of the low-precision paths)."""
    on_cpu = os.environ.get(CPU_AUTOCAST_ENV) == "1"
    return _DTYPES[name] if device.type == "cuda" or on_cpu else torch.float32


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision for the forward passes (DanceGRPO: bf16 autocast over fp32 master weights,
    DanceGRPO train_grpo_flux.py:699-703, fsdp_util.py:56-117); a no-op in fp32."""
    if dtype != torch.float32:
        return torch.autocast(device.type, dtype=dtype)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------
# What trains: LoRA or (a subset of) the full model
# ----------------------------------------------------------------------------


def add_lora(module: nn.Module, rank: int, alpha: float, targets: list[str]) -> None:
    """Inject peft LoRA factors into ``module`` and freeze everything else. B starts at 0, so the
    adapted model is the base model until the first update (the KL reference is that start)."""
    try:
        from peft import LoraConfig
    except ImportError:
        raise ImportError("model.lora_rank > 0 needs peft: pip install peft") from None
    names = [n for n, _ in module.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ValueError(f"model.lora_targets {missing} match no module of the {type(module).__name__}")
    module.requires_grad_(False)
    module.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=True))
    for n, p in module.named_parameters():
        p.requires_grad_("lora_" in n)


def check_diffusers(cfg, cfg_branch: bool = True) -> None:
    """The config rules of every diffusers backbone (``Adapter.check``): ValueError naming the field and why."""
    m, name = cfg.model, cfg.model.backbone

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ValueError(msg)

    # the weights themselves are only looked for when the model loads
    need(bool(m.path), f"model.path must name the local diffusers folder of backbone {name!r} (docs/real-models.md)")
    need(m.checkpoint is None, f"model.checkpoint is the ShapesWorld model's; backbone {name!r} loads model.path")
    need(not m.train_text_encoder, f"model.train_text_encoder: backbone {name!r} keeps its text encoders frozen "
         "(prompt embeddings are cached, as DanceGRPO / Flow-GRPO precompute them)")
    need(cfg.data.prompts is not None, f"data.prompts must name a prompt file for backbone {name!r} (a world's "
         "prompts, e.g. ShapesWorld's, are for its own backbone)")
    need(cfg.data.eval_prompts is not None, f"data.eval_prompts must name held-out prompts for backbone {name!r}: "
         "a world's evaluation (e.g. the ShapesWorld verifier) only judges that world's images")
    need(cfg_branch or not m.cfg_detach_uncond, f"model.cfg_detach_uncond: backbone {name!r} has no CFG branch "
         "(FLUX.1-dev's guidance is an embedding)")
    # the sampler integrates the latent, whose side is resolution / 8 (the sampler checks the actual shape)
    need(m.resolution == 0 or (m.resolution // 8) % cfg.sample.noise_pool == 0,
         f"sample.noise_pool must divide the latent side model.resolution / 8, got {cfg.sample.noise_pool}")


def lora_options(model_cfg) -> dict | None:
    """``add_lora`` keyword arguments from the ``model`` config section; None for full fine-tuning."""
    m = model_cfg
    return {"rank": m.lora_rank, "alpha": m.lora_alpha or m.lora_rank, "targets": list(m.lora_targets)} if m.lora_rank else None


def load_denoiser(cls, path: Path, subfolder: str, m, device: torch.device, meta: bool) -> tuple[nn.Module, Path | None]:
    """The denoiser ``cls`` (a diffusers model class) of the folder ``path/subfolder`` and, when built on the meta
    device, the folder its weights are read from later (``slas.recipe.parallel.load_shards_from_safetensors``).

    ``meta`` (FSDP2 full fine-tuning): built from its config on the meta device, so no process ever holds the whole
    model; each rank then reads only its shards. Otherwise loaded whole: a LoRA base directly in the compute dtype
    (it is stored so anyway: FLUX.1 in fp32 is 48 GB of host memory), a fully trained model in fp32."""
    if meta and not m.lora_rank:
        config = cls.load_config(path, subfolder=subfolder, local_files_only=True)
        with torch.device("meta"):
            return cls.from_config(config), path / subfolder
    dtype = compute_dtype(device, m.dtype) if m.lora_rank else torch.float32
    return cls.from_pretrained(path, subfolder=subfolder, torch_dtype=dtype, local_files_only=True), None


def setup_denoiser(module: nn.Module, *, lora: dict | None, trainable: list[str], gradient_checkpointing: bool,
                   device: torch.device, dtype: torch.dtype) -> None:
    """Make ``module`` (a diffusers transformer or UNet) the trained policy, in place.

    LoRA: base frozen, factors trained; full fine-tuning: every parameter (or those whose name contains one of
    ``trainable``). Trained parameters stay float32 (the optimizer's master weights); with LoRA on a GPU the
    frozen base is stored in the autocast ``dtype`` (half the memory; autocast computes in it anyway). A module on
    the meta device stays there (its shards are allocated when sharded).
    """
    if lora:
        add_lora(module, **lora)
    else:
        module.requires_grad_(not trainable)
        for name, p in module.named_parameters():
            if trainable and any(s in name for s in trainable):
                p.requires_grad_(True)
        if not any(p.requires_grad for p in module.parameters()):
            raise ValueError(f"model.trainable {trainable} matches no parameter name of the {type(module).__name__}")
    if gradient_checkpointing:
        module.enable_gradient_checkpointing()  # recompute activations in backward (diffusers ModelMixin)
    if not any(p.is_meta for p in module.parameters()):
        module.to(device)
    for p in module.parameters():
        p.data = p.data.to(torch.float32 if p.requires_grad or not lora else dtype)


def text_encoder_device(m, device: torch.device) -> torch.device:
    """Where the frozen text encoders live: the CPU with ``model.text_encoder_offload`` on a GPU, else ``device``."""
    return torch.device("cpu") if m.text_encoder_offload else device


def offloaded(encode: Callable[[list[str]], dict[str, torch.Tensor]], modules: list[nn.Module | None],
              device: torch.device) -> Callable[[list[str]], dict[str, torch.Tensor]]:
    """``encode`` with the text encoders ``modules`` moved to ``device`` for the call and back to the CPU after it,
    when they live on the CPU (``text_encoder_device``) and ``device`` is not the CPU; else ``encode`` itself."""
    mods = [m for m in modules if m is not None]
    if device.type == "cpu" or not mods or next(mods[0].parameters()).device.type != "cpu":
        return encode

    def run(prompts: list[str]) -> dict[str, torch.Tensor]:
        for mod in mods:
            mod.to(device)
        try:
            return encode(prompts)
        finally:
            for mod in mods:
                mod.to("cpu")

    return run


def frozen(module: nn.Module | None, device: torch.device, dtype: torch.dtype) -> nn.Module | None:
    """A frozen component (text encoder, VAE) in eval mode on ``device``, stored in ``dtype``."""
    if module is None:
        return None
    module.to(device)
    if any(p.dtype != dtype for p in module.parameters()):
        module.to(dtype)
    return module.eval().requires_grad_(False)


@contextlib.contextmanager
def adapters_disabled(module: nn.Module):
    """Run ``module`` with its peft LoRA adapters switched off: the base model, i.e. the KL reference policy,
    with no second copy of the weights (Flow-GRPO ``disable_adapter()``, train_sd3.py:875-878). Restores the
    adapters (and their requires_grad) on exit."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
    for m in layers:
        m.enable_adapters(False)
    try:
        yield
    finally:
        for m in layers:
            m.enable_adapters(True)


def has_lora(module: nn.Module) -> bool:
    return bool(getattr(module, "peft_config", None))


def reference(module: nn.Module):
    """``Backbone.reference()``: a context manager running the KL reference (LoRA off), or None for full
    fine-tuning, where the recipe keeps a frozen copy of the starting weights instead."""
    return adapters_disabled(module) if has_lora(module) else None


# ----------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------


def guided(forward: Callable, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor],
           uncond: dict[str, torch.Tensor], scale: float, detach_uncond: bool) -> torch.Tensor:
    """Classifier-free guidance ``out_u + scale * (out_c - out_u)`` [N, ...] of ``forward(x, t, cond)``.

    ``detach_uncond`` runs the unconditional branch under no_grad (Flow-GRPO detaches it but still pays its
    backward); otherwise both branches run as one batch of 2N with gradients through both."""
    if detach_uncond:
        with torch.no_grad():
            out_u = forward(x, t, uncond)
        out_c = forward(x, t, cond)
    else:
        both = {k: torch.cat([uncond[k], cond[k]]) for k in cond}
        out_u, out_c = forward(torch.cat([x, x]), torch.cat([t, t]), both).chunk(2)  # [N, ...] each
    return out_u + scale * (out_c - out_u)


@contextlib.contextmanager
def cfg_free(backbone):
    """Within: ``backbone.predict`` is the conditional branch alone (CFG off). The forward-process objectives train
    the conditional velocity without guidance, as DiffusionNFT does (its configs set guidance_scale 1.0 in training,
    config/nft.py); rollouts and evaluation keep the configured guidance. Adapters with a CFG branch declare
    ``cfg = True`` and read ``guidance`` (<= 1 is no CFG); FLUX's guidance embedding is part of its conditional
    model, not CFG, and is untouched."""
    if not getattr(backbone, "cfg", False):
        yield
        return
    saved = backbone.guidance
    backbone.guidance = 1.0
    try:
        yield
    finally:
        backbone.guidance = saved


@torch.no_grad()
def vae_decode(vae, latents: torch.Tensor, dtype: torch.dtype, batch_size: int = 4) -> np.ndarray:
    """Latents [N, C, h, w] in the denoiser's space -> uint8 [N, H, W, 3]: undo the VAE's scaling and shift
    (``latents / scaling_factor + shift_factor``, as the diffusers pipelines do) and decode in chunks (the VAE
    decoder's activations at 1024 px are the largest tensors of a rollout)."""
    cfg = vae.config
    shift = cfg.shift_factor if getattr(cfg, "shift_factor", None) is not None else 0.0
    out = []
    for lo in range(0, latents.shape[0], batch_size):
        z = latents[lo : lo + batch_size].to(vae.device) / cfg.scaling_factor + shift
        with autocast(vae.device, dtype):
            out.append(to_uint8(vae.decode(z.to(vae.dtype), return_dict=False)[0]))
    return np.concatenate(out)


# ----------------------------------------------------------------------------
# Prompt embeddings on disk
# ----------------------------------------------------------------------------


class EmbedCache:
    """Prompt embeddings on disk, one safetensors file per prompt, named by sha256 of the encoder's identity and
    the prompt. DanceGRPO precomputes FLUX's T5/CLIP embeddings for its whole prompt file before training
    (DanceGRPO fastvideo/data_preprocess/preprocess_flux_embedding.py:93-124); here the cache fills in on first use, so the text
    encoders run once per prompt across runs. ``identity`` must change whenever the embeddings would (model path,
    sequence length, ...). Files are written atomically (temporary name, then rename)."""

    def __init__(self, root: str | Path, identity: dict):
        self.root = Path(root).expanduser()
        self.identity = json.dumps(identity, sort_keys=True)

    def path(self, prompt: str) -> Path:
        key = hashlib.sha256(f"{self.identity}\0{prompt}".encode()).hexdigest()
        return self.root / key[:2] / f"{key}.safetensors"

    def __call__(self, prompts: list[str], encode: Callable[[list[str]], dict[str, torch.Tensor]],
                 device: torch.device) -> dict[str, torch.Tensor]:
        """``encode``'s output for ``prompts`` ([N, ...] per key), computing only prompts not on disk yet."""
        from safetensors.torch import load_file, save_file

        uniq = list(dict.fromkeys(prompts))
        missing = [p for p in uniq if not self.path(p).is_file()]
        if missing:
            enc = encode(missing)
            for i, p in enumerate(missing):
                f = self.path(p)
                f.parent.mkdir(parents=True, exist_ok=True)
                tmp = f.with_suffix(f".tmp{os.getpid()}")
                save_file({k: v[i].detach().contiguous().cpu() for k, v in enc.items()}, str(tmp))
                os.replace(tmp, f)
        loaded = {p: load_file(str(self.path(p))) for p in uniq}
        keys = loaded[uniq[0]].keys()
        return {k: torch.stack([loaded[p][k] for p in prompts]).to(device) for k in keys}


def embedder(encode: Callable[[list[str]], dict[str, torch.Tensor]], cache_dir: str | None, identity: dict,
             device: torch.device) -> Callable[[list[str]], dict[str, torch.Tensor]]:
    """An adapter's prompt encoder: ``encode`` itself, or through an ``EmbedCache`` in ``cache_dir``
    (``model.embed_cache``) when one is set."""
    if not cache_dir:
        return encode
    cache = EmbedCache(cache_dir, identity)
    return lambda prompts: cache(prompts, encode, device)


# ----------------------------------------------------------------------------
# Export for stock diffusers pipelines
# ----------------------------------------------------------------------------


def export(module: nn.Module, out: str | Path, *, pipeline_cls, lora_arg: str, subfolder: str,
           info: dict) -> list[Path]:
    """Write what a stock diffusers pipeline loads: for LoRA runs ``pytorch_lora_weights.safetensors`` (with the
    LoraConfig as adapter metadata, so a lora_alpha != rank loads with the right scale) for
    ``pipeline.load_lora_weights(out)``; for full fine-tuning ``out/<subfolder>/`` by ``save_pretrained`` (load
    it with ``<Model>.from_pretrained(out, subfolder=...)`` and pass it to the pipeline). ``info`` goes to
    ``out/slas_export.json``. Returns the written paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if has_lora(module):
        from peft.utils import get_peft_model_state_dict

        layers = {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(module).items()}
        meta = module.peft_config["default"].to_dict()
        pipeline_cls.save_lora_weights(out, **{f"{lora_arg}_lora_layers": layers,
                                               f"{lora_arg}_lora_adapter_metadata": meta})
        written = [out / "pytorch_lora_weights.safetensors"]
        kind = "lora"
    else:
        module.save_pretrained(out / subfolder)
        written = [out / subfolder]
        kind = "full"
    (out / "slas_export.json").write_text(json.dumps(dict(info, kind=kind, pipeline=pipeline_cls.__name__,
                                                          subfolder=subfolder), indent=2) + "\n")
    return [*written, out / "slas_export.json"]
