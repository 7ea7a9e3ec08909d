"""ShapesWorld proxy rewards: what RL optimises in a reward-hacking study, while the strict verifier is the gold.

- ``toy_geneval``: GenEval's lenient partial credit (``VerifyResult.geneval_score``; Flow-GRPO's GenEval
  reward). It ignores unprompted objects and debris, so spraying blobs can raise it.
- ``toy_biased(lam=0.5)``: ``score + lam * saturation``, the strict partial credit plus a systematic bias of
  HPS-like preference models for saturated images (``slas.toyworld.image_stats.saturation``: mean HSV saturation,
  in [0, 1]). Coloured area counts whatever the prompt asks, so more or larger shapes pay.
- ``toy_pref(checkpoint=None)``: a small learned reward model (``PrefModel``, about 24k parameters) trained
  with a Bradley-Terry loss on a few thousand preference pairs of base-model samples, labelled by the verifier's
  score plus the same saturation bias plus label noise (``slas.toyworld.pref_train``; docs/hacking.md). Limited,
  biased data: it agrees with the verifier on base-model pairs but can be exploited off its training
  distribution, like HPS. The shipped weights are ``slas/toyworld/checkpoints/toy_pref``.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slas.rewards import register
from slas.toyworld.image_stats import saturation
from slas.toyworld.rewards import _field, _results, prepare_meta
from slas.toyworld.world import CANVAS, VOCAB_WORDS

DEFAULT_LAM = 0.5  # bias weight of toy_biased, and of the annotator that labels toy_pref's training pairs

# GenEval-rule partial credit (Flow-GRPO's GenEval reward)
register("toy_geneval", prepare=prepare_meta)(_field("geneval_score"))


def biased_score(images: np.ndarray, metas: list[dict], lam: float = DEFAULT_LAM) -> np.ndarray:
    """``verify(image).score + lam * saturation(image)`` per image, float64 [N]."""
    return np.array([r.score for r in _results(images, metas)]) + lam * saturation(images)


@register("toy_biased", prepare=prepare_meta)
def toy_biased(lam: float = DEFAULT_LAM):
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not np.isfinite(lam):
        raise ValueError(f"toy_biased: lam must be a finite number (the weight of the saturation bias), got {lam!r}")

    def fn(images: np.ndarray, prompts: list[str], metas: list[dict]) -> np.ndarray:
        return biased_score(images, metas, float(lam))

    return fn


# ----------------------------------------------------------------------------
# The learned reward model
# ----------------------------------------------------------------------------

SPECIAL = ("<pad>", "<unk>")
VOCAB = {w: i for i, w in enumerate(SPECIAL + VOCAB_WORDS)}
MAX_WORDS = 12  # the longest ShapesWorld prompt has 10 words


def tokenize(prompts: list[str]) -> torch.Tensor:
    """Word ids [N, MAX_WORDS], 0-padded; an unknown word is <unk>."""
    out = torch.zeros(len(prompts), MAX_WORDS, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids = [VOCAB.get(w, 1) for w in p.lower().split()][:MAX_WORDS]
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


class PrefModel(nn.Module):
    """r(image, prompt): a conv image tower, FiLM-modulated by a word-level text embedding, and an MLP head.

    image [N, 3, 32, 32] -> conv 16 (stride 1), conv 32 (stride 2), conv ``width`` (stride 2) -> [N, width, 8, 8];
    text: word + position embeddings, mean over the prompt's words -> [N, width], which scales and shifts the
    last conv's channels; the spatial mean and max of that map and the text vector go through a 2-layer MLP to
    one scalar. Global pooling keeps the head small (24k parameters in all): with a flattened map the model
    memorised its few thousand pairs and ranked held-out pairs at chance.
    """

    def __init__(self, width: int = 32, hidden: int = 64):
        super().__init__()
        self.config = {"width": width, "hidden": hidden}
        self.words = nn.Embedding(len(VOCAB), width, padding_idx=0)
        self.pos = nn.Embedding(MAX_WORDS, width)
        self.convs = nn.ModuleList([nn.Conv2d(3, 16, 3, 1, 1), nn.Conv2d(16, 32, 3, 2, 1), nn.Conv2d(32, width, 3, 2, 1)])
        self.film = nn.Linear(width, 2 * width)
        self.head = nn.Sequential(nn.Linear(3 * width, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids > 0).float().unsqueeze(-1)  # [N, L, 1]
        e = (self.words(ids) + self.pos.weight[None, : ids.shape[1]]) * mask
        return e.sum(1) / mask.sum(1).clamp(min=1)  # [N, width]

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """images float [N, 3, H, W] in [-1, 1], ids [N, L] -> raw scores [N]."""
        t = self.encode_text(ids)
        x = images
        for conv in self.convs[:-1]:
            x = torch.relu(conv(x))
        gamma, beta = self.film(t).chunk(2, dim=-1)  # [N, width] each
        x = torch.relu(self.convs[-1](x) * (1 + gamma[..., None, None]) + beta[..., None, None])  # [N, width, 8, 8]
        return self.head(torch.cat([x.mean((2, 3)), x.amax((2, 3)), t], dim=1)).squeeze(-1)


def mirror_prompt(prompt: str) -> str:
    """The prompt of the horizontally mirrored image: "left" and "right" swapped (the verifier's judgement of an
    image and of its mirror under the mirrored prompt is the same)."""
    return " ".join({"left": "right", "right": "left"}.get(w, w) for w in prompt.split())


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1]."""
    if images.ndim != 4 or images.shape[1:] != (CANVAS, CANVAS, 3) or images.dtype != np.uint8:
        raise ValueError(f"toy_pref scores ShapesWorld images, uint8 [N, {CANVAS}, {CANVAS}, 3]; got "
                         f"{images.dtype} {list(images.shape)}")
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def default_pref_checkpoint() -> Path:
    return Path(__file__).resolve().parents[1] / "toyworld" / "checkpoints" / "toy_pref"


def save_pref(model: PrefModel, path: Path, info: dict) -> None:
    """``model.safetensors`` + ``config.json`` (architecture, output normalisation, training record)."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"arch": model.config, "vocab": list(VOCAB)} | info, indent=2) + "\n")


@cache
def load_pref(path: str | None = None) -> tuple[PrefModel, float, float]:
    """The reward model of a checkpoint directory (default: the shipped one), and its output mean and std."""
    from safetensors.torch import load_file

    p = Path(path) if path is not None else default_pref_checkpoint()
    if not (p / "model.safetensors").is_file() or not (p / "config.json").is_file():
        raise FileNotFoundError(f"no toy_pref checkpoint at {p}: expected model.safetensors and config.json "
                                "(make one with `slas toyworld train-pref --out DIR`)")
    cfg = json.loads((p / "config.json").read_text())
    if cfg["vocab"] != list(VOCAB):
        raise ValueError(f"{p} was trained with another vocabulary than ShapesWorld's current one")
    model = PrefModel(**cfg["arch"])
    model.load_state_dict(load_file(str(p / "model.safetensors")))
    return model.eval(), float(cfg["norm"]["mean"]), float(cfg["norm"]["std"])


@torch.no_grad()
def pref_scores(model: PrefModel, images: np.ndarray, prompts: list[str], batch_size: int = 512) -> np.ndarray:
    """Raw scores [N] float64."""
    out = [model(to_input(images[i : i + batch_size]), tokenize(prompts[i : i + batch_size])).double()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0)


@register("toy_pref")
def toy_pref(checkpoint: str | None = None):
    """Standardised score ``(r - mean) / std``, mean and std of r over the base-model images it was trained on."""
    model, mean, std = load_pref(None if checkpoint is None else str(Path(checkpoint).resolve()))

    def fn(images: np.ndarray, prompts: list[str], metas: list[dict]) -> np.ndarray:
        return (pref_scores(model, images, prompts) - mean) / std

    return fn
