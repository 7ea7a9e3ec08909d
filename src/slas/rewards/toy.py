"""ShapesWorld rewards from the verifier (slas.toyworld.verifier)."""

from __future__ import annotations

import numpy as np

from ..toyworld.verifier import verify
from . import register


def _field(name: str):
    def factory():
        def fn(images: np.ndarray, prompts: list[str], metas: list[dict]) -> np.ndarray:
            return np.array([float(getattr(verify(img, m), name)) for img, m in zip(images, metas, strict=False)])

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
