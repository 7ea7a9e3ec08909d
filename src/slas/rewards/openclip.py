"""An OpenCLIP ViT checkpoint as a ``transformers.CLIPModel``: the state-dict conversion behind the ``hps`` reward
(slas.rewards.clip), which scores HPS-v2.1's OpenCLIP ViT-H-14 checkpoint without open_clip or torchvision (neither
imports beside the CPU torch build). docs/rewards.md shows the conversion checked against open_clip itself."""

from __future__ import annotations

import torch

# open_clip ResidualAttentionBlock -> transformers CLIPEncoderLayer (attn.in_proj_* is split separately)
_BLOCK_KEYS = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
               "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
# Buffers some open_clip versions saved; transformers rebuilds the causal mask itself.
_IGNORED_KEYS = {"attn_mask", "visual.attn_mask"}


def _count_blocks(sd: dict, prefix: str) -> int:
    n = 0
    while f"{prefix}transformer.resblocks.{n}.ln_1.weight" in sd:
        n += 1
    return n


def openclip_to_hf(state_dict: dict[str, torch.Tensor], *, vision_heads: int, text_heads: int,
                   hidden_act: str = "gelu", bos_token_id: int = 49406, eos_token_id: int = 49407,
                   pad_token_id: int = 49407):
    """Convert an OpenCLIP ViT CLIP state dict to ``(CLIPConfig, transformers CLIPModel state dict)``.

    OpenCLIP's blocks are ``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))`` with ``nn.MultiheadAttention`` (one
    ``in_proj`` for q, k, v), the vision tower pools the class token after ``ln_post`` and projects with
    ``x @ visual.proj``, the text tower pools the EOT token after ``ln_final`` and projects with
    ``x @ text_projection``: the same maths as transformers' CLIP, with q/k/v split and the projections
    transposed into ``nn.Linear`` weights. The head counts are not in the state dict (ViT-H-14: 16 and 16, from
    open_clip's model_configs/ViT-H-14.json: vision width 1280 / head_width 80, text width 1024 / 16 heads).
    ``hidden_act``: "gelu" for OpenCLIP-trained towers (ViT-H-14), "quick_gelu" for OpenAI weights.
    OpenCLIP pools at ``argmax(token ids)``, transformers at the first ``eos_token_id``: the same position for
    the CLIP BPE vocabulary, whose EOT (49407) is the largest id.
    """
    from transformers import CLIPConfig

    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    taken: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in sd:
            raise ValueError(f"not an OpenCLIP ViT state dict: key {key!r} is missing")
        taken.add(key)
        return sd[key]

    out: dict[str, torch.Tensor] = {}

    def tower(src: str, dst: str, n_layers: int) -> None:
        for i in range(n_layers):
            s, d = f"{src}transformer.resblocks.{i}.", f"{dst}encoder.layers.{i}."
            for a, b in _BLOCK_KEYS.items():
                for p in ("weight", "bias"):
                    out[f"{d}{b}.{p}"] = take(f"{s}{a}.{p}")
            for p in ("weight", "bias"):
                q, k, v = take(f"{s}attn.in_proj_{p}").chunk(3, dim=0)  # rows are [q; k; v] (nn.MultiheadAttention)
                out[f"{d}self_attn.q_proj.{p}"], out[f"{d}self_attn.k_proj.{p}"], out[f"{d}self_attn.v_proj.{p}"] = q, k, v

    n_text, n_vision = _count_blocks(sd, ""), _count_blocks(sd, "visual.")
    if not n_text or not n_vision:
        raise ValueError(f"not an OpenCLIP ViT state dict: found {n_text} text and {n_vision} vision blocks")

    token_embedding = take("token_embedding.weight")  # [V, Dt]
    out["text_model.embeddings.token_embedding.weight"] = token_embedding
    out["text_model.embeddings.position_embedding.weight"] = take("positional_embedding")  # [ctx, Dt]
    tower("", "text_model.", n_text)
    for p in ("weight", "bias"):
        out[f"text_model.final_layer_norm.{p}"] = take(f"ln_final.{p}")
    if "text_projection" in sd:
        out["text_projection.weight"] = take("text_projection").t()  # x @ P  ->  Linear weight P.T [E, Dt]
    else:
        out["text_projection.weight"] = take("text_projection.weight")  # newer open_clip: already an nn.Linear

    conv = take("visual.conv1.weight")  # [Dv, 3, p, p], no bias in open_clip or transformers
    out["vision_model.embeddings.patch_embedding.weight"] = conv
    out["vision_model.embeddings.class_embedding"] = take("visual.class_embedding")
    vis_pos = take("visual.positional_embedding")  # [1 + (S/p)^2, Dv]
    out["vision_model.embeddings.position_embedding.weight"] = vis_pos
    for p in ("weight", "bias"):
        out[f"vision_model.pre_layrnorm.{p}"] = take(f"visual.ln_pre.{p}")  # sic: transformers' spelling
        out[f"vision_model.post_layernorm.{p}"] = take(f"visual.ln_post.{p}")
    tower("visual.", "vision_model.", n_vision)
    out["visual_projection.weight"] = take("visual.proj").t()  # [Dv, E] -> [E, Dv]
    logit_scale = take("logit_scale")
    out["logit_scale"] = logit_scale

    leftover = sorted(set(sd) - taken - _IGNORED_KEYS)
    if leftover:
        raise ValueError(f"OpenCLIP keys with no transformers CLIPModel counterpart (layer scale, attention pooling, "
                         f"a logit bias, ...?): {leftover[:6]}")

    vocab, d_text = token_embedding.shape
    d_vis, patch = conv.shape[0], conv.shape[-1]
    grid = round((vis_pos.shape[0] - 1) ** 0.5)
    proj_dim = out["visual_projection.weight"].shape[0]
    if grid * grid + 1 != vis_pos.shape[0]:
        raise ValueError(f"visual.positional_embedding has {vis_pos.shape[0]} rows, not 1 + a square grid")
    if out["text_projection.weight"].shape[0] != proj_dim:
        raise ValueError(f"text and image projections differ: {out['text_projection.weight'].shape[0]} vs {proj_dim}")
    for name, width, heads in (("vision", d_vis, vision_heads), ("text", d_text, text_heads)):
        if heads < 1 or width % heads:
            raise ValueError(f"{name}_heads={heads} must divide the {name} width {width}")
    block = "transformer.resblocks.0.mlp.c_fc.weight"
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=d_text, intermediate_size=sd[block].shape[0],
                         num_hidden_layers=n_text, num_attention_heads=text_heads,
                         max_position_embeddings=out["text_model.embeddings.position_embedding.weight"].shape[0],
                         hidden_act=hidden_act, layer_norm_eps=1e-5,  # open_clip's LayerNorm default
                         bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id),
        vision_config=dict(hidden_size=d_vis, intermediate_size=sd[f"visual.{block}"].shape[0],
                           num_hidden_layers=n_vision, num_attention_heads=vision_heads, image_size=grid * patch,
                           patch_size=patch, num_channels=conv.shape[1], hidden_act=hidden_act, layer_norm_eps=1e-5),
        projection_dim=proj_dim, logit_scale_init_value=float(logit_scale))
    return config, out


def clip_from_openclip(state_dict: dict[str, torch.Tensor], **kwargs):
    """A ``transformers.CLIPModel`` holding an OpenCLIP checkpoint (kwargs: see ``openclip_to_hf``)."""
    from transformers import CLIPModel

    config, sd = openclip_to_hf(state_dict, **kwargs)
    model = CLIPModel(config)
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]  # non-persistent buffers
    if missing or result.unexpected_keys:
        raise ValueError(f"converted OpenCLIP weights do not fit CLIPModel: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    return model.eval()
