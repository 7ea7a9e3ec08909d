"""The published architectures the paper's recipes train and score, and real-width random pipelines built from them.

``benchmarks/configs/*.json`` hold the architecture configs of FLUX.1-dev's transformer, T5-XXL and CLIP-L text
encoders and VAE, SD1.4's UNet and HPS-v2.1's ViT-H-14, each citing its source. Here they are

- counted on the meta device (nothing allocated: ``counts``);
- built at their real width and a reduced depth, with random weights, and saved as local diffusers folders that
  ``slas train`` loads like the real ones (``flux_folder``, ``sd_folder``): FLUX with ``double`` + ``single``
  transformer blocks, the SD1.4 UNet with its first ``levels`` resolution levels of ``layers`` layers each. The real
  FLUX VAE and SD VAE come with them at their real size (they are what the decode phase measures); the text encoders
  are one-layer stand-ins with the real output widths (CLIP-L 768, T5-XXL 4096: what the denoiser consumes), since
  the prompts are encoded once and cached (their real sizes enter the predictions from ``counts``).

Used by benchmarks/memory_real.py (CPU measurements) and benchmarks/gpu_check.py (the GPU check).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import torch
from torch import nn

CONFIGS = Path(__file__).resolve().parent / "configs"
MODELS = {  # short name -> its config file
    "flux": "flux1_dev_transformer", "t5_xxl": "flux1_dev_text_encoder_2", "clip_l": "flux1_dev_text_encoder",
    "flux_vae": "flux1_dev_vae", "sd14_unet": "sd14_unet", "hps_vit_h_14": "hps_v21_vit_h_14",
}
_CONFIG_CLASSES = {"T5EncoderModel": "T5Config", "CLIPTextModel": "CLIPTextConfig", "CLIPModel": "CLIPConfig"}
SD_LEVELS = 4  # SD1.4's resolution levels (block_out_channels 320, 640, 1280, 1280)


def spec(name: str) -> dict:
    """The JSON file of model ``name`` (a key of ``MODELS``): comment, class and config."""
    return json.loads((CONFIGS / f"{MODELS[name]}.json").read_text())


def build(name: str, device: str = "meta", dtype: torch.dtype = torch.float32, **overrides) -> nn.Module:
    """Model ``name`` from its published config with ``overrides``, on ``device`` (meta: no memory)."""
    s = spec(name)
    module, cls_name = s["class"].rsplit(".", 1)
    lib = importlib.import_module(module)
    cfg = dict(s["config"], **overrides)
    with torch.device(device):
        if module == "transformers":
            model = getattr(lib, cls_name)(getattr(lib, _CONFIG_CLASSES[cls_name])(**cfg))
        else:
            model = getattr(lib, cls_name).from_config(cfg)
    if dtype != torch.float32:  # every parameter: these models keep no module in fp32
        for p in model.parameters():
            p.data = p.data.to(dtype)
    return model


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def sd_overrides(levels: int, layers: int) -> dict:
    """SD1.4's UNet config keeping its first ``levels`` resolution levels (their real channels and block types,
    outermost first), ``layers`` resnet (+ attention) layers per level."""
    full = spec("sd14_unet")["config"]
    down = full["down_block_types"][: levels - 1] + ["DownBlock2D"]  # the innermost level has no attention
    up = ["UpBlock2D"] + full["up_block_types"][SD_LEVELS - levels + 1:]
    return {"block_out_channels": full["block_out_channels"][:levels], "down_block_types": down,
            "up_block_types": up, "layers_per_block": layers}


def counts() -> dict[str, int]:
    """Parameters of each published model, FLUX's per block and outside the blocks, and its LoRA r128 factors
    (DanceGRPO's LoRA script: to_q, to_k, to_v, to_out.0)."""
    out = {name: n_params(build(name)) for name in MODELS}
    flux = build("flux", num_layers=1, num_single_layers=1)
    out["flux_double_block"] = n_params(flux.transformer_blocks[0])
    out["flux_single_block"] = n_params(flux.single_transformer_blocks[0])
    out["flux_outside_blocks"] = n_params(flux) - out["flux_double_block"] - out["flux_single_block"]
    with torch.device("meta"):
        from peft import LoraConfig, get_peft_model_state_dict

        full = build("flux")
        full.add_adapter(LoraConfig(r=128, lora_alpha=256, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        out["flux_lora128"] = sum(v.numel() for v in get_peft_model_state_dict(full).values())
    return out


# ----------------------------------------------------------------------------
# Random real-width pipelines on disk
# ----------------------------------------------------------------------------


def _tokenizers(prompts: list[str]):
    """(CLIP, T5) tokenizers trained in-process on ``prompts``: the tests' tiny tokenizers (tests/_tinypipes.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _tinypipes import tokenizers

    return tokenizers(prompts)


def _clip_text(tok, width: int, projection: bool = False):
    """A one-layer CLIP text encoder whose outputs have the real width ``width``."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=len(tok), hidden_size=width, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=8, max_position_embeddings=77, projection_dim=width,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def _t5(tok, width: int):
    """A one-layer T5 encoder whose hidden states have the real width ``width`` (T5-XXL: 4096)."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=len(tok), d_model=width, d_kv=16, d_ff=64, num_layers=1, num_heads=2,
                                   relative_attention_num_buckets=8, relative_attention_max_distance=32,
                                   dropout_rate=0.0, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
                                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))


@torch.no_grad()
def _randomise(module: nn.Module, seed: int) -> nn.Module:
    """Small random weights (normal, std 0.02), norms at 1 and biases at 0: finite activations at any depth."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if name.endswith("bias"):
            p.zero_()
        elif p.dim() == 1:
            p.fill_(1.0)
        else:
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return module


def _real_width(name: str, dtype: torch.dtype, seed: int, **overrides) -> nn.Module:
    """Model ``name`` at its real width with ``overrides``, random weights in ``dtype``, allocated once."""
    model = build(name, dtype=dtype, **overrides)
    model.to_empty(device="cpu")
    return _randomise(model, seed)


def flux_folder(out: Path, double: int, single: int, prompts: list[str], dtype: torch.dtype = torch.bfloat16) -> Path:
    """A FLUX.1-dev diffusers folder with ``double`` + ``single`` transformer blocks at the real width (3072), the
    real VAE, one-layer text encoders of the real output widths and FLUX.1-dev's scheduler config; weights random,
    stored in ``dtype`` (slas reads them into fp32 master weights)."""
    import diffusers as d

    clip_tok, t5_tok = _tokenizers(prompts)
    transformer = _real_width("flux", dtype, 0, num_layers=double, num_single_layers=single)
    vae = _real_width("flux_vae", dtype, 1)
    sched = d.FlowMatchEulerDiscreteScheduler(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096,
                                              max_shift=1.15, num_train_timesteps=1000, shift=3.0,
                                              use_dynamic_shifting=True)  # FLUX.1-dev scheduler_config.json
    d.FluxPipeline(scheduler=sched, vae=vae, text_encoder=_clip_text(clip_tok, 768), tokenizer=clip_tok,
                   text_encoder_2=_t5(t5_tok, 4096), tokenizer_2=t5_tok, transformer=transformer).save_pretrained(out)
    return out


def sd_folder(out: Path, levels: int, layers: int, prompts: list[str], dtype: torch.dtype = torch.bfloat16) -> Path:
    """An SD1.4 diffusers folder whose UNet keeps the first ``levels`` resolution levels at their real channels with
    ``layers`` layers each (``sd_overrides``), SD1.4's VAE (the FLUX VAE's architecture with 4 latent channels and
    its quant convs) and a one-layer CLIP text encoder of width 768; weights random, stored in ``dtype``."""
    import diffusers as d

    clip_tok, _ = _tokenizers(prompts)
    unet = _real_width("sd14_unet", dtype, 0, **sd_overrides(levels, layers))
    vae = _real_width("flux_vae", dtype, 1, latent_channels=4, use_quant_conv=True, use_post_quant_conv=True,
                      scaling_factor=0.18215, shift_factor=None, force_upcast=True, sample_size=512)
    sched = d.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                            set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")  # SD1.4's betas
    d.StableDiffusionPipeline(vae=vae, text_encoder=_clip_text(clip_tok, 768), tokenizer=clip_tok, unet=unet,
                              scheduler=sched, safety_checker=None, feature_extractor=None, image_encoder=None,
                              requires_safety_checker=False).save_pretrained(out)
    return out


def clip_reward(out: Path, prompts: list[str], real: bool = False, dtype: torch.dtype = torch.float32) -> Path:
    """A random CLIPModel with its tokenizer for the ``clip_score`` reward: small (224 px, patch 32) for the CPU
    runs, whose predictions count HPS-v2.1's ViT-H-14 from its parameters; ``real``: HPS-v2.1's ViT-H-14 sizes
    (the GPU check), stored in ``dtype``."""
    from transformers import CLIPConfig, CLIPModel

    tok, _ = _tokenizers(prompts)
    if real:
        model = _real_width("hps_vit_h_14", dtype, 2)  # the small tokenizer's ids index its first embeddings
    else:
        torch.manual_seed(2)
        text = _clip_text(tok, 64).config.to_dict()
        vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                      image_size=224, patch_size=32, num_channels=3)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=64))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
