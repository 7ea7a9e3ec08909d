"""The tiny ShapesWorld text-to-image model, built from stock library classes.

- tokenizer: a word-level ``tokenizers`` model over the grammar's words,
  wrapped as ``transformers.PreTrainedTokenizerFast`` (built in-process, no files);
- text encoder: ``transformers.CLIPTextModel`` (2 layers);
- denoiser: ``diffusers.UNet2DConditionModel`` in pixel space (3 x 32 x 32),
  cross-attending to the text tokens, predicting the rectified-flow velocity
  ``v = noise - x0`` at ``x_sigma = (1 - sigma) x0 + sigma noise``.

A pixel-space convnet draws clean flat shapes after a short CPU pretraining,
where a patch-4 DiT drew patch debris (docs/shapesworld.md).
Checkpoints are ``model.safetensors`` + ``config.json``; nothing is pickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from slas.toyworld.world import CANVAS, VOCAB_WORDS

MAX_TOKENS = 16  # longest prompt is 10 words + BOS/EOS
SPECIAL = ["<pad>", "<unk>", "<bos>", "<eos>"]  # ids 0..3

_DOWN = ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
_UP = ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]
SIZES: dict[str, dict] = {
    # "M" is the shipped default; "S" is a ~3x cheaper variant for quick studies.
    # The UNet runs on 2x2 space-to-depth pixels (12 x 16 x 16): levels 16/8/4,
    # text cross-attention at 8x8 and 4x4. At 32x32 the same net is 3.5x slower
    # on 2 CPU cores (benchmarks/model_speed.py).
    "M": dict(block_out_channels=[32, 64, 128], down_block_types=_DOWN, up_block_types=_UP, heads=2,
              text_hidden=64, text_layers=2),
    "S": dict(block_out_channels=[16, 32, 64], down_block_types=_DOWN, up_block_types=_UP, heads=1,
              text_hidden=32, text_layers=2),
    # "L": 1.5x the channels of M (9.4M parameters, 2.2x M's). Not 2x: that net (16.8M)
    # took 156 min to pretrain on 2 cores and 33.5 MB in fp16, too large to ship.
    "L": dict(block_out_channels=[48, 96, 192], down_block_types=_DOWN, up_block_types=_UP, heads=3,
              text_hidden=96, text_layers=2),
    # "XL": the 2x-width net (16.8M parameters, ~4x M's FLOPs), for throughput studies at random init
    # (benchmarks/throughput.py --model XL, docs/performance.md); never pretrained here.
    "XL": dict(block_out_channels=[64, 128, 256], down_block_types=_DOWN, up_block_types=_UP, heads=4,
               text_hidden=128, text_layers=2),
    # XS: tests only (random init, fast), never pretrained
    "XS": dict(block_out_channels=[8, 16, 16], down_block_types=_DOWN, up_block_types=_UP, heads=1,
               text_hidden=16, text_layers=1),
}
PATCH = 2  # space-to-depth factor (pixel_unshuffle) in front of the UNet


def build_tokenizer():
    """Word-level tokenizer over the ShapesWorld vocabulary (deterministic ids)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIAL + list(VOCAB_WORDS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        model_max_length=MAX_TOKENS,
    )


class ToyT2I(nn.Module):
    """Text encoder + pixel-space UNet. ``config`` fully determines the layout."""

    def __init__(self, config: dict):
        super().__init__()
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        self.config = dict(config)
        h = config["text_hidden"]
        self.tokenizer = build_tokenizer()
        self.text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(SPECIAL) + len(VOCAB_WORDS),
                hidden_size=h,
                intermediate_size=2 * h,
                num_hidden_layers=config["text_layers"],
                num_attention_heads=4,
                max_position_embeddings=MAX_TOKENS,
                projection_dim=h,
                hidden_act="gelu",
                pad_token_id=0,
                bos_token_id=2,
                eos_token_id=3,
            )
        )
        self.unet = UNet2DConditionModel(
            sample_size=CANVAS // PATCH,
            in_channels=3 * PATCH * PATCH,
            out_channels=3 * PATCH * PATCH,
            layers_per_block=1,
            block_out_channels=config["block_out_channels"],
            down_block_types=config["down_block_types"],
            up_block_types=config["up_block_types"],
            cross_attention_dim=h,
            # diffusers' UNet2DConditionModel reads `attention_head_dim` as the
            # number of heads (see its __init__ comment on the legacy naming).
            attention_head_dim=config["heads"],
            norm_num_groups=8,
        )

    def tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Text conditioning: ``hidden`` [N, L, D] and ``mask`` [N, L]."""
        tok = self.tokenize(prompts)
        hidden = self.text_encoder(**tok).last_hidden_state
        return {"hidden": hidden, "mask": tok["attention_mask"]}

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """v [N, 3, H, W] at x [N, 3, H, W], sigma [N] in [0, 1]."""
        # diffusers UNets embed timesteps sinusoidally; 1000*sigma matches the
        # scale their embeddings were designed for (SD3/FLUX use the same map).
        z = nn.functional.pixel_unshuffle(x, PATCH)  # [N, 12, H/2, W/2]
        out = self.unet(z, sigma * 1000.0, encoder_hidden_states=cond["hidden"], encoder_attention_mask=cond["mask"])
        return nn.functional.pixel_shuffle(out.sample, PATCH)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(size: str = "M") -> ToyT2I:
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; expected one of {list(SIZES)}")
    return ToyT2I(SIZES[size] | {"size": size})


INT8_SCALE = ".int8_scale"  # key suffix of the per-row scales of an int8-stored weight
# Stay fp16 under int8 storage: the pixel-facing first and last convs (the usual exception in weight quantization)
# and tensors under INT8_MIN_NUMEL elements, 0.4% of toy_M's parameters. On toy_M, int8 for every matrix moves the
# velocity by 2.0% (relative RMS) and flips 13.3% of the 300 `eval` verdicts (strict 32.3% -> 29.0%); with these
# exceptions, 0.2% and 2.3% (32.0%). `benchmarks/int8_check.py toy_M [--quantize-all]`.
INT8_KEEP = ("unet.conv_in.", "unet.conv_out.")
INT8_MIN_NUMEL = 4096


def _per_row(scale: torch.Tensor, dim: int) -> torch.Tensor:
    """[O] -> [O, 1, ...] with ``dim`` dims, to broadcast one scale over each row of a weight."""
    return scale.view(-1, *[1] * (dim - 1))


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-row int8: w [O, ...] -> (q int8 [O, ...], scale fp32 [O]), w ~ q * scale.

    Per row rather than per tensor because conv/attention rows differ in range by 10-100x; the rounding error of an
    element is at most half its row's scale (max|row| / 254)."""
    w = w.detach().float()
    amax = w.reshape(w.shape[0], -1).abs().amax(dim=1)  # [O]
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))  # an all-zero row keeps scale 1
    q = torch.round(w / _per_row(scale, w.dim())).clamp_(-127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo ``quantize_int8`` for every ``key`` with a ``key + INT8_SCALE`` partner; other tensors pass through."""
    out = {}
    for k, v in state.items():
        if k.endswith(INT8_SCALE):
            continue
        scale = state.get(k + INT8_SCALE)
        if scale is not None:
            v = v.float() * _per_row(scale.float(), v.dim())
        out[k] = v
    return out


def save(model: ToyT2I, path: str | os.PathLike, extra: dict | None = None, dtype: torch.dtype | None = None) -> None:
    """Write ``model.safetensors`` + ``config.json`` into directory ``path``.

    ``dtype=torch.float16`` halves the file (the shipped S and M); ``torch.int8`` halves it again (the shipped
    L): every matrix and conv kernel becomes int8 with per-row fp32 scales (``quantize_int8``) except
    ``INT8_KEEP`` and small ones, which stay fp16 with the vectors (biases, norms). ``load`` always returns fp32
    weights, because bf16/fp16 compute is slow on CPU."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach()
        if (dtype == torch.int8 and v.is_floating_point() and v.dim() >= 2 and v.numel() >= INT8_MIN_NUMEL
                and not k.startswith(INT8_KEEP)):
            state[k], state[k + INT8_SCALE] = quantize_int8(v)
        elif dtype is not None and v.is_floating_point():
            state[k] = v.to(torch.float16 if dtype == torch.int8 else dtype)
        else:
            state[k] = v
    state = {k: v.contiguous() for k, v in state.items()}
    tmp = path / "model.safetensors.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, path / "model.safetensors")
    stored = {"weights_dtype": str(dtype).removeprefix("torch.")} if dtype is not None else {}
    config = model.config | {"n_params": count_parameters(model)} | stored | (extra or {})
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")


SHIPPED = ("toy_S", "toy_M", "toy_L")  # pretrained checkpoints inside the package, by name
_CHECKPOINTS = Path(__file__).parent / "checkpoints"


def default_checkpoint() -> Path:
    """The shipped, pretrained size-M checkpoint inside the package."""
    return _CHECKPOINTS / "toy_M"


def resolve_checkpoint(path: str | os.PathLike | None) -> Path:
    """A checkpoint directory: ``None`` is the shipped M; a shipped name (``toy_S``, ``toy_M``, ``toy_L``) that
    is not an existing path is the package's copy, so that a config can name it wherever slas is installed."""
    if path is None:
        return default_checkpoint()
    if str(path) in SHIPPED and not Path(path).exists():
        return _CHECKPOINTS / str(path)
    return Path(path)


def load(path: str | os.PathLike | None = None) -> ToyT2I:
    """Load a checkpoint directory or shipped name (default: the shipped M). Never unpickles. Every file is checked
    before it is used: a missing, truncated or corrupt ``model.safetensors``, a ``config.json`` that is not JSON or
    not a ShapesWorld model's, or weights that do not fit it, is a ``RunError`` (a ``ValueError``) naming the file
    and what is wrong; a directory that is not there is a ``FileNotFoundError``."""
    from slas.recipe.checkpoint import RunError, read_json, read_tensors

    path = resolve_checkpoint(path)
    weights, cfg_file = path / "model.safetensors", path / "config.json"
    if not path.is_dir() or not (weights.exists() or cfg_file.exists()):
        raise FileNotFoundError(
            f"no ShapesWorld checkpoint at {path}: expected model.safetensors and config.json "
            "(make one with `slas toyworld pretrain --out DIR`)"
        )
    for f in (cfg_file, weights):
        if not f.is_file():
            raise RunError(f"{f}: missing; a ShapesWorld checkpoint directory holds model.safetensors and config.json")
    config = read_json(cfg_file)
    arch = {k: config.get(k) for k in SIZES["M"]} if isinstance(config, dict) else {}
    ints = [arch.get(k) for k in ("heads", "text_hidden", "text_layers")] + list(arch.get("block_out_channels") or [])
    names = list(arch.get("down_block_types") or []) + list(arch.get("up_block_types") or [])
    if (not isinstance(config, dict) or not all(isinstance(arch[k], list) for k in _LISTS)
            or not all(type(v) is int and v > 0 for v in ints) or not all(isinstance(v, str) for v in names)):
        raise RunError(f"{cfg_file}: not a ShapesWorld model's config: it needs {', '.join(SIZES['M'])} "
                       "(positive integers and lists of them, block type names)")
    try:
        model = ToyT2I(arch | {"size": config.get("size", "?")})
    except Exception as e:  # diffusers / transformers refusing the layout (e.g. channels that heads do not divide)
        raise RunError(f"{cfg_file}: does not describe a ShapesWorld model that can be built: "
                       f"{' '.join(str(e).split())[:200]}") from None
    model.config = config
    try:
        state = dequantize_int8(read_tensors(weights))
    except (KeyError, RuntimeError, TypeError) as e:  # an int8 weight without its scale, or one of another shape
        raise RunError(f"{weights}: its int8 weights and scales do not match ({e}); the file is corrupt") from None
    want = model.state_dict()
    missing, unexpected = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    bad = [k for k in set(want) & set(state) if state[k].shape != want[k].shape]
    if missing or unexpected or bad:
        detail = (f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
                  if missing or unexpected else
                  f"{bad[0]} is {tuple(state[bad[0]].shape)}, the config's model {tuple(want[bad[0]].shape)}")
        raise RunError(f"{weights} does not fit the model {cfg_file} describes: {detail}")
    model.load_state_dict(state)
    return model.eval()


_LISTS = ("block_out_channels", "down_block_types", "up_block_types")
