"""Parameter counts of the real backbones and a GPU-memory estimate per shipped recipe (docs/real-models.md).

Every model is built on the ``meta`` device from its published architecture config (values written out below,
from the models' config.json files on the Hugging Face hub, not downloaded here), so nothing is allocated and
no weights are needed. LoRA factors are counted by injecting the recipe's peft adapter into the meta model.

The memory figure is an **estimate**, not a measurement: bytes of weights, gradients and AdamW state by
dtype, plus the stored trajectory; activations are not modelled (they depend on resolution, micro-batch and
gradient checkpointing) and are left as the headroom column of the docs.

    .venv/bin/python benchmarks/memory_estimate.py
"""

from __future__ import annotations

import torch

GB = 1e9

FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=[16, 56, 56])
SD35_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                   num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                   pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=384,
                   dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")
SD14_UNET = dict(sample_size=64, cross_attention_dim=768)  # UNet2DConditionModel's defaults are SD1.x's
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, projection_dim=768)
CLIP_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              max_position_embeddings=77, projection_dim=1280, hidden_act="gelu")
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              feed_forward_proj="gated-gelu", is_encoder_decoder=False)
VAE_16 = dict(latent_channels=16, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
              down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
VAE_4 = dict(VAE_16, latent_channels=4)
HPS_VIT_H = dict(text_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
                 vision_config=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                    num_attention_heads=16, patch_size=14, image_size=224), projection_dim=1024)


def count(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def build() -> dict:
    from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel, UNet2DConditionModel
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from slas.policy.common import add_lora

    with torch.device("meta"):
        m = {
            "flux": FluxTransformer2DModel(**FLUX_DEV), "sd3": SD3Transformer2DModel(**SD35_MEDIUM),
            "sd": UNet2DConditionModel(**SD14_UNET), "clip_l": CLIPTextModel(CLIPTextConfig(**CLIP_L)),
            "clip_g": CLIPTextModel(CLIPTextConfig(**CLIP_G)), "t5": T5EncoderModel(T5Config(**T5_XXL)),
            "vae16": AutoencoderKL(**VAE_16), "vae4": AutoencoderKL(**VAE_4), "hps": CLIPModel(CLIPConfig(**HPS_VIT_H)),
        }
        n = {k: count(v) for k, v in m.items()}
        # the recipes' LoRA variants (DanceGRPO train_grpo_flux_lora.py; Flow-GRPO train_sd3.py:417-440)
        add_lora(m["flux"], 128, 256, ["to_q", "to_k", "to_v", "to_out.0"])
        add_lora(m["sd3"], 32, 64, ["attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
                                    "attn.to_k", "attn.to_out.0", "attn.to_q", "attn.to_v"])
        n["flux_lora128"], n["sd3_lora32"] = count(m["flux"], True), count(m["sd3"], True)
    return n


def main() -> None:
    n = build()
    print("parameters (millions):")
    for k, v in n.items():
        print(f"  {k:14s} {v / 1e6:10.1f}")
    # bytes per parameter: full fine-tuning = fp32 weights + fp32 grads + AdamW m, v (16 B);
    # a frozen LoRA base in bf16 (2 B) + fp32 factors with grads and AdamW (16 B)
    traj = {  # fp32 trajectory [N, T+1, C, h, w] kept on the GPU for re-scoring
        "flux": 192 * 17 * 16 * 90 * 90 * 4, "sd": 512 * 51 * 4 * 64 * 64 * 4, "sd3": 1152 * 11 * 16 * 64 * 64 * 4}
    rows = [
        ("flux_dancegrpo / flux_slas, full FT", 16 * n["flux"], 2 * (n["t5"] + n["clip_l"] + n["vae16"]), traj["flux"]),
        ("  the same with LoRA r128 (DanceGRPO LoRA script)", 2 * n["flux"] + 16 * n["flux_lora128"],
         2 * (n["t5"] + n["clip_l"] + n["vae16"]), traj["flux"]),
        ("sd14_dancegrpo / sd14_slas, full FT", 16 * n["sd"], 2 * (n["clip_l"] + n["vae4"]), traj["sd"]),
        ("sd35_flowgrpo, LoRA r32", 2 * n["sd3"] + 16 * n["sd3_lora32"],
         2 * (n["t5"] + n["clip_l"] + n["clip_g"] + n["vae16"]), traj["sd3"]),
        ("  the same, full FT", 16 * n["sd3"], 2 * (n["t5"] + n["clip_l"] + n["clip_g"] + n["vae16"]), traj["sd3"]),
    ]
    hps = 2 * n["hps"]  # HPS-v2.1 / PickScore (ViT-H-14) in fp16; PickScore in fp32 is twice this
    print(f"\nreward model (ViT-H-14, fp16): {hps / GB:.1f} GB")
    print(f"\n{'recipe':52s} {'policy':>8s} {'frozen':>8s} {'traj':>6s} {'total*':>8s}  (GB; *without activations)")
    for name, policy, frozen, tr in rows:
        print(f"{name:52s} {policy / GB:8.1f} {frozen / GB:8.1f} {tr / GB:6.1f} {(policy + frozen + tr + hps) / GB:8.1f}")


if __name__ == "__main__":
    main()
