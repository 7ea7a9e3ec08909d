"""CLIP-family rewards on tiny random models built offline: preprocessing against transformers'
CLIPImageProcessor, every score against an independent computation of its documented formula, the
OpenCLIP -> transformers conversion against a from-scratch OpenCLIP forward, and the option errors that need a model folder."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slas import rewards
from slas.config import ConfigError, load_config
from slas.rewards.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ClipPreprocess
from slas.rewards.openclip import clip_from_openclip

PROMPTS = ["a photo of a red cat", "a blue dog on a green mat", "two yellow birds", "a white circle left of a square"]
WORDS = sorted({w for p in PROMPTS for w in p.split()})


def _pixels(images: np.ndarray) -> torch.Tensor:
    """What CLIP preprocessing reduces to when the image already has the model's size: /255, OpenAI mean/std."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny random CLIPModel (64 px, patch 8) with a CLIP BPE tokenizer trained in-process."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    d = tmp_path_factory.mktemp("clip")
    tok = CLIPTokenizer(model_max_length=77).train_new_from_iterator(PROMPTS * 20, vocab_size=1000)
    torch.manual_seed(0)
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=77, projection_dim=32, hidden_act="gelu", layer_norm_eps=1e-5,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=64,
                  patch_size=8, num_channels=3, hidden_act="gelu")
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(50.0))  # not the init value, so a missing scale would show
    model.save_pretrained(d)
    tok.save_pretrained(d)
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(d)
    return d


def _clip_forward(clip_dir, images: np.ndarray, prompts: list[str], pixel_values: torch.Tensor | None = None):
    """transformers' own CLIPModel.forward: (cosine [N], exp(logit_scale) * cosine [N]) per (image, prompt) pair."""
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(clip_dir).eval()
    tok = AutoTokenizer.from_pretrained(clip_dir)(prompts, padding=True, return_tensors="pt")
    px = _pixels(images) if pixel_values is None else pixel_values
    with torch.no_grad():
        out = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], pixel_values=px)
        logits = out.logits_per_image.diagonal().double()  # exp(logit_scale) * <normalised image, normalised text>
        return (logits / model.logit_scale.exp().double()).numpy(), logits.numpy()


def test_preprocess_matches_clip_image_processor():
    from transformers import CLIPImageProcessor

    proc = CLIPImageProcessor()  # 224 shortest edge, 224 crop, OpenAI mean/std, bicubic
    ours = ClipPreprocess()
    rng = np.random.default_rng(0)
    for h, w in [(50, 70), (300, 200), (224, 224), (97, 131), (64, 64)]:  # down, up, as is, odd crops
        images = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
        ref = proc(images=list(images), return_tensors="pt")["pixel_values"]
        got = ours(images)
        assert got.shape == ref.shape == (2, 3, 224, 224) and got.dtype == torch.float32
        diff = (got - ref).abs()
        # PIL resamples in fixed point: a few values round to the neighbouring uint8 level (1 level = 0.015)
        assert diff.max() < 0.035, (h, w, diff.max())
        assert (diff > 1e-4).float().mean() < 0.02 and diff.mean() < 5e-4, (h, w)


def test_preprocess_reads_the_saved_processor_config(clip_dir):
    pre = ClipPreprocess.from_pretrained(clip_dir, image_size=999)
    assert (pre.size, pre.crop, pre.mean, pre.std) == (64, 64, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    assert ClipPreprocess.from_pretrained(clip_dir / "no_such_dir", image_size=32).crop == 32  # no config: defaults


def test_clip_score_and_pickscore_match_clip_forward(clip_dir):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)  # model size: preprocessing is exact
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[2], PROMPTS[3]]  # a repeated prompt is encoded once
    score = rewards.build({"clip_score": 1.0, "pickscore": 0.5}, batch_size=2,
                          options={"clip_score": {"model_path": str(clip_dir)},
                                   "pickscore": {"model_path": str(clip_dir), "processor_path": str(clip_dir)}})
    out = score(images, prompts, [{}] * 5)
    cos, logits = _clip_forward(clip_dir, images, prompts)
    np.testing.assert_allclose(out["clip_score"], cos, atol=1e-5)
    np.testing.assert_allclose(out["pickscore"], logits, atol=1e-4)  # scale 50: 1e-5 relative
    np.testing.assert_allclose(out["pickscore"], 50.0 * out["clip_score"], rtol=1e-5)
    np.testing.assert_allclose(out["total"], out["clip_score"] + 0.5 * out["pickscore"], rtol=1e-12)
    assert out["clip_score"].dtype == np.float64 and np.all(np.abs(out["clip_score"]) <= 1)


def test_clip_score_on_other_sizes_matches_the_processor_pipeline(clip_dir):
    from transformers import CLIPImageProcessor

    images = np.random.default_rng(2).integers(0, 256, (3, 90, 120, 3), dtype=np.uint8)  # resized and cropped
    px = CLIPImageProcessor.from_pretrained(clip_dir)(images=list(images), return_tensors="pt")["pixel_values"]
    cos, _ = _clip_forward(clip_dir, images, PROMPTS[:3], pixel_values=px)
    got = rewards.build({"clip_score": 1.0}, options={"clip_score": {"model_path": str(clip_dir)}})(
        images, PROMPTS[:3], [{}] * 3)["clip_score"]
    np.testing.assert_allclose(got, cos, atol=2e-3)  # only the rare one-level rounding differences remain


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_aesthetic_is_the_mlp_of_the_normalised_image_embedding(clip_dir, tmp_path, fmt):
    from safetensors.torch import save_file
    from transformers import CLIPModel

    torch.manual_seed(3)
    dims = [32, 1024, 128, 64, 16, 1]  # input = the tiny CLIP's projection_dim (768 for ViT-L/14)
    layers = [0, 2, 4, 6, 7]  # nn.Sequential indices of the Linears (Dropouts in between)
    sd = {}
    for i, (a, b) in zip(layers, zip(dims, dims[1:], strict=False), strict=True):
        sd[f"layers.{i}.weight"], sd[f"layers.{i}.bias"] = torch.randn(b, a) / math.sqrt(a), torch.randn(b)
    head = tmp_path / f"head.{fmt}"
    save_file(sd, str(head)) if fmt == "safetensors" else torch.save(sd, head)
    images = np.random.default_rng(4).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    got = rewards.build({"aesthetic": 1.0}, options={"aesthetic": {"model_path": str(clip_dir), "head_path": str(head)}})(
        images, PROMPTS[:3], [{}] * 3)["aesthetic"]
    with torch.no_grad():
        emb = CLIPModel.from_pretrained(clip_dir).eval()(
            input_ids=torch.zeros(3, 2, dtype=torch.long), pixel_values=_pixels(images)).image_embeds  # normalised
        x = emb.double()
        for i in layers:
            x = x @ sd[f"layers.{i}.weight"].double().T + sd[f"layers.{i}.bias"].double()
    np.testing.assert_allclose(got, x.squeeze(-1).numpy(), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------
# HPS: OpenCLIP state dict -> transformers CLIPModel
# ----------------------------------------------------------------------------

V_WIDTH, T_WIDTH, HEADS, LAYERS, PATCH, GRID, EMBED, CTX = 32, 24, 4, 2, 8, 4, 16, 16


def _openclip_state_dict(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random OpenCLIP ViT state dict with open_clip's key names and shapes."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    sd = {}

    def blocks(prefix, width):
        for i in range(LAYERS):
            p = f"{prefix}transformer.resblocks.{i}."
            for ln in ("ln_1", "ln_2"):
                sd[p + ln + ".weight"], sd[p + ln + ".bias"] = 1 + r(width), r(width)
            sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"] = r(3 * width, width), r(3 * width)
            sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"] = r(width, width), r(width)
            sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"] = r(4 * width, width), r(4 * width)
            sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"] = r(width, 4 * width), r(width)

    sd["visual.conv1.weight"] = r(V_WIDTH, 3, PATCH, PATCH)
    sd["visual.class_embedding"] = r(V_WIDTH)
    sd["visual.positional_embedding"] = r(GRID * GRID + 1, V_WIDTH)
    for ln in ("visual.ln_pre", "visual.ln_post", "ln_final"):
        w = T_WIDTH if ln == "ln_final" else V_WIDTH
        sd[ln + ".weight"], sd[ln + ".bias"] = 1 + r(w), r(w)
    blocks("visual.", V_WIDTH)
    sd["visual.proj"] = r(V_WIDTH, EMBED)
    sd["token_embedding.weight"] = r(vocab, T_WIDTH)
    sd["positional_embedding"] = r(CTX, T_WIDTH)
    blocks("", T_WIDTH)
    sd["text_projection"] = r(T_WIDTH, EMBED)
    sd["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return sd


def _openclip_forward(sd, pixels: torch.Tensor, text: torch.Tensor):
    """OpenCLIP's forward from scratch (open_clip transformer.py VisionTransformer / TextTransformer, nn.GELU):
    unnormalised (image features [N, E], text features [N, E])."""

    def ln(x, k):
        return F.layer_norm(x, x.shape[-1:], sd[k + ".weight"], sd[k + ".bias"], eps=1e-5)

    def tower(x, prefix, width, mask=None):  # x [N, L, D]
        for i in range(LAYERS):
            p = f"{prefix}transformer.resblocks.{i}."
            h = ln(x, p + "ln_1").transpose(0, 1)  # nn.MultiheadAttention wants [L, N, D]
            a, _ = F.multi_head_attention_forward(
                h, h, h, width, HEADS, sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"], None, None, False,
                0.0, sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"], training=False, need_weights=False,
                attn_mask=mask)
            x = x + a.transpose(0, 1)
            h = F.gelu(F.linear(ln(x, p + "ln_2"), sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"]))
            x = x + F.linear(h, sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
        return x

    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)  # [N, G*G, D]
    cls = sd["visual.class_embedding"].expand(len(x), 1, -1)
    x = ln(torch.cat([cls, x], 1) + sd["visual.positional_embedding"], "visual.ln_pre")
    img = ln(tower(x, "visual.", V_WIDTH)[:, 0], "visual.ln_post") @ sd["visual.proj"]
    L = text.shape[1]
    causal = torch.full((L, L), float("-inf")).triu(1)
    t = tower(sd["token_embedding.weight"][text] + sd["positional_embedding"][:L], "", T_WIDTH, causal)
    txt = ln(t, "ln_final")[torch.arange(len(text)), text.argmax(-1)] @ sd["text_projection"]  # EOT = largest id
    return img, txt


def test_openclip_conversion_matches_the_openclip_forward():
    vocab = 50
    sd = _openclip_state_dict(vocab)
    model = clip_from_openclip(sd, vision_heads=HEADS, text_heads=HEADS, bos_token_id=vocab - 2,
                               eos_token_id=vocab - 1, pad_token_id=0)
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(3, 3, GRID * PATCH, GRID * PATCH, generator=g)
    text = torch.zeros(3, CTX, dtype=torch.long)  # open_clip pads with 0
    for i, n in enumerate([3, 7, CTX - 2]):
        text[i, 0], text[i, 1 : n + 1], text[i, n + 1] = vocab - 2, torch.randint(1, vocab - 2, (n,), generator=g), vocab - 1
    ref_img, ref_txt = _openclip_forward(sd, pixels, text)
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pixels)
        txt = model.get_text_features(input_ids=text)
    img, txt = (o if isinstance(o, torch.Tensor) else o.pooler_output for o in (img, txt))
    torch.testing.assert_close(img, ref_img, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(txt, ref_txt, atol=1e-5, rtol=1e-5)
    assert torch.equal(model.logit_scale.data, sd["logit_scale"])


@pytest.fixture(scope="module")
def hps_files(tmp_path_factory):
    """An OpenCLIP-format checkpoint saved as HPSv2 does ({"state_dict": ...}) and a word-level CLIP-style tokenizer
    whose end-of-text token has the largest id, as in the real CLIP vocabulary."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("hps")
    vocab = {"<unk>": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer, tok.pre_tokenizer = normalizers.Lowercase(), pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                            pad_token="<|endoftext|>", unk_token="<unk>", model_max_length=CTX).save_pretrained(d / "tok")
    sd = _openclip_state_dict(len(vocab), seed=5)
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, d / "HPS_v2.1_compressed.pt")
    return d, sd


def test_hps_reward_matches_the_openclip_reference(hps_files):
    from transformers import AutoTokenizer

    d, sd = hps_files
    images = np.random.default_rng(6).integers(0, 256, (4, GRID * PATCH, GRID * PATCH, 3), dtype=np.uint8)
    prompts = [PROMPTS[0], PROMPTS[3], PROMPTS[0], PROMPTS[1]]
    opts = {"model_path": str(d / "HPS_v2.1_compressed.pt"), "tokenizer_path": str(d / "tok"),
            "vision_heads": HEADS, "text_heads": HEADS}
    got = rewards.build({"hps": 1.0}, batch_size=3, options={"hps": opts})(images, prompts, [{}] * 4)["hps"]
    text = AutoTokenizer.from_pretrained(d / "tok")(prompts, padding=True, return_tensors="pt")["input_ids"]
    img, txt = _openclip_forward(sd, _pixels(images), text)
    expected = (F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T).diagonal()  # HPSv2 score.py
    np.testing.assert_allclose(got, expected.double().numpy(), atol=1e-5)


def test_openclip_conversion_rejects_what_it_cannot_map():
    sd = _openclip_state_dict(20)
    with pytest.raises(ValueError, match="no transformers CLIPModel counterpart"):
        clip_from_openclip({**sd, "visual.transformer.resblocks.0.ls_1.gamma": torch.ones(V_WIDTH)},
                           vision_heads=HEADS, text_heads=HEADS)
    with pytest.raises(ValueError, match="'visual.proj' is missing"):
        clip_from_openclip({k: v for k, v in sd.items() if k != "visual.proj"}, vision_heads=HEADS, text_heads=HEADS)
    with pytest.raises(ValueError, match="vision_heads=5 must divide"):
        clip_from_openclip(sd, vision_heads=5, text_heads=HEADS)


# ----------------------------------------------------------------------------
# Options and errors
# ----------------------------------------------------------------------------


def test_option_errors_name_the_reward_and_what_it_accepts(clip_dir, tmp_path):
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['modle_path'\] for reward 'clip_score'.*model_path"):
        rewards.build({"clip_score": 1.0}, options={"clip_score": {"modle_path": str(clip_dir)}})
    with pytest.raises(ValueError, match=r"reward 'pickscore' needs option\(s\) \['model_path'\]"):
        rewards.build({"pickscore": 1.0})
    with pytest.raises(ValueError, match="options given for reward 'hps', which has no weight"):
        rewards.build({"clip_score": 1.0}, options={"clip_score": {"model_path": str(clip_dir)}, "hps": {}})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['device'\] for reward 'toy_score'; it accepts: none"):
        rewards.build({"toy_score": 1.0}, options={"toy_score": {"device": "cpu"}})
    with pytest.raises(FileNotFoundError, match="model_path .*nope.* does not exist; reward models load only from local"):
        rewards.build({"clip_score": 1.0}, options={"clip_score": {"model_path": str(tmp_path / "nope")}})
    with pytest.raises(FileNotFoundError, match="head_path"):
        rewards.build({"aesthetic": 1.0}, options={"aesthetic": {"model_path": str(clip_dir),
                                                                 "head_path": str(tmp_path / "h.pth")}})
    with pytest.raises(ValueError, match="dtype bfloat16 on CPU"):
        rewards.build({"clip_score": 1.0}, options={"clip_score": {"model_path": str(clip_dir), "dtype": "bfloat16"}})
    wrong_head = tmp_path / "wrong.pth"
    torch.save({"weight": torch.zeros(1)}, wrong_head)
    with pytest.raises(ValueError, match="not an aesthetic-predictor head"):
        rewards.build({"aesthetic": 1.0}, options={"aesthetic": {"model_path": str(clip_dir),
                                                                 "head_path": str(wrong_head)}})


def test_config_carries_and_checks_reward_options(clip_dir):
    base = ["reward.weights={clip_score: 0.5}"]
    cfg = load_config(None, base + [f"reward.options.clip_score.model_path={clip_dir}"])
    assert cfg.reward.options == {"clip_score": {"model_path": str(clip_dir)}}
    assert load_config(None).reward.options == {}
    with pytest.raises(ConfigError, match=r"reward.options.clip_score: .*needs option\(s\) \['model_path'\]"):
        load_config(None, base)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['size'\] for reward 'clip_score'"):
        load_config(None, base + [f"reward.options.clip_score.model_path={clip_dir}", "reward.options.clip_score.size=3"])
    with pytest.raises(ConfigError, match=r"reward.options names \['pickscore'\], which have no entry"):
        load_config(None, ["reward.options.pickscore.model_path=x"])
