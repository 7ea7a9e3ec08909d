"""CLIP-family reward models on in-memory images: CLIP score, PickScore, LAION aesthetic, HPS-v2.1, ImageReward.

Every reward here scores a whole batch under ``torch.no_grad()``, loads only from local paths (no hub
download: a missing path is a FileNotFoundError naming the option) and runs in float32 on CPU (bf16 has
no fast CPU matmul path: 5-15x slower). The CLIP ones run through
``transformers.CLIPModel`` with the torch-only preprocessing below, so they need no torchvision (which
does not import beside the CPU torch build); HPS reaches its OpenCLIP checkpoint by converting the state
dict. Only ``hps_openclip`` and ``imagereward`` import extra packages, lazily.

With î, t̂ the L2-normalised projected image and text features:

    clip_score  = cos(î, t̂) = î·t̂                     in [-1, 1]
    pickscore   = exp(logit_scale) · î·t̂              exp(logit_scale) ~ 100 for PickScore_v1 (CLIP's cap)
    aesthetic   = MLP(î)                               LAION improved-aesthetic-predictor, ViT-L/14 embedding
    hps         = î·t̂ of the HPS-v2.1 ViT-H-14         HPSv2 reports the cosine as is (~0.2-0.35 on real images)
    imagereward = (MLP(BLIP(image, prompt)[CLS]) - 0.16717) / 1.03334   (the ImageReward package's model)
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slas.rewards import RewardFn, register
from slas.rewards.openclip import clip_from_openclip

# transformers.image_utils.OPENAI_CLIP_MEAN / _STD (also open_clip's OPENAI_DATASET_MEAN / _STD)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ----------------------------------------------------------------------------
# Preprocessing (torch only)
# ----------------------------------------------------------------------------


def _resize_u8(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of 0..255 float images [N, C, H, W], rounded back to integer levels like a uint8 image.

    With ``antialias=True`` torch uses PIL's bicubic kernel (a = -0.5, support widened when shrinking).
    """
    x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    return x.round_().clamp_(0.0, 255.0)


@dataclass(frozen=True)
class ClipPreprocess:
    """CLIP image preprocessing: resize the shortest edge to ``size`` (bicubic), center-crop ``crop`` x ``crop``,
    scale to [0, 1], normalise with ``mean``/``std``.

    transformers' ``CLIPImageProcessor`` (PIL backend) and open_clip's eval transform (torchvision ``Resize`` on a
    PIL image) both resize the uint8 image with PIL, which resamples separably, width first, rounding to uint8
    after each pass; doing the same here keeps the reward input within 2 of 255 levels of theirs in under 1% of
    the values (tests/integration/test_clip_rewards.py); one float pass over both axes differed by up to 20 levels on noise.
    """

    size: int = 224  # shortest edge after resizing
    crop: int = 224  # side of the square center crop (the model's image size)
    mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    std: tuple[float, ...] = OPENAI_CLIP_STD
    # transformers crops at floor((H - crop) / 2); torchvision's CenterCrop (open_clip, HPSv2) at round(...)
    crop_rounding: str = "floor"

    def __post_init__(self) -> None:
        if self.crop > self.size:
            raise ValueError(f"crop ({self.crop}) must not exceed the resized shortest edge ({self.size})")
        if self.crop_rounding not in ("floor", "round"):
            raise ValueError(f"crop_rounding must be 'floor' or 'round', got {self.crop_rounding!r}")

    @classmethod
    def from_pretrained(cls, path: str | Path, image_size: int) -> ClipPreprocess:
        """Read a local ``preprocessor_config.json``; without one, resize and crop to ``image_size`` with
        the OpenAI CLIP mean/std (what every released CLIP processor uses)."""
        f = Path(path) / "preprocessor_config.json"
        if not f.is_file():
            return cls(size=image_size, crop=image_size)
        cfg = json.loads(f.read_text())
        for key, want in (("do_resize", True), ("do_center_crop", True), ("do_normalize", True), ("resample", 3)):
            if key in cfg and cfg[key] != want:
                raise ValueError(f"{f}: {key}={cfg[key]!r} is not supported (CLIP rewards preprocess with {key}={want!r})")
        if "rescale_factor" in cfg and abs(cfg["rescale_factor"] - 1 / 255) > 1e-9:
            raise ValueError(f"{f}: rescale_factor {cfg['rescale_factor']} is not supported (expected 1/255)")
        size = cfg.get("size", image_size)
        if isinstance(size, dict):
            if "shortest_edge" not in size:
                raise ValueError(f"{f}: size {size} is not supported (CLIP rewards resize the shortest edge)")
            size = size["shortest_edge"]
        crop = cfg.get("crop_size", size)
        if isinstance(crop, dict):
            if crop.get("height") != crop.get("width"):
                raise ValueError(f"{f}: crop_size {crop} is not square")
            crop = crop["height"]
        return cls(size=int(size), crop=int(crop), mean=tuple(cfg.get("image_mean", OPENAI_CLIP_MEAN)),
                   std=tuple(cfg.get("image_std", OPENAI_CLIP_STD)))

    def __call__(self, images: np.ndarray, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> pixel values [N, 3, crop, crop] in ``dtype``."""
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
            raise ValueError(f"images must be a uint8 array [N, H, W, 3], got {got}")
        x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float()  # [N, 3, H, W]
        _, _, H, W = x.shape
        # transformers' get_resize_output_image_size / torchvision's Resize(int): the long side is truncated
        nh, nw = (self.size, int(self.size * W / H)) if H <= W else (int(self.size * H / W), self.size)
        if nw != W:
            x = _resize_u8(x, (H, nw))
        if nh != H:
            x = _resize_u8(x, (nh, nw))
        off = (lambda d: d // 2) if self.crop_rounding == "floor" else (lambda d: int(round(d / 2)))
        top, left = off(nh - self.crop), off(nw - self.crop)
        x = x[:, :, top : top + self.crop, left : left + self.crop] / 255.0  # [N, 3, crop, crop]
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return ((x - mean) / std).to(dtype)


# ----------------------------------------------------------------------------
# Loading helpers
# ----------------------------------------------------------------------------


def _local(reward: str, path: str | None, option: str) -> Path:
    """A local file or directory named by option ``option`` of ``reward``; never a hub id."""
    if not path:
        raise ValueError(f"reward {reward!r} needs option {option!r}: a local path")
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"reward {reward!r}: {option} {str(p)!r} does not exist; reward models load only from local paths "
            "(download the checkpoint first, see docs/rewards.md)")
    return p


def _loaded(reward: str, option: str, path: Path, what: str, load):
    """``load()``, whose failure on a folder transformers cannot read (an empty or partial download) is one ValueError
    naming the option and the config key that point there; transformers' own message spans several lines and names
    neither."""
    try:
        return load()
    except (OSError, ValueError) as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        first = first if len(first) <= 160 else first[:157] + "..."
        raise ValueError(f"reward {reward!r}: cannot load a {what} from {option} {str(path)!r} "
                         f"(reward.options.{reward}.{option} of a config): {first}") from None


def _device_dtype(reward: str, device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    if dtype not in _DTYPES:
        raise ValueError(f"reward {reward!r}: dtype must be one of {list(_DTYPES)}, got {dtype!r}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"reward {reward!r}: device {device!r} is not a torch device (e.g. 'cpu', 'cuda:0')") from None
    if dev.type == "cpu" and dtype != "float32":
        raise ValueError(f"reward {reward!r}: dtype {dtype} on CPU is 5-15x slower than float32 (no CPU bf16/fp16 "
                         "matmul path); use dtype float32 on CPU")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"reward {reward!r}: device {device!r} asked for, but torch sees no CUDA device")
    return dev, _DTYPES[dtype]


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file; torch files load with ``weights_only=True`` (no pickled
    code runs). A ``{"state_dict": ...}`` wrapper (HPSv2 checkpoints) is unwrapped."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path} holds more than tensors and cannot be loaded with weights_only=True: {e}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    return obj


def _pooled(out) -> torch.Tensor:
    """Projected features from ``get_image_features``/``get_text_features``: a tensor in transformers 4.x, an output
    whose ``pooler_output`` is the projection in 5.x."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipFeatures:
    """A CLIPModel with its tokenizer and preprocessing: L2-normalised image and text features of a batch."""

    def __init__(self, model, tokenizer, preprocess: ClipPreprocess, device: torch.device, dtype: torch.dtype):
        image_size = model.config.vision_config.image_size
        if preprocess.crop != image_size:
            raise ValueError(f"the processor crops {preprocess.crop} px but the CLIP model takes {image_size} px")
        self.model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.device, self.dtype = device, dtype
        self.max_length = model.config.text_config.max_position_embeddings  # 77 for every released CLIP

    @torch.no_grad()
    def image(self, images: np.ndarray) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> float32 [N, E], unit norm."""
        px = self.preprocess(images, self.device, self.dtype)
        return F.normalize(_pooled(self.model.get_image_features(pixel_values=px)).float(), dim=-1)

    @torch.no_grad()
    def text(self, prompts: list[str]) -> torch.Tensor:
        """N prompts -> float32 [N, E], unit norm. A GRPO batch repeats each prompt G times: each is encoded once."""
        uniq = list(dict.fromkeys(prompts))
        tok = self.tokenizer(uniq, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        out = self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                           attention_mask=tok["attention_mask"].to(self.device))
        feats = F.normalize(_pooled(out).float(), dim=-1)  # [U, E]
        index = {p: i for i, p in enumerate(uniq)}
        return feats[torch.tensor([index[p] for p in prompts], device=feats.device)]

    def cosine(self, images: np.ndarray, prompts: list[str]) -> torch.Tensor:
        """cos(î, t̂) per pair, float32 [N]."""
        return (self.image(images) * self.text(prompts)).sum(-1)


def load_clip(reward: str, model_path: str, processor_path: str | None, device: str, dtype: str) -> ClipFeatures:
    """A local ``CLIPModel`` directory, with tokenizer and preprocessing from ``processor_path`` (default: the same)."""
    mp = _local(reward, model_path, "model_path")
    pp = _local(reward, processor_path, "processor_path") if processor_path else mp
    dev, dt = _device_dtype(reward, device, dtype)
    from transformers import AutoTokenizer, CLIPModel  # after the checks: a bad option fails without the import

    model = _loaded(reward, "model_path", mp, "CLIPModel", lambda: CLIPModel.from_pretrained(mp, local_files_only=True))
    tokenizer = _loaded(reward, "processor_path" if processor_path else "model_path", pp, "CLIP tokenizer",
                        lambda: AutoTokenizer.from_pretrained(pp, local_files_only=True))
    return ClipFeatures(model, tokenizer, ClipPreprocess.from_pretrained(pp, model.config.vision_config.image_size),
                        dev, dt)


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().cpu().numpy()


# ----------------------------------------------------------------------------
# CLIP score, PickScore
# ----------------------------------------------------------------------------


@register("clip_score")
def clip_score(*, model_path: str, processor_path: str | None = None, device: str = "cpu",
               dtype: str = "float32") -> RewardFn:
    """cos(î, t̂) of any local ``CLIPModel`` (DanceGRPO's multi-reward recipe pairs HPS with DFN5B-CLIP-ViT-H-14,
    issue XueZeyue/DanceGRPO#19)."""
    clip = load_clip("clip_score", model_path, processor_path, device, dtype)
    return lambda images, prompts, metas: _numpy(clip.cosine(images, prompts))


@register("pickscore")
def pickscore(*, model_path: str, processor_path: str | None = None, device: str = "cpu",
              dtype: str = "float32") -> RewardFn:
    """exp(logit_scale) · cos(î, t̂): the PickScore logit (yuvalkirstain/PickScore README ``calc_probs``, before the
    softmax over candidate images). model_path = PickScore_v1, processor_path = the processor it was trained with
    (laion/CLIP-ViT-H-14-laion2B-s32B-b79K). CLIP training caps exp(logit_scale) at 100 and PickScore_v1 sits at
    about that cap, so scores are ~100 x the cosine (~22 on real images, an estimate from Flow-GRPO
    flow_grpo/pickscore_scorer.py's /26); Flow-GRPO divides by 26, DanceGRPO drops the scale (cosine only): set the
    reward weight accordingly."""
    clip = load_clip("pickscore", model_path, processor_path, device, dtype)
    scale = float(clip.model.logit_scale.detach().float().exp())
    return lambda images, prompts, metas: _numpy(scale * clip.cosine(images, prompts))


# ----------------------------------------------------------------------------
# LAION aesthetic predictor
# ----------------------------------------------------------------------------


def aesthetic_mlp(input_size: int = 768) -> nn.Sequential:
    """The improved-aesthetic-predictor head (christophschuhmann/improved-aesthetic-predictor, simple_inference.py;
    also ddpo-pytorch's aesthetic_scorer.py). It has no activations (upstream's ReLUs are commented out), so it is
    affine in the embedding; the Dropouts are inactive in eval mode. Its state dict keys are ``layers.{0,2,4,6,7}``."""
    return nn.Sequential(nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                         nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))


def load_aesthetic_head(path: str | Path, input_size: int) -> nn.Sequential:
    """The MLP from ``sac+logos+ava1-l14-linearMSE.pth`` (or any file with the same keys)."""
    sd = {k.removeprefix("layers."): v for k, v in load_weights(path).items()}
    head = aesthetic_mlp(input_size)
    expected = set(head.state_dict())
    if set(sd) != expected:
        raise ValueError(f"{path} is not an aesthetic-predictor head: expected keys layers.{{0,2,4,6,7}}.weight/bias, "
                         f"got {sorted(sd)[:8]}")
    if sd["0.weight"].shape[1] != input_size:
        raise ValueError(f"{path}: the head takes {sd['0.weight'].shape[1]}-d embeddings but the CLIP model projects "
                         f"to {input_size} (the LAION head needs CLIP ViT-L/14: 768)")
    head.load_state_dict({k: v.float() for k, v in sd.items()})
    return head.eval().requires_grad_(False)


@register("aesthetic")
def aesthetic(*, model_path: str, head_path: str, device: str = "cpu", dtype: str = "float32") -> RewardFn:
    """MLP(î): the LAION aesthetic predictor. model_path = CLIP ViT-L/14 (openai/clip-vit-large-patch14),
    head_path = ``sac+logos+ava1-l14-linearMSE.pth`` (or a .safetensors copy). Scores are on the AVA 1-10 scale."""
    clip = load_clip("aesthetic", model_path, None, device, dtype)
    head = load_aesthetic_head(_local("aesthetic", head_path, "head_path"), clip.model.config.projection_dim)
    head = head.to(clip.device)  # float32 always: the head is tiny and fp32 keeps the score's last digits

    def fn(images: np.ndarray, prompts: list[str], metas: list[dict]) -> np.ndarray:
        with torch.no_grad():
            return _numpy(head(clip.image(images)).squeeze(-1))

    return fn


# ----------------------------------------------------------------------------
# HPS-v2.1: an OpenCLIP checkpoint through transformers' CLIPModel
# ----------------------------------------------------------------------------

@register("hps")
def hps(*, model_path: str, tokenizer_path: str, vision_heads: int = 16, text_heads: int = 16,
        hidden_act: str = "gelu", device: str = "cpu", dtype: str = "float32") -> RewardFn:
    """HPS-v2.1 without open_clip or torchvision: the OpenCLIP ViT-H-14 checkpoint (``HPS_v2.1_compressed.pt``,
    hub xswu/HPSv2) converted into a transformers CLIPModel. Score = î·t̂, the diagonal of
    ``image_features @ text_features.T`` with normalised features, as HPSv2's score.py reports it.
    tokenizer_path = any local CLIP tokenizer directory (all CLIPs share one BPE vocabulary), e.g.
    laion/CLIP-ViT-H-14-laion2B-s32B-b79K. Preprocessing is open_clip's eval transform: Resize(224, bicubic),
    CenterCrop(224), OpenAI mean/std. HPSv2 itself scores under CUDA fp16 autocast; this runs in ``dtype``."""
    path = _local("hps", model_path, "model_path")
    tok_path = _local("hps", tokenizer_path, "tokenizer_path")
    dev, dt = _device_dtype("hps", device, dtype)
    from transformers import AutoTokenizer

    tokenizer = _loaded("hps", "tokenizer_path", tok_path, "CLIP tokenizer",
                        lambda: AutoTokenizer.from_pretrained(tok_path, local_files_only=True))
    if tokenizer.eos_token_id is None:
        raise ValueError(f"reward 'hps': the tokenizer in {tok_path} has no end-of-text token (the text tower pools it)")
    model = clip_from_openclip(load_weights(path), vision_heads=vision_heads, text_heads=text_heads,
                               hidden_act=hidden_act, bos_token_id=tokenizer.bos_token_id,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    size = model.config.vision_config.image_size
    clip = ClipFeatures(model, tokenizer, ClipPreprocess(size=size, crop=size, crop_rounding="round"), dev, dt)
    return lambda images, prompts, metas: _numpy(clip.cosine(images, prompts))


@register("hps_openclip")
def hps_openclip(*, model_path: str, arch: str = "ViT-H-14", device: str = "cpu") -> RewardFn:
    """HPS-v2.1 through open_clip itself (``pip install 'slas[hps]'``; it pulls torchvision): the reference
    implementation of ``hps``, for checking it on a machine where open_clip imports. Runs in float32."""
    try:
        import open_clip
    except ImportError as e:
        raise ImportError(
            "reward 'hps_openclip' needs open_clip: pip install 'slas[hps]' (it pulls torchvision, which does not "
            "import beside the CPU torch build); the reward 'hps' scores the same checkpoint without it") from e
    from PIL import Image

    path = _local("hps_openclip", model_path, "model_path")
    dev, _ = _device_dtype("hps_openclip", device, "float32")
    model, _, preprocess_val = open_clip.create_model_and_transforms(arch, pretrained=None, precision="fp32",
                                                                     device=dev)
    model.load_state_dict({k.removeprefix("module."): v for k, v in load_weights(path).items()})
    model.eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(arch)

    def fn(images: np.ndarray, prompts: list[str], metas: list[dict]) -> np.ndarray:
        px = torch.stack([preprocess_val(Image.fromarray(im)) for im in images]).to(dev)
        with torch.no_grad():
            img = F.normalize(model.encode_image(px).float(), dim=-1)
            txt = F.normalize(model.encode_text(tokenizer(prompts).to(dev)).float(), dim=-1)
        return _numpy((img * txt).sum(-1))

    return fn


# ----------------------------------------------------------------------------
# ImageReward
# ----------------------------------------------------------------------------


@register("imagereward")
def imagereward(*, model_path: str, med_config: str, device: str = "cpu") -> RewardFn:
    """ImageReward (THUDM/ImageReward, ``pip install 'slas[imagereward]'``): BLIP text features cross-attending to
    the image, an MLP, then ``(r - 0.16717) / 1.03334`` (the package's own constants). model_path = ImageReward.pt,
    med_config = med_config.json (both from hub THUDM/ImageReward); the package's ``ImageReward.load`` would
    download med_config, so the model is built here from local files. BLIP's BERT tokenizer
    (bert-base-uncased) still comes from the Hugging Face cache. Scores the batch at once, with the same maths
    as the package's per-image ``score``. Runs in float32."""
    try:
        from ImageReward.ImageReward import ImageReward as ImageRewardModel
    except ImportError as e:
        raise ImportError("reward 'imagereward' needs the ImageReward package: pip install 'slas[imagereward]'") from e
    from PIL import Image

    path = _local("imagereward", model_path, "model_path")
    med = _local("imagereward", med_config, "med_config")
    dev, _ = _device_dtype("imagereward", device, "float32")
    model = ImageRewardModel(med_config=str(med), device=dev)
    result = model.load_state_dict(load_weights(path), strict=False)  # strict=False as ImageReward.load does
    n_missing = len(result.missing_keys)
    if any(k.startswith("mlp.") for k in result.missing_keys) or n_missing > len(model.state_dict()) // 2:
        raise ValueError(f"{path} is not an ImageReward checkpoint: {n_missing} model keys missing, "
                         f"e.g. {result.missing_keys[:4]}")
    model = model.to(dev).eval().requires_grad_(False)

    def fn(images: np.ndarray, prompts: list[str], metas: list[dict]) -> np.ndarray:
        px = torch.stack([model.preprocess(Image.fromarray(im)) for im in images]).to(dev)
        with torch.no_grad():
            emb = model.blip.visual_encoder(px)  # [N, L, D]
            att = torch.ones(emb.shape[:-1], dtype=torch.long, device=dev)
            tok = model.blip.tokenizer(prompts, padding="max_length", truncation=True, max_length=35,
                                       return_tensors="pt").to(dev)
            out = model.blip.text_encoder(tok.input_ids, attention_mask=tok.attention_mask,
                                          encoder_hidden_states=emb, encoder_attention_mask=att, return_dict=True)
            r = model.mlp(out.last_hidden_state[:, 0, :].float()).squeeze(-1)  # [N]
        return _numpy((r - model.mean) / model.std)

    return fn
