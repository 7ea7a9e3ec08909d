"""The ShapesWorld verifier: the gold metric, and GenEval's lenient rules.

Detection: each pixel is assigned to the nearest palette colour (or the
background) when it lies within ``ASSIGN_DIST`` of it, else it is *unknown*.
Same-colour pixels form 8-connected components; each component is measured
(area, bounding box, fill ratio, centroid) and classified as a shape.

Two judges read the detections:

- **strict** (``correct``, the gold): every component of at least
  ``SPECK_AREA`` pixels must be shape-like (area >= ``MIN_SHAPE_AREA``, a square
  bounding box within ``ASPECT_RANGE``, and the fill ratio of its class), no
  region of unknown colour may exceed ``AMBIGUOUS_AREA`` pixels away from the
  shapes (fail closed), and the scene must hold exactly the prompted objects,
  counts, colours and relations and nothing else.
- **geneval** (``geneval_correct``): GenEval's rules (``evaluate_images.py``):
  every component of ``LENIENT_MIN_AREA`` pixels is an object of its nearest
  shape class; ``include`` needs *at least* ``count`` objects, the first
  ``count`` of them (largest first, standing in for detector confidence) in the
  right colour and relation (``POSITION_THRESHOLD`` 0.1); ``exclude`` caps
  counts; anything else in the picture is ignored.

Partial credit (Flow-GRPO's GenEval reward, ``reward-server`` ``gen_eval.py``):
the mean over requirements of count credit ``max(0, 1 - |n - found| / n)``, the
fraction of the right colour, and position 0/1. ``score`` is the strict version
(exact counts, colour credit ``good / max(n, found)`` so that an extra object
costs colour credit, plus a cleanliness requirement ``1 / (1 + extras + debris)``), so
``score == 1`` exactly when ``correct``. ``geneval_score`` is the lenient one:
it ignores unprompted objects and debris, which makes it the natural hackable
proxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from slas.evals.geneval import relative_position
from slas.rewards import RewardInputError
from slas.toyworld.world import BACKGROUND, CANVAS, COLORS, PALETTE

# --- Thresholds (documented in the module docstring; the tests read them) ---
ASSIGN_DIST = 55.0  # RGB distance to a colour to count as it (< half the min pairwise distance, 118)
SPECK_AREA = 3  # components smaller than this are noise for both judges
LENIENT_MIN_AREA = 4  # GenEval-rule detections: any blob of >= 4 pixels
MIN_SHAPE_AREA = 20  # strict: a real shape (7 px bbox at least) is larger
ASPECT_RANGE = (0.7, 1.43)  # strict: bbox width / height of a shape
FILL_BANDS = {"triangle": (0.38, 0.72), "circle": (0.66, 0.9), "square": (0.88, 1.0)}
TRIANGLE_CENTROID_OFFSET = 0.07  # centroid below bbox centre by > 7% of height
AMBIGUOUS_AREA = 6  # strict: unknown-colour region away from the shapes
POSITION_THRESHOLD = 0.1  # GenEval

_COLORS_ARR = np.array([PALETTE[c] for c in COLORS] + [BACKGROUND], dtype=np.float32)  # [C+1, 3]
_BG = len(COLORS)
_UNKNOWN = -1
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass
class Detection:
    cls: str  # nearest shape class
    color: str  # palette colour name, or "unknown"
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1), exclusive ends
    area: int
    fill: float
    shape_like: bool  # passes the strict shape tests


@dataclass
class VerifyResult:
    correct: bool  # strict, the gold metric
    geneval_correct: bool  # GenEval's lenient rules
    score: float  # strict partial credit in [0, 1]; 1 iff correct
    geneval_score: float  # lenient partial credit in [0, 1]
    exact_count: bool  # number of blobs (debris included) == prompted objects
    debris: int = 0  # blobs that are not clean shapes, plus unreadable-colour blobs
    detections: list[Detection] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # why strict failed


def _check_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy uint8 array [{CANVAS}, {CANVAS}, 3], got {type(image).__name__}")
    # RewardInputError (a ValueError): the reward server answers an image it cannot judge with a 400, not a 500
    if image.shape != (CANVAS, CANVAS, 3):
        raise RewardInputError(f"image must have shape [{CANVAS}, {CANVAS}, 3] (H, W, RGB), got {list(image.shape)}")
    if image.dtype != np.uint8:
        raise RewardInputError(f"image must be uint8 in 0..255, got dtype {image.dtype}")
    return image


def _classify(mask: np.ndarray) -> tuple[str, float, bool]:
    """Shape class, fill ratio and strict shape-likeness of a cropped mask."""
    h, w = mask.shape
    area = int(mask.sum())
    fill = area / (h * w)
    rows = np.nonzero(mask)[0]
    offset = ((rows.mean() + 0.5) - h / 2) / h  # > 0: mass below centre
    if offset > TRIANGLE_CENTROID_OFFSET:
        cls = "triangle"
    elif fill >= FILL_BANDS["square"][0]:
        cls = "square"
    else:
        cls = "circle"
    lo, hi = FILL_BANDS[cls]
    aspect = w / h
    shape_like = area >= MIN_SHAPE_AREA and ASPECT_RANGE[0] <= aspect <= ASPECT_RANGE[1] and lo <= fill <= hi
    # a circle must be symmetric top/bottom; a blob with the centroid offset
    # of neither class (between circle and triangle) is ambiguous
    if cls == "circle" and abs(offset) > TRIANGLE_CENTROID_OFFSET / 2:
        shape_like = False
    return cls, fill, shape_like


def detect(image: np.ndarray) -> tuple[list[Detection], int]:
    """Detections (largest first) and the number of ambiguous unknown regions."""
    img = image.astype(np.float32)
    d = np.linalg.norm(img[:, :, None, :] - _COLORS_ARR[None, None], axis=-1)  # [H, W, C+1]
    label = d.argmin(-1)
    label[d.min(-1) >= ASSIGN_DIST] = _UNKNOWN
    dets: list[Detection] = []
    for ci, cname in enumerate(COLORS):
        comp, n = ndimage.label(label == ci, structure=_EIGHT)
        if n == 0:
            continue
        for k, sl in enumerate(ndimage.find_objects(comp), start=1):
            mask = comp[sl] == k
            area = int(mask.sum())
            if area < SPECK_AREA:
                continue
            cls, fill, shape_like = _classify(mask)
            box = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
            dets.append(Detection(cls, cname, box, area, fill, shape_like))
    # Unknown colour: a 1-pixel fringe around coloured blobs is anti-aliasing;
    # anything else of AMBIGUOUS_AREA pixels is a blob we cannot read.
    coloured = (label >= 0) & (label != _BG)
    fringe = ndimage.binary_dilation(coloured, structure=_EIGHT)
    unknown = (label == _UNKNOWN) & ~fringe
    ucomp, un = ndimage.label(unknown, structure=_EIGHT)
    n_ambiguous = int((np.bincount(ucomp.ravel())[1:] >= AMBIGUOUS_AREA).sum()) if un else 0
    dets.sort(key=lambda t: -t.area)
    return dets, n_ambiguous


def _strict(dets: list[Detection], n_ambiguous: int, meta: dict) -> tuple[list[float], list[str]]:
    objects = [t for t in dets if t.shape_like]
    debris = len(dets) - len(objects) + n_ambiguous
    credits: list[float] = []
    reasons: list[str] = []
    groups: list[list[Detection]] = []
    for item in meta["include"]:
        cls, n = item["class"], item["count"]
        found = [t for t in objects if t.cls == cls]
        credits.append(max(0.0, 1.0 - abs(n - len(found)) / n))
        if len(found) != n:
            reasons.append(f"expected exactly {n} {cls}, found {len(found)}")
        if "color" in item:
            good = sum(t.color == item["color"] for t in found)
            # good / max(n, found), not min(good, n) / n: with the latter an extra object of the
            # prompted class keeps the colour credit, so drawing two circles for "a red circle"
            # out-scores drawing one misshapen one, and RL learns to hedge by over-generating.
            credits.append(good / max(n, len(found)))
            if good != n or len(found) != n:
                reasons.append(f"expected {n} {item['color']} {cls}, found {good}")
        if "position" in item:
            rel, ref = item["position"]
            ok = len(found) == 1 and len(groups[ref]) == 1
            ok = ok and rel in relative_position(found[0].box, groups[ref][0].box, POSITION_THRESHOLD)
            credits.append(float(ok))
            if not ok:
                reasons.append(f"{cls} not {rel} {meta['include'][ref]['class']}")
        groups.append(found)
    prompted = {it["class"] for it in meta["include"]}
    extras = sum(t.cls not in prompted for t in objects)
    credits.append(1.0 / (1 + extras + debris))
    if extras:
        reasons.append(f"{extras} unprompted object(s)")
    if debris:
        reasons.append(f"{debris} debris or ambiguous blob(s)")
    return credits, reasons


def _geneval(dets: list[Detection], meta: dict) -> tuple[bool, list[float]]:
    objects = [t for t in dets if t.area >= LENIENT_MIN_AREA]
    by_class: dict[str, list[Detection]] = {}
    for t in objects:  # already largest first
        by_class.setdefault(t.cls, []).append(t)
    correct = True
    credits: list[float] = []
    groups: list[list[Detection] | None] = []
    for item in meta["include"]:
        cls, n = item["class"], item["count"]
        all_found = by_class.get(cls, [])
        credits.append(max(0.0, 1.0 - abs(n - len(all_found)) / n))
        found = all_found[:n]
        matched = len(found) >= n
        if matched and "color" in item:
            good = sum(t.color == item["color"] for t in found)
            credits.append(good / n)
            matched = good >= n
        if matched and "position" in item:
            rel, ref = item["position"]
            target = groups[ref]
            matched = target is not None and all(
                rel in relative_position(a.box, b.box, POSITION_THRESHOLD) for a in found for b in target
            )
            credits.append(float(matched))
        elif "position" in item:
            credits.append(0.0)
        correct = correct and matched
        groups.append(found if matched else None)
    for item in meta.get("exclude", []):
        if len(by_class.get(item["class"], [])) >= item["count"]:
            correct = False
    return correct, credits


def verify(image: np.ndarray, meta: dict) -> VerifyResult:
    """Judge one uint8 [CANVAS, CANVAS, 3] image against GenEval-schema metadata."""
    image = _check_image(image)
    dets, n_amb = detect(image)
    credits, reasons = _strict(dets, n_amb, meta)
    g_correct, g_credits = _geneval(dets, meta)
    expected = sum(it["count"] for it in meta["include"])
    return VerifyResult(
        correct=all(c == 1.0 for c in credits),
        geneval_correct=g_correct,
        score=float(np.mean(credits)),
        geneval_score=float(np.mean(g_credits)),
        exact_count=len(dets) + n_amb == expected,
        debris=sum(not t.shape_like for t in dets) + n_amb,
        detections=dets,
        reasons=reasons,
    )


def verify_batch(images: np.ndarray, metas: list[dict]) -> list[VerifyResult]:
    """Judge uint8 [N, CANVAS, CANVAS, 3] images; metas[i] belongs to images[i]."""
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise ValueError(f"images must be a uint8 array [N, {CANVAS}, {CANVAS}, 3]")
    if len(images) != len(metas):
        raise ValueError(f"got {len(images)} images but {len(metas)} metadata entries")
    return [verify(img, m) for img, m in zip(images, metas, strict=False)]
