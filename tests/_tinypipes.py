"""Tiny stock diffusers pipelines (FLUX, SD3, SD1.x) of random components, built offline, shared by the tests that
need a real backbone folder."""

import torch

# what the tiny tokenizers are trained on, and the prompts the tiny backbones train with
PROMPTS = ["a photo of a red cat", "a blue dog on a green mat", "two yellow birds", "a white circle left of a square"]

# black-forest-labs/FLUX.1-dev scheduler/scheduler_config.json: resolution-dependent (dynamic) shifting
FLUX_DEV_SCHEDULER = {"base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
                      "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True}
# the static shift 3 of SD3.5-Medium's scheduler (and of DanceGRPO's FLUX rollouts)
STATIC_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False}


def tokenizers(prompts: list[str]):
    """(CLIP, T5) tokenizers trained in-process on ``prompts``."""
    from transformers import CLIPTokenizer, T5Tokenizer

    clip = CLIPTokenizer(model_max_length=77).train_new_from_iterator(prompts * 20, vocab_size=1000)
    # a word-level Unigram vocabulary: trained on this corpus, T5's tokenizer would be character-level
    words = sorted({w for p in prompts for w in p.split()})
    chars = sorted({c for p in prompts for c in p if c != " "})
    vocab = ([("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)] + [("\u2581" + w, -1.0) for w in words]
             + [(c, -20.0) for c in chars])
    return clip, T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def clip_text(tok, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, projection_dim=32, hidden_act="gelu",
                         layer_norm_eps=1e-5, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def t5_encoder(tok):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=len(tok), d_model=64, d_kv=16, d_ff=64, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, relative_attention_max_distance=32,
                                   dropout_rate=0.0, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
                                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))


def vae(sd: bool):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
                         down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                         block_out_channels=[8, 16, 32, 32], layers_per_block=1, norm_num_groups=8,
                         use_quant_conv=sd, use_post_quant_conv=sd, shift_factor=None if sd else 0.1,
                         scaling_factor=0.18215 if sd else 1.5)  # 8x down: 64 px <-> 4 x 8 x 8


def build_pipeline(kind: str, clip_tok, t5_tok=None, scheduler: dict | None = None):
    """A stock diffusers pipeline of tiny random components; ``scheduler``: the flow scheduler's config (FLUX and SD3;
    default ``STATIC_SCHEDULER``)."""
    import diffusers as d

    torch.manual_seed(0)
    if kind == "flux":
        flux = d.FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=64,
                                        pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=[4, 6, 6])
        sched = d.FlowMatchEulerDiscreteScheduler(**(scheduler or STATIC_SCHEDULER))
        return d.FluxPipeline(scheduler=sched, vae=vae(False), text_encoder=clip_text(clip_tok, False),
                              tokenizer=clip_tok, text_encoder_2=t5_encoder(t5_tok), tokenizer_2=t5_tok, transformer=flux)
    if kind == "sd3":
        sd3 = d.SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                                      attention_head_dim=16, num_attention_heads=2, joint_attention_dim=64,
                                      caption_projection_dim=32, pooled_projection_dim=64, pos_embed_max_size=16)
        sched = d.FlowMatchEulerDiscreteScheduler(**(scheduler or STATIC_SCHEDULER))
        return d.StableDiffusion3Pipeline(transformer=sd3, scheduler=sched, vae=vae(False),
                                          text_encoder=clip_text(clip_tok, True), tokenizer=clip_tok,
                                          text_encoder_2=clip_text(clip_tok, True), tokenizer_2=clip_tok,
                                          text_encoder_3=t5_encoder(t5_tok), tokenizer_3=t5_tok)
    unet = d.UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                  block_out_channels=[32, 64], down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                                  up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], cross_attention_dim=32,
                                  attention_head_dim=8, norm_num_groups=8)
    sched = d.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                            set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
    return d.StableDiffusionPipeline(vae=vae(True), text_encoder=clip_text(clip_tok, False), tokenizer=clip_tok,
                                     unet=unet, scheduler=sched, safety_checker=None, feature_extractor=None,
                                     image_encoder=None, requires_safety_checker=False)


def save_clip_reward(folder, tok) -> None:
    """A tiny random CLIPModel for the ``clip_score`` reward (64 px, patch 8), with its tokenizer, saved to ``folder``."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(1)
    text = clip_text(tok, False).config.to_dict()
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=64,
                  patch_size=8, num_channels=3, hidden_act="gelu")
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)).save_pretrained(folder)
    tok.save_pretrained(folder)
