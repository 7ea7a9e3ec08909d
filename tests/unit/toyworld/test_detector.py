"""Detector (a), the ShapesWorld verifier as a GenEval detector (slas.toyworld.detector), checked against the verifier's
own GenEval judge image by image."""

from __future__ import annotations

import random

import numpy as np

from slas.evals import geneval
from slas.toyworld import CANVAS, all_prompts, render, verify
from slas.toyworld.detector import shapesworld_detections


def test_shapesworld_detector_reproduces_the_verifier_geneval_judge():
    """Clean renders judged against their own and other prompts, plus noisy ones (debris, unknown colours)."""
    rng = random.Random(0)
    metas = all_prompts()
    n_correct = 0
    for i in range(240):
        m = rng.choice(metas)
        shown = m if i % 3 == 0 else rng.choice([x for x in metas if x["tag"] == m["tag"]])
        img = render(shown, i)
        if i % 2:
            noise = np.random.default_rng(i).normal(0, 40, img.shape)
            img = np.clip(img + noise * (np.random.default_rng(i + 1).random(img.shape[:2]) < 0.05)[..., None], 0, 255)
            img = img.astype(np.uint8)
        ours = geneval.evaluate_detections(m, shapesworld_detections(img), (CANVAS, CANVAS))
        assert ours["correct"] == verify(img, m).geneval_correct, (m["prompt"], ours["reason"])
        n_correct += ours["correct"]
    assert 40 < n_correct < 200  # both outcomes exercised
