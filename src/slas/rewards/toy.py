"""ShapesWorld rewards from the verifier (slas.toyworld.verifier)."""

from __future__ import annotations

import numpy as np

from ..toyworld.verifier import _COLORS_ARR, ASSIGN_DIST, VerifyResult, verify
from . import register

# One verifier pass serves every toy reward of a batch: when a config weights
# several of them, the second one reads the cached results. The key holds the
# image bytes themselves, so a new batch in a reused buffer is never confused.
_last: tuple[bytes, tuple[str, ...], list[VerifyResult]] | None = None


def _results(images: np.ndarray, metas: list[dict]) -> list[VerifyResult]:
    global _last
    key = (images.tobytes(), tuple(m["prompt"] for m in metas))
    if _last is None or _last[:2] != key:
        _last = (*key, [verify(img, m) for img, m in zip(images, metas, strict=True)])
    return _last[2]


def _field(name: str):
    def factory():
        def fn(images: np.ndarray, prompts: list[str], metas: list[dict]) -> np.ndarray:
            return np.array([float(getattr(r, name)) for r in _results(images, metas)])

        return fn

    return factory


# Strict partial credit: exact counts, colours, relations and a cleanliness
# term; 1 exactly when the gold judge says correct. The default RL reward.
register("toy_score")(_field("score"))
# GenEval-rule partial credit (Flow-GRPO's GenEval reward): ignores unprompted
# objects and debris, so it can be hacked by spraying blobs (FEASIBILITY.md).
# Documented as `toy_geneval` (slas.rewards.proxies); this name is kept for existing configs.
register("toy_geneval_score")(_field("geneval_score"))
# The binary gold itself (sparse).
register("toy_correct")(_field("correct"))


def clean_score(images: np.ndarray) -> np.ndarray:
    """Dense cleanliness in [0, 1] per image [N]: the mean over pixels of ``max(0, 1 - d / ASSIGN_DIST)``,
    where ``d`` is the RGB distance to the nearest palette colour or the background. Flat, crisp colours
    score 1; the in-between colours that become debris, ambiguous blobs and misread shapes score less.
    Unlike ``score`` it changes smoothly with every pixel, so small exploration noise moves it."""
    img = images.astype(np.float32)  # [N, H, W, 3]
    d = np.linalg.norm(img[..., None, :] - _COLORS_ARR, axis=-1).min(-1)  # [N, H, W]
    return np.clip(1.0 - d / ASSIGN_DIST, 0.0, 1.0).mean(axis=(1, 2)).astype(np.float64)


# Dense, prompt-agnostic image cleanliness (not a gold judge: an empty canvas scores 1). Use it with
# toy_score, never alone.
register("toy_clean")(lambda: lambda images, prompts, metas: clean_score(images))
