"""GenEval's scoring rules as pure functions over detections (no detector, no CLIP).

Upstream (Ghosh et al. 2023, GenEval), read at these commits:

- ``djghosh13/geneval`` ``evaluation/evaluate_images.py`` @ ``16f1681160a110fd077309eb04c1e004f951e06d``:
  ``evaluate_image`` (per-class confidence threshold, ``MAX_OBJECTS`` cap, optional NMS), ``evaluate``
  (the ``include`` / ``exclude`` / colour / position rules and the ``reason`` messages), ``relative_position``,
  ``compute_iou`` and the constants set in ``__main__`` (defaults of ``--options``);
- ``djghosh13/geneval`` ``evaluation/summary_scores.py`` @ ``d927da8e42fde2b1b5cd743da4df5ff83c1654ff``:
  per-tag accuracy and the overall score.

What upstream does with models is taken as input here: Mask2Former's boxes and scores arrive as ``detections``, and
the CLIP ViT-L-14 zero-shot colour of each object arrives as ``detection["color"]`` (one of ``COLORS``, or ``None``
when unknown; ``None`` never matches a required colour). Everything after the models is reproduced rule for rule.

Deviations (all outside the decision rules, which are unchanged):

- Ties in confidence: upstream orders a class's boxes with ``np.argsort(scores)[::-1]`` (tie order is numpy's
  implementation detail); here the sort is stable, so tied detections keep their input order.
- Arithmetic: upstream computes ``relative_position`` / ``compute_iou`` on mmdet's float32 box arrays; here Python
  float64. Only results exactly at a threshold could differ.
- Inputs are validated (``ValueError``) where upstream would crash or silently mis-score: a position that refers to
  a later or missing ``include`` group (upstream: ``IndexError``), boxes outside the image or with x1 < x0, unknown
  colour names, counts < 1.
- The colour ``reason`` lists ``"{n} unknown"`` after upstream's per-colour counts when some colours are ``None``
  (upstream's classifier always answers a colour).
- The position ``reason`` joins the found relations in sorted order (upstream joins a Python set, whose order for two
  relations is arbitrary).
- ``image_size`` is only used to validate boxes: upstream's ``relative_position`` is scale free (offsets are compared
  with the boxes' own sizes, not the image's), so the image size plays no part in any decision.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "COLORS",
    "COUNTING_THRESHOLD",
    "EVALUATE_IMAGES_COMMIT",
    "MAX_OBJECTS",
    "NMS_THRESHOLD",
    "POSITION_THRESHOLD",
    "RELATIONS",
    "SUMMARY_SCORES_COMMIT",
    "THRESHOLD",
    "compute_iou",
    "evaluate_detections",
    "relative_position",
    "select_detections",
    "summarize",
]

UPSTREAM_REPO = "djghosh13/geneval"
EVALUATE_IMAGES_COMMIT = "16f1681160a110fd077309eb04c1e004f951e06d"  # evaluation/evaluate_images.py
SUMMARY_SCORES_COMMIT = "d927da8e42fde2b1b5cd743da4df5ff83c1654ff"  # evaluation/summary_scores.py

# --- Constants: the defaults of evaluate_images.py `__main__` (`--options key=value` overrides upstream) ---
THRESHOLD = 0.3  # options 'threshold': keep a box when its score is *strictly* greater
COUNTING_THRESHOLD = 0.9  # options 'counting_threshold': replaces THRESHOLD for every class when tag == "counting"
MAX_OBJECTS = 16  # options 'max_objects': at most this many boxes per class, highest scores first (cap before NMS)
NMS_THRESHOLD = 1.0  # options 'max_overlap': 1 disables NMS (upstream short-circuits `NMS_THRESHOLD == 1`)
POSITION_THRESHOLD = 0.1  # options 'position_threshold': centre offsets shrink by 0.1 * (sum of the two box sizes)

# The colour classifier's label set, in upstream's order (the order of the counts in the colour `reason`).
COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
# The relations `relative_position` can return (image coordinates: y grows downwards, so "above" is dy < 0).
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

_INCLUDE_KEYS = {"class", "count", "color", "position"}
_EXCLUDE_KEYS = {"class", "count"}


# ----------------------------------------------------------------------------
# Geometry (evaluate_images.py: compute_iou, relative_position)
# ----------------------------------------------------------------------------


def compute_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """IoU of two ``[x0, y0, x1, y1]`` pixel boxes (extra entries, e.g. a score, are ignored), upstream's ``compute_iou``.

    Upstream counts areas with the inclusive-pixel convention ``(x1 - x0 + 1) * (y1 - y0 + 1)``; kept as is, since it
    is what ``NMS_THRESHOLD`` is compared against. Returns 0 when the union is empty.
    """

    box_a, box_b = [float(v) for v in box_a[:4]], [float(v) for v in box_b[:4]]  # also accepts numpy rows

    def area(box: Sequence[float]) -> float:
        return max(box[2] - box[0] + 1, 0) * max(box[3] - box[1] + 1, 0)

    inter = area([max(box_a[0], box_b[0]), max(box_a[1], box_b[1]), min(box_a[2], box_b[2]), min(box_a[3], box_b[3])])
    union = area(box_a) + area(box_b) - inter
    return inter / union if union else 0.0


def relative_position(box_a: Sequence[float], box_b: Sequence[float], position_threshold: float = POSITION_THRESHOLD) -> set[str]:
    """Relations of box A to box B, upstream's ``relative_position`` ("factoring in object dimensions").

    Boxes are ``[x0, y0, x1, y1]`` in pixels (only the first four entries are read). The centre offset
    ``A - B`` (per axis) is shrunk towards 0 by ``position_threshold * (size_a + size_b)`` on that axis; if what is
    left is below 1e-3 px on both axes there is no relation. Otherwise the shrunk offset is divided by the length of
    the *unshrunk* offset, and each axis whose component exceeds 0.5 in magnitude gives a relation. So, for a purely
    horizontal offset d between boxes of widths wa, wb, A is "left of" B only when d > 0.2 * (wa + wb) (not 0.1):
    (d - 0.1 (wa + wb)) / d > 0.5. A diagonal offset can give two relations (e.g. "left of" and "above").
    """
    box_a, box_b = [float(v) for v in box_a[:4]], [float(v) for v in box_b[:4]]  # also accepts numpy rows
    ca = ((box_a[0] + box_a[2]) / 2, (box_a[1] + box_a[3]) / 2)  # centre (x, y)
    cb = ((box_b[0] + box_b[2]) / 2, (box_b[1] + box_b[3]) / 2)
    dim_a = (abs(box_a[2] - box_a[0]), abs(box_a[3] - box_a[1]))  # (width, height)
    dim_b = (abs(box_b[2] - box_b[0]), abs(box_b[3] - box_b[1]))
    offset = (ca[0] - cb[0], ca[1] - cb[1])
    revised = tuple(max(abs(offset[i]) - position_threshold * (dim_a[i] + dim_b[i]), 0) * _sign(offset[i]) for i in range(2))
    if all(abs(r) < 1e-3 for r in revised):
        return set()
    norm = math.hypot(offset[0], offset[1])  # > 0 here: a zero offset gives revised == (0, 0) above
    dx, dy = revised[0] / norm, revised[1] / norm
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def _sign(x: float) -> float:  # np.sign: -1, 0 or 1
    return float(int(x > 0) - int(x < 0))


# ----------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_image_size(image_size: Any) -> tuple[int, int]:
    if not isinstance(image_size, (tuple, list)) or len(image_size) != 2:
        raise ValueError(f"image_size must be a pair (H, W) of positive ints, got {image_size!r}")
    h, w = image_size
    if not (_is_int(h) and _is_int(w) and h > 0 and w > 0):
        raise ValueError(f"image_size must be a pair (H, W) of positive ints, got {image_size!r}")
    return h, w


def _check_class(item: dict, where: str) -> str:
    if "class" not in item:
        raise ValueError(f"{where}: missing key 'class'")
    classname = item["class"]
    if not isinstance(classname, str) or not classname:
        raise ValueError(f"{where}: 'class' must be a non-empty string, got {classname!r}")
    return classname


def _check_requirement(req: Any, where: str, allowed: set, expected: str) -> None:
    """The checks include and exclude items share: a dict of known keys with a class and a count >= 1."""
    if not isinstance(req, dict):
        raise ValueError(f"{where}: must be a dict, got {req!r}")
    unknown = set(req) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; expected {expected}{sorted(allowed)}")
    _check_class(req, where)
    if "count" not in req:
        raise ValueError(f"{where}: missing key 'count'")
    if not _is_int(req["count"]) or req["count"] < 1:
        raise ValueError(f"{where}: 'count' must be an int >= 1, got {req['count']!r}")


def _check_metadata(metadata: Any) -> None:
    """GenEval metadata: {tag, include: [{class, count, color?, position?: [relation, index]}], exclude?, prompt?}."""
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}")
    if "tag" not in metadata:
        raise ValueError("metadata: missing key 'tag'")
    if not isinstance(metadata["tag"], str):
        raise ValueError(f"metadata: 'tag' must be a string, got {metadata['tag']!r}")
    for key in ("include", "exclude"):
        if not isinstance(metadata.get(key, []), list):
            raise ValueError(f"metadata: {key!r} must be a list, got {type(metadata[key]).__name__}")
    for i, req in enumerate(metadata.get("include", [])):
        where = f"metadata include[{i}]"
        _check_requirement(req, where, _INCLUDE_KEYS, "a subset of ")
        if "color" in req and req["color"] not in COLORS:
            raise ValueError(f"{where}: 'color' must be one of {COLORS}, got {req['color']!r}")
        if "position" in req:
            pos = req["position"]
            if not isinstance(pos, (list, tuple)) or len(pos) != 2:
                raise ValueError(f"{where}: 'position' must be [relation, index], got {pos!r}")
            rel, target = pos
            if rel not in RELATIONS:
                raise ValueError(f"{where}: position relation must be one of {RELATIONS}, got {rel!r}")
            # Upstream indexes `matched_groups`, which holds the groups *before* this one: a later index is an
            # IndexError there, a negative one silently picks another group.
            if not _is_int(target) or not 0 <= target < i:
                raise ValueError(f"{where}: position index must be an int in [0, {i}) (an earlier include), got {target!r}")
    for i, req in enumerate(metadata.get("exclude", [])):
        where = f"metadata exclude[{i}]"
        _check_requirement(req, where, _EXCLUDE_KEYS, "")


def _check_detection(det: Any, index: int, h: int, w: int) -> dict:
    """Validate one detection and return a normalised copy {class, confidence, box: [4 floats], color}."""
    where = f"detections[{index}]"
    if not isinstance(det, dict):
        raise ValueError(f"{where}: must be a dict, got {det!r}")
    classname = _check_class(det, where)
    for key in ("confidence", "box"):
        if key not in det:
            raise ValueError(f"{where}: missing key {key!r}")
    conf = det["confidence"]
    if not _is_number(conf) or not 0.0 <= conf <= 1.0:
        raise ValueError(f"{where}: 'confidence' must be a finite number in [0, 1], got {conf!r}")
    box = det["box"]
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_is_number(v) for v in box):
        raise ValueError(f"{where}: 'box' must be 4 finite numbers [x0, y0, x1, y1] in pixels, got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    # Detector boxes (mmdet clips to the image) lie inside the image with x0 <= x1, y0 <= y1; anything else is a
    # caller bug (e.g. (W, H) passed for (H, W), or normalised / xywh boxes).
    if not (0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h):
        raise ValueError(
            f"{where}: 'box' {list(box)!r} must satisfy 0 <= x0 <= x1 <= W={w} and 0 <= y0 <= y1 <= H={h} "
            "(pixels, [x0, y0, x1, y1], image_size=(H, W))"
        )
    color = det.get("color")  # optional: missing means unknown
    if color is not None and color not in COLORS:
        raise ValueError(f"{where}: 'color' must be one of {COLORS} or None, got {color!r}")
    return {"class": classname, "confidence": float(conf), "box": [x0, y0, x1, y1], "color": color}


# ----------------------------------------------------------------------------
# Detection filtering (evaluate_images.py: evaluate_image, the loop over classnames)
# ----------------------------------------------------------------------------


def select_detections(
    detections: list[dict],
    confidence_threshold: float,
    max_objects: int = MAX_OBJECTS,
    nms_threshold: float = NMS_THRESHOLD,
) -> dict[str, list[dict]]:
    """Per class: sort by confidence (highest first), keep ``confidence > confidence_threshold`` (strict, as
    upstream), cap at ``max_objects``, then greedy NMS on boxes (drop a box whose IoU with an already kept box of the
    same class is >= ``nms_threshold``; ``nms_threshold == 1`` disables it, as upstream). Classes with nothing kept are
    absent. Detections must already be validated (``evaluate_detections`` does it).
    """
    by_class: dict[str, list[dict]] = {}
    for det in detections:
        by_class.setdefault(det["class"], []).append(det)
    kept: dict[str, list[dict]] = {}
    for classname, dets in by_class.items():
        ordering = sorted(dets, key=lambda d: -d["confidence"])  # stable: ties keep input order
        ordering = [d for d in ordering if d["confidence"] > confidence_threshold]
        ordering = ordering[:max_objects]  # upstream caps *before* NMS
        chosen: list[dict] = []
        while ordering:
            best = ordering.pop(0)
            chosen.append(best)
            ordering = [d for d in ordering if nms_threshold == 1 or compute_iou(best["box"], d["box"]) < nms_threshold]
        if chosen:
            kept[classname] = chosen
    return kept


# ----------------------------------------------------------------------------
# The rules (evaluate_images.py: evaluate)
# ----------------------------------------------------------------------------


def evaluate_detections(
    metadata: dict,
    detections: list[dict],
    image_size: tuple[int, int],
    *,
    threshold: float = THRESHOLD,
    counting_threshold: float = COUNTING_THRESHOLD,
    max_objects: int = MAX_OBJECTS,
    nms_threshold: float = NMS_THRESHOLD,
    position_threshold: float = POSITION_THRESHOLD,
) -> dict:
    """Judge one image's detections against GenEval metadata, as upstream ``evaluate_image`` + ``evaluate``.

    Args:
        metadata: ``{"tag", "include": [{"class", "count", "color"?, "position"?: [relation, index]}],
            "exclude"?: [{"class", "count"}], "prompt"?}`` (GenEval's ``evaluation_metadata.jsonl`` schema).
        detections: ``[{"class": str, "confidence": float in [0, 1], "box": [x0, y0, x1, y1] (pixels),
            "color": one of COLORS or None}]`` for one image; any number, any order, any classes.
        image_size: ``(H, W)`` in pixels; only used to validate the boxes (see the module docstring).

    Rules (upstream, unchanged):

    - detections are kept per class with ``select_detections``; the threshold is ``counting_threshold`` for every
      class when ``tag == "counting"``, else ``threshold``;
    - ``include`` clauses are ANDed: each needs at least ``count`` kept objects of its class; only the ``count``
      most confident ones are checked further: all of them must have the required ``color``, and every one of them
      must stand in ``relation`` to every object of the referenced earlier include group (checked only when count
      and colour matched; a failed target group fails the clause);
    - ``exclude`` clauses are ORed: the image fails when ``count`` or more objects of the class were kept. Counting
      prompts carry include ``count = N`` and exclude ``count = N + 1``, which together mean exactly N.

    Returns:
        ``{"correct": bool, "reason": str (upstream messages, one per failure, "\\n"-joined; "" when correct),
        "tag": str, "prompt": str | None, "metadata": json.dumps(metadata) (upstream's per-prompt key),
        "details": {class: [[x0, y0, x1, y1, confidence], ...]} (kept detections, as upstream's bbox rows),
        "confidence_threshold": float}``.

    Raises:
        ValueError: malformed metadata, detections or image_size.
    """
    h, w = _check_image_size(image_size)
    _check_metadata(metadata)
    if not isinstance(detections, (list, tuple)):
        raise ValueError(f"detections must be a list of dicts, got {type(detections).__name__}")
    dets = [_check_detection(d, i, h, w) for i, d in enumerate(detections)]

    confidence_threshold = threshold if metadata["tag"] != "counting" else counting_threshold
    objects = select_detections(dets, confidence_threshold, max_objects, nms_threshold)

    correct = True
    reason: list[str] = []
    matched_groups: list[list[dict] | None] = []  # per include clause: its checked objects, or None if it failed
    for req in metadata.get("include", []):
        classname, count = req["class"], req["count"]
        matched = True
        found = objects.get(classname, [])[:count]  # the `count` most confident
        if len(found) < count:
            correct = matched = False
            reason.append(f"expected {classname}>={count}, found {len(found)}")
        else:
            if "color" in req:
                color = req["color"]
                colors = [o["color"] for o in found]
                if colors.count(color) < count:
                    correct = matched = False
                    tally = [f"{colors.count(c)} {c}" for c in COLORS if c in colors]
                    if None in colors:  # deviation: upstream's classifier never answers "unknown"
                        tally.append(f"{colors.count(None)} unknown")
                    reason.append(
                        f"expected {color} {classname}>={count}, found {colors.count(color)} {color}; and " + ", ".join(tally)
                    )
            if "position" in req and matched:
                expected_rel, target_group = req["position"]
                if matched_groups[target_group] is None:
                    correct = matched = False
                    reason.append(f"no target for {classname} to be {expected_rel}")
                else:
                    for obj in found:
                        for target in matched_groups[target_group]:
                            true_rels = relative_position(obj["box"], target["box"], position_threshold)
                            if expected_rel not in true_rels:
                                correct = matched = False
                                # upstream joins a set: with two relations the order is arbitrary; sorted here
                                reason.append(
                                    f"expected {classname} {expected_rel} target, found "
                                    + f"{' and '.join(sorted(true_rels))} target"
                                )
                                break
                        if not matched:
                            break
        matched_groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        classname = req["class"]
        n = len(objects.get(classname, []))
        if n >= req["count"]:
            correct = False
            reason.append(f"expected {classname}<{req['count']}, found {n}")

    return {
        "correct": correct,
        "reason": "\n".join(reason),
        "tag": metadata["tag"],
        "prompt": metadata.get("prompt"),
        "metadata": json.dumps(metadata),
        "details": {c: [o["box"] + [o["confidence"]] for o in objs] for c, objs in objects.items()},
        "confidence_threshold": confidence_threshold,
    }


# ----------------------------------------------------------------------------
# Aggregation (summary_scores.py)
# ----------------------------------------------------------------------------


def summarize(results: list[dict]) -> dict:
    """Aggregate per-image results as upstream ``summary_scores.py``.

    Upstream scores *images*, not prompts: each tag's accuracy is the mean of ``correct`` over all images of that tag
    (``df.groupby('tag')['correct'].mean()``), and the overall score is the unweighted mean of the per-tag accuracies
    (``np.mean(task_scores)``), so every tag weighs the same whatever its number of prompts or images. The secondary
    lines are reproduced too: the fraction of correct images, and the fraction of prompts with at least one correct
    image (grouped by the ``metadata`` JSON string, falling back to ``prompt``).

    Args:
        results: dicts with ``"tag"`` (str), ``"correct"`` (bool) and ``"metadata"`` or ``"prompt"``, e.g. the
            outputs of ``evaluate_detections``.

    Returns:
        ``{"overall": float, "per_tag": {tag: accuracy}, "per_tag_counts": {tag: (n_correct, n_images)},
        "n_images": int, "n_prompts": int, "image_accuracy": float, "prompt_accuracy": float}``; tags in order of
        first appearance (upstream ``groupby(sort=False)``).

    Raises:
        ValueError: empty input or a result without tag / correct / a prompt key.
    """
    if not isinstance(results, (list, tuple)) or not results:
        raise ValueError("results must be a non-empty list of dicts")
    per_tag_counts: dict[str, list[int]] = {}
    per_prompt: dict[str, bool] = {}
    n_correct = 0
    for i, res in enumerate(results):
        if not isinstance(res, dict):
            raise ValueError(f"results[{i}]: must be a dict, got {type(res).__name__}")
        for key in ("tag", "correct"):
            if key not in res:
                raise ValueError(f"results[{i}]: missing key {key!r}")
        tag, ok = res["tag"], res["correct"]
        if not isinstance(tag, str):
            raise ValueError(f"results[{i}]: 'tag' must be a string, got {tag!r}")
        if type(ok).__name__ not in ("bool", "bool_"):  # Python or numpy bool (e.g. read back through pandas)
            raise ValueError(f"results[{i}]: 'correct' must be a bool, got {ok!r}")
        ok = bool(ok)
        key = res.get("metadata", res.get("prompt"))
        if key is None:
            raise ValueError(f"results[{i}]: needs 'metadata' or 'prompt' to group images by prompt")
        if not isinstance(key, str):
            key = json.dumps(key, sort_keys=True)
        counts = per_tag_counts.setdefault(tag, [0, 0])
        counts[0] += ok
        counts[1] += 1
        per_prompt[key] = per_prompt.get(key, False) or ok
        n_correct += ok
    per_tag = {tag: c / n for tag, (c, n) in per_tag_counts.items()}
    return {
        "overall": sum(per_tag.values()) / len(per_tag),
        "per_tag": per_tag,
        "per_tag_counts": {tag: (c, n) for tag, (c, n) in per_tag_counts.items()},
        "n_images": len(results),
        "n_prompts": len(per_prompt),
        "image_accuracy": n_correct / len(results),
        "prompt_accuracy": sum(per_prompt.values()) / len(per_prompt),
    }
