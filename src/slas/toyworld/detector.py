"""ShapesWorld's GenEval detector: the verifier's connected components as GenEval detections
(``slas.evals.detectors`` protocol). Its GenEval score is, image for image, the verifier's ``geneval_correct``."""

from __future__ import annotations

import numpy as np

from slas.evals.geneval import COLORS
from slas.toyworld.verifier import LENIENT_MIN_AREA, _check_image, detect


def shapesworld_detections(image: np.ndarray) -> list[dict]:
    """GenEval detections of a ShapesWorld image: every component the verifier's lenient judge counts.

    The verifier has no confidence; it ranks objects by area (largest first) where upstream ranks by score. Every
    detection gets confidence 1.0 (above both thresholds, so counting prompts lose nothing) in the verifier's order,
    and ``select_detections``'s stable sort keeps that order, so "the ``count`` most confident" are the ``count``
    largest, exactly as in ``verifier._geneval``. Unreadable colours become ``None``.
    """
    dets, _ = detect(_check_image(image))
    return [
        {"class": d.cls, "confidence": 1.0, "box": [float(v) for v in d.box],
         "color": d.color if d.color in COLORS else None}
        for d in dets
        if d.area >= LENIENT_MIN_AREA
    ]


class ShapesWorldDetector:
    """Detector (a): ShapesWorld's verifier; needs no model and ignores the metadata."""

    name = "shapesworld"

    def __call__(self, image: np.ndarray, metadata: dict) -> list[dict]:
        return shapesworld_detections(image)
