"""GenEval detector (b), Mask2Former + CLIP (slas.evals.detectors), end to end on tiny random models built offline."""

from __future__ import annotations

import numpy as np

from slas.evals import detectors, geneval


def test_mask2former_detector_runs_end_to_end(tiny_detector_dirs):
    m2f, clip = tiny_detector_dirs
    # threshold 0: a random model's scores (~1/81) would keep nothing, and the colour path would not run
    det = detectors.Mask2FormerDetector(m2f, clip, threshold=0.0)
    img = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)  # not the network's size or aspect
    inst = det.instances(img)
    assert inst.masks.shape == (100, 48, 80)  # mmdet's max_per_image of the 6 x 80 (query, class) pairs
    plain = det(img, {"tag": "two_object", "include": [], "prompt": "p"})
    assert len(plain) == 100 and {d["class"] for d in plain} <= set(detectors.GENEVAL_OBJECT_NAMES)
    for d in plain:
        assert set(d) == {"class", "confidence", "box", "color"} and 0.0 <= d["confidence"] <= 1.0
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 <= x1 <= 80 and 0 <= y0 <= y1 <= 48
    assert all(d["color"] is None for d in plain)  # no colour clause: CLIP is not asked
    # a colour prompt over the two classes the random model is most confident about
    top = [d["class"] for d in sorted(plain, key=lambda d: -d["confidence"]) if d["confidence"] > 0]
    first, second = top[0], next(c for c in top if c != top[0])
    meta = {"tag": "color_attr", "prompt": "p", "include": [{"class": first, "count": 1, "color": "red"},
                                                            {"class": second, "count": 1, "color": "blue"}]}
    dets = det(img, meta)
    colored = [d for d in dets if d["color"] is not None]
    assert sorted(d["class"] for d in colored) == sorted([first, second])  # the top one of each, nothing else
    assert all(d["color"] in geneval.COLORS for d in colored)
    r = geneval.evaluate_detections(meta, dets, (48, 80), threshold=0.0)
    assert isinstance(r["correct"], bool)
