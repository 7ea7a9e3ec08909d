"""ShapesWorld rewards from the verifier (slas.toyworld.verifier)."""

from __future__ import annotations

import numpy as np

from ..toyworld.verifier import VerifyResult, verify
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
register("toy_geneval_score")(_field("geneval_score"))
# The binary gold itself (sparse).
register("toy_correct")(_field("correct"))
