"""GenEval detector (b), Mask2Former + CLIP (slas.evals.detectors), on hand-made model outputs with known answers:
post-processing, the colour classifier, crops, the label mapping."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from slas.evals import detectors, geneval
from slas.evals.detectors import (
    ColorClassifier,
    color_requests,
    crop_object,
    detections_with_colors,
    instance_postprocess,
    mask2bbox,
)

OBJECT_NAMES_FILE = Path("/work/shared/data/geneval/object_names.txt")


H = W = 8


REGIONS = {"A": (slice(2, 5), slice(0, 3)), "B": (slice(2, 5), slice(5, 8)), "C": (slice(6, 8), slice(4, 6))}


def _logits(probs: list[float]) -> list[float]:
    return [math.log(p) for p in probs]


def _hand_made() -> tuple[torch.Tensor, torch.Tensor]:
    """Q=3 queries over classes (cup, dog) + no-object: q0 a cup in A, q1 a cup in B, q2 a dog in C."""
    cls = torch.tensor([_logits([0.97, 0.01, 0.02]), _logits([0.90, 0.04, 0.06]), _logits([0.02, 0.50, 0.48])])
    masks = torch.full((3, H, W), -10.0)
    for q, (region, p) in enumerate([("A", 0.99), ("B", 0.99), ("C", 0.8)]):
        masks[q][REGIONS[region]] = math.log(p / (1 - p))  # sigmoid = p inside the mask
    return cls, masks


def test_mask2bbox_is_tight_with_exclusive_ends():
    m = torch.zeros(2, 5, 6, dtype=torch.bool)
    m[0, 1:3, 2:5] = True
    assert mask2bbox(m).tolist() == [[2.0, 1.0, 5.0, 3.0], [0.0, 0.0, 0.0, 0.0]]  # empty mask: zeros, as mmdet


def test_instance_postprocess_scores_boxes_and_top_k():
    cls, masks = _hand_made()
    inst = instance_postprocess(cls, masks, max_per_image=3)  # top 3 of the 6 (query, class) pairs
    got = sorted(zip(inst.labels.tolist(), inst.scores.tolist(), inst.boxes.tolist(), strict=True), key=lambda t: -t[1])
    assert [g[0] for g in got] == [0, 0, 1]
    assert [round(g[1], 5) for g in got] == [round(0.97 * 0.99, 5), round(0.90 * 0.99, 5), round(0.50 * 0.8, 5)]
    assert [g[2] for g in got] == [[0, 2, 3, 5], [5, 2, 8, 5], [4, 6, 6, 8]]
    assert inst.masks.shape == (3, H, W) and inst.masks.dtype == torch.bool
    assert len(instance_postprocess(cls, masks).labels) == 6  # max_per_image above Q * C: every pair
    with pytest.raises(ValueError, match="mask_logits"):
        instance_postprocess(cls, masks[:2])


class FakeClip:
    """Stands in for ClipFeatures: a text embeds as the one-hot of the colour word it names, an image as the one-hot
    of the palette colour nearest its mean pixel (the #999 background pulls it towards grey, kept small here)."""

    RGB = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 160, 0), "white": (255, 255, 255)}

    def text(self, prompts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(prompts), len(geneval.COLORS))
        for i, p in enumerate(prompts):
            out[i, next(k for k, c in enumerate(geneval.COLORS) if f" {c} " in p or f" {c}-" in p)] = 1.0
        return out

    def image(self, images: np.ndarray) -> torch.Tensor:
        mean = images.reshape(-1, 3).mean(0)
        name = min(self.RGB, key=lambda c: np.linalg.norm(mean - np.array(self.RGB[c])))
        out = torch.zeros(1, len(geneval.COLORS))
        out[0, geneval.COLORS.index(name)] = 1.0
        return out


def test_color_classifier_averages_templates_and_takes_the_argmax():
    clf = ColorClassifier(FakeClip())
    w = clf.weights("cup")
    assert w.shape == (len(geneval.COLORS), len(geneval.COLORS))  # [E, colours]
    assert torch.allclose(w, torch.eye(len(geneval.COLORS)))  # every template names the colour: unit one-hots
    red = np.zeros((3, 3, 3), np.uint8)
    red[..., 0] = 250
    assert clf([red, np.zeros((0, 3, 3), np.uint8)], "cup") == ["red", None]
    assert list(clf._weights) == ["cup"]  # cached per class name, as upstream's COLOR_CLASSIFIERS


def test_crop_pastes_the_object_on_grey_and_crops_its_box():
    img = np.zeros((4, 5, 3), np.uint8)
    img[:] = 7
    mask = np.zeros((4, 5), bool)
    mask[1, 1] = True
    crop = crop_object(img, mask, [1.0, 1.0, 3.0, 3.0])
    assert crop.shape == (2, 2, 3)
    assert crop[0, 0].tolist() == [7, 7, 7] and crop[1, 1].tolist() == list(detectors.MASK_BGCOLOR)
    with pytest.raises(ValueError, match="mask shape"):
        crop_object(img, mask[:3], [0, 0, 1, 1])


def _scene() -> np.ndarray:
    img = np.full((H, W, 3), 153, np.uint8)
    img[REGIONS["A"]] = FakeClip.RGB["red"]
    img[REGIONS["B"]] = FakeClip.RGB["green"]
    img[REGIONS["C"]] = FakeClip.RGB["blue"]
    return img


@pytest.mark.parametrize(
    "meta, correct, reason",
    [
        ({"tag": "counting", "include": [{"class": "cup", "count": 2}], "exclude": [{"class": "cup", "count": 3}]},
         False, "expected cup>=2, found 1"),  # q1 (0.891) is under the counting threshold 0.9
        ({"tag": "counting", "include": [{"class": "cup", "count": 1}], "exclude": [{"class": "cup", "count": 2}]},
         True, ""),
        ({"tag": "two_object", "include": [{"class": "cup", "count": 2}, {"class": "dog", "count": 1}]}, True, ""),
        ({"tag": "color_attr", "include": [{"class": "cup", "count": 1, "color": "red"},
                                           {"class": "dog", "count": 1, "color": "blue"}]}, True, ""),
        ({"tag": "color_attr", "include": [{"class": "cup", "count": 2, "color": "red"}]}, False,
         "expected red cup>=2, found 1 red; and 1 red, 1 green"),
        ({"tag": "position", "include": [{"class": "cup", "count": 1},
                                         {"class": "dog", "count": 1, "position": ["below", 0]}]}, True, ""),
        ({"tag": "position", "include": [{"class": "cup", "count": 1},
                                         {"class": "dog", "count": 1, "position": ["left of", 0]}]}, False,
         "expected dog left of target, found below and right of target"),
    ],
)
def test_hand_made_outputs_to_geneval_verdicts(meta, correct, reason):
    """Logits -> instances -> detections (thresholds, colours of the objects the rules read) -> GenEval verdict."""
    img = _scene()
    cls, masks = _hand_made()
    meta = dict(meta, prompt="p")
    dets = detections_with_colors(img, instance_postprocess(cls, masks, 3), meta, ["cup", "dog"],
                                  ColorClassifier(FakeClip()))
    assert all(set(d) == {"class", "confidence", "box", "color"} for d in dets)
    colored = {d["class"]: d["color"] for d in dets if d["color"] is not None}
    wants = {r["class"] for r in meta["include"] if "color" in r}
    assert set(colored) == wants
    r = geneval.evaluate_detections(meta, dets, (H, W))
    assert (r["correct"], r["reason"]) == (correct, reason)


def test_color_requests_follow_the_threshold_and_count():
    dets = [{"class": "cup", "confidence": c, "box": [0, 0, 1, 1]} for c in (0.5, 0.95, 0.2, 0.8)]
    dets.append({"class": "dog", "confidence": 0.99, "box": [0, 0, 1, 1]})
    two = {"tag": "colors", "include": [{"class": "cup", "count": 2, "color": "red"}]}
    assert color_requests(dets, two) == [1, 3]  # the two most confident cups; the dog has no colour clause
    assert color_requests(dets, dict(two, include=[dict(two["include"][0], count=4)])) == [0, 1, 3]  # 0.2 < 0.3
    counting = {"tag": "counting", "include": [{"class": "cup", "count": 2, "color": "red"}]}
    assert color_requests(dets, counting) == [1]  # counting threshold 0.9


def test_object_names_and_label_mapping():
    if OBJECT_NAMES_FILE.is_file():
        assert tuple(OBJECT_NAMES_FILE.read_text().splitlines()) == detectors.GENEVAL_OBJECT_NAMES
    assert len(detectors.GENEVAL_OBJECT_NAMES) == 80
    coco = {i: detectors.GENEVAL_OBJECT_NAMES[i] for i in range(80)} | {64: "mouse", 65: "remote", 66: "keyboard"}
    assert detectors._class_names(coco, 80) == detectors.GENEVAL_OBJECT_NAMES
    with pytest.raises(ValueError, match="label 1 is 'car'"):
        detectors._class_names(coco | {1: "car"}, 80)
    assert detectors._class_names({0: "a", 1: "b"}, 2) == ("a", "b")
