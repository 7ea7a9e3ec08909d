"""GenEval scoring rules (djghosh13/geneval evaluation/evaluate_images.py, summary_scores.py): hand-made detections."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from slas.evals import geneval
from slas.evals.geneval import compute_iou, evaluate_detections, relative_position, summarize

SIZE = (512, 512)  # (H, W)
METADATA_FILE = Path("/work/shared/data/geneval/evaluation_metadata.jsonl")


def det(cls: str, box, conf: float = 0.99, color: str | None = None) -> dict:
    return {"class": cls, "confidence": conf, "box": list(box), "color": color}


def meta(tag: str, include: list[dict], exclude: list[dict] | None = None, prompt: str = "p") -> dict:
    m = {"tag": tag, "include": include, "prompt": prompt}
    if exclude is not None:
        m["exclude"] = exclude
    return m


def judge(m: dict, dets: list[dict], **kw) -> dict:
    return evaluate_detections(m, dets, SIZE, **kw)


# ---------------------------------------------------------------------------
# Constants copied from upstream
# ---------------------------------------------------------------------------


def test_upstream_constants():
    assert geneval.THRESHOLD == 0.3
    assert geneval.COUNTING_THRESHOLD == 0.9
    assert geneval.MAX_OBJECTS == 16
    assert geneval.NMS_THRESHOLD == 1.0
    assert geneval.POSITION_THRESHOLD == 0.1
    assert geneval.COLORS == ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
    assert len(geneval.EVALUATE_IMAGES_COMMIT) == 40 and len(geneval.SUMMARY_SCORES_COMMIT) == 40


# ---------------------------------------------------------------------------
# single object, thresholds
# ---------------------------------------------------------------------------

SINGLE = meta("single_object", [{"class": "bench", "count": 1}])


def test_single_object_correct_and_missing():
    r = judge(SINGLE, [det("bench", (10, 10, 100, 100))])
    assert r["correct"] is True and r["reason"] == ""
    assert r["tag"] == "single_object" and r["prompt"] == "p"
    assert r["details"] == {"bench": [[10.0, 10.0, 100.0, 100.0, 0.99]]}
    assert json.loads(r["metadata"]) == SINGLE

    r = judge(SINGLE, [det("cow", (10, 10, 100, 100))])  # other classes do not help
    assert r["correct"] is False and r["reason"] == "expected bench>=1, found 0"
    r = judge(SINGLE, [])
    assert r["correct"] is False and r["reason"] == "expected bench>=1, found 0"


def test_confidence_threshold_is_strict_0_3():
    assert judge(SINGLE, [det("bench", (0, 0, 50, 50), conf=0.29)])["correct"] is False
    r = judge(SINGLE, [det("bench", (0, 0, 50, 50), conf=0.3)])  # upstream keeps score > THRESHOLD
    assert r["correct"] is False and r["details"] == {} and r["confidence_threshold"] == 0.3
    assert judge(SINGLE, [det("bench", (0, 0, 50, 50), conf=0.31)])["correct"] is True


def test_counting_tag_uses_0_9_threshold_for_every_class():
    two_clocks = meta("counting", [{"class": "clock", "count": 2}], [{"class": "clock", "count": 3}])
    dets = [det("clock", (0, 0, 50, 50), 0.95), det("clock", (100, 0, 150, 50), 0.85)]
    r = judge(two_clocks, dets)
    assert r["correct"] is False and r["reason"] == "expected clock>=2, found 1" and r["confidence_threshold"] == 0.9
    # 0.9 itself is not kept (strict)
    r = judge(two_clocks, [det("clock", (0, 0, 50, 50), 0.95), det("clock", (100, 0, 150, 50), 0.9)])
    assert r["correct"] is False
    # the same detections under another tag pass the 0.3 threshold
    two = meta("two_object", [{"class": "clock", "count": 2}])
    assert judge(two, dets)["correct"] is True
    # the exclude side of a counting prompt also only sees >0.9 boxes: a third clock at 0.85 is ignored
    dets3 = [det("clock", (0, 0, 50, 50), 0.95), det("clock", (100, 0, 150, 50), 0.93), det("clock", (200, 0, 250, 50), 0.85)]
    assert judge(two_clocks, dets3)["correct"] is True
    assert judge(two, dets3)["correct"] is True  # include alone is "at least"


def test_counting_include_at_least_exclude_makes_it_exact():
    # upstream metadata: "two clocks" = include count 2 AND exclude count 3
    two_clocks = meta("counting", [{"class": "clock", "count": 2}], [{"class": "clock", "count": 3}])
    boxes = [(0, 0, 50, 50), (100, 0, 150, 50), (200, 0, 250, 50), (300, 0, 350, 50)]
    assert judge(two_clocks, [det("clock", b, 0.95) for b in boxes[:1]])["reason"] == "expected clock>=2, found 1"
    assert judge(two_clocks, [det("clock", b, 0.95) for b in boxes[:2]])["correct"] is True
    r = judge(two_clocks, [det("clock", b, 0.95) for b in boxes[:3]])
    assert r["correct"] is False and r["reason"] == "expected clock<3, found 3"
    r = judge(two_clocks, [det("clock", b, 0.95) for b in boxes[:4]])
    assert r["correct"] is False and r["reason"] == "expected clock<3, found 4"
    # include alone (no exclude) is "at least": 4 clocks satisfy count 2
    at_least = meta("counting", [{"class": "clock", "count": 2}])
    assert judge(at_least, [det("clock", b, 0.95) for b in boxes])["correct"] is True


def test_exclude_fails_at_count_or_more():
    m = meta("custom", [{"class": "dog", "count": 1}], [{"class": "cat", "count": 1}])
    assert judge(m, [det("dog", (0, 0, 50, 50))])["correct"] is True
    r = judge(m, [det("dog", (0, 0, 50, 50)), det("cat", (100, 100, 150, 150))])
    assert r["correct"] is False and r["reason"] == "expected cat<1, found 1"
    # a sub-threshold cat does not count
    assert judge(m, [det("dog", (0, 0, 50, 50)), det("cat", (100, 100, 150, 150), 0.2)])["correct"] is True
    # several failures are "\n"-joined in clause order
    r = judge(m, [det("cat", (100, 100, 150, 150))])
    assert r["reason"] == "expected dog>=1, found 0\nexpected cat<1, found 1"


def test_max_objects_caps_each_class_at_16():
    m = meta("custom", [{"class": "dog", "count": 1}], [{"class": "dog", "count": 17}])
    dets = [det("dog", (20 * i, 0, 20 * i + 10, 10), 0.5 + 0.01 * i) for i in range(20)]
    r = judge(m, dets)
    assert r["correct"] is True  # 20 dogs detected, only 16 kept
    assert len(r["details"]["dog"]) == 16
    confs = [row[4] for row in r["details"]["dog"]]
    assert confs == sorted(confs, reverse=True) and confs[-1] == pytest.approx(0.5 + 0.01 * 4)
    assert judge(m, dets, max_objects=17)["reason"] == "expected dog<17, found 17"


def test_nms_disabled_by_default_and_box_iou_when_enabled():
    assert compute_iou([0, 0, 9, 9], [0, 0, 9, 9]) == 1.0
    # upstream's inclusive-pixel areas: each box 10x10 = 100, overlap 5x10 = 50 -> 50 / 150
    assert compute_iou([0, 0, 9, 9], [5, 0, 14, 9]) == pytest.approx(1 / 3)
    assert compute_iou([0, 0, 9, 9], [20, 20, 29, 29]) == 0.0
    m = meta("custom", [{"class": "dog", "count": 2}])
    dup = [det("dog", (0, 0, 9, 9), 0.9), det("dog", (0, 0, 9, 9), 0.8)]
    assert judge(m, dup)["correct"] is True  # NMS_THRESHOLD = 1: duplicates both count
    r = judge(m, dup, nms_threshold=0.5)
    assert r["correct"] is False and r["reason"] == "expected dog>=2, found 1"
    part = [det("dog", (0, 0, 9, 9), 0.9), det("dog", (5, 0, 14, 9), 0.8)]  # IoU 1/3
    assert judge(m, part, nms_threshold=0.5)["correct"] is True
    assert judge(m, part, nms_threshold=1 / 3)["correct"] is False  # kept only when IoU < threshold


# ---------------------------------------------------------------------------
# colour
# ---------------------------------------------------------------------------


def test_colour_match_mismatch_and_unknown():
    m = meta("colors", [{"class": "car", "count": 1, "color": "red"}])
    assert judge(m, [det("car", (0, 0, 50, 50), color="red")])["correct"] is True
    r = judge(m, [det("car", (0, 0, 50, 50), color="blue")])
    assert r["correct"] is False and r["reason"] == "expected red car>=1, found 0 red; and 1 blue"
    r = judge(m, [det("car", (0, 0, 50, 50), color=None)])
    assert r["correct"] is False and r["reason"] == "expected red car>=1, found 0 red; and 1 unknown"
    # a missing 'color' key is unknown too
    d = det("car", (0, 0, 50, 50))
    del d["color"]
    assert judge(m, [d])["correct"] is False


def test_colour_checks_only_the_most_confident_count_objects():
    dets = [det("car", (0, 0, 50, 50), 0.5, "blue"), det("car", (100, 0, 150, 50), 0.9, "red")]
    assert judge(meta("colors", [{"class": "car", "count": 1, "color": "red"}]), dets)["correct"] is True
    r = judge(meta("colors", [{"class": "car", "count": 1, "color": "blue"}]), dets)
    assert r["correct"] is False and r["reason"] == "expected blue car>=1, found 0 blue; and 1 red"
    # count 2: both must be blue; upstream lists the counts in COLORS order (red before blue)
    r = judge(meta("colors", [{"class": "car", "count": 2, "color": "blue"}]), dets)
    assert r["reason"] == "expected blue car>=2, found 1 blue; and 1 red, 1 blue"


def test_color_attr_two_clauses():
    m = meta(
        "color_attr",
        [{"class": "bus", "count": 1, "color": "green"}, {"class": "microwave", "count": 1, "color": "purple"}],
    )
    good = [det("bus", (0, 0, 100, 100), color="green"), det("microwave", (200, 200, 300, 300), color="purple")]
    assert judge(m, good)["correct"] is True
    swapped = [det("bus", (0, 0, 100, 100), color="purple"), det("microwave", (200, 200, 300, 300), color="green")]
    r = judge(m, swapped)
    assert r["correct"] is False
    assert r["reason"] == (
        "expected green bus>=1, found 0 green; and 1 purple\nexpected purple microwave>=1, found 0 purple; and 1 green"
    )


# ---------------------------------------------------------------------------
# position
# ---------------------------------------------------------------------------

TARGET = (200, 200, 300, 300)  # 100x100 box centred at (250, 250)


def test_relative_position_four_relations():
    assert relative_position((50, 200, 150, 300), TARGET) == {"left of"}
    assert relative_position((350, 200, 450, 300), TARGET) == {"right of"}
    assert relative_position((200, 50, 300, 150), TARGET) == {"above"}  # y grows downwards
    assert relative_position((200, 350, 300, 450), TARGET) == {"below"}
    assert relative_position((50, 50, 150, 150), TARGET) == {"left of", "above"}  # diagonal: both components > 0.5
    assert relative_position(TARGET, TARGET) == set()


def test_relative_position_threshold_boundary():
    # widths 10 + 10: the offset shrinks by 0.1 * 20 = 2 px; "left of" needs (d - 2) / d > 0.5, i.e. d > 4
    b = (100, 100, 110, 110)
    assert relative_position((98, 100, 108, 110), b) == set()  # d = 2: fully absorbed
    assert relative_position((97, 100, 107, 110), b) == set()  # d = 3: (3 - 2) / 3 = 0.33, slightly left only
    assert relative_position((96, 100, 106, 110), b) == set()  # d = 4: exactly 0.5, not > 0.5
    assert relative_position((95, 100, 105, 110), b) == {"left of"}  # d = 5: 0.6
    assert relative_position((105, 100, 115, 110), b) == {"right of"}
    # the threshold scales with the boxes, not the image: the same 5 px shift of 100 px boxes is nothing
    big = (100, 100, 200, 200)
    assert relative_position((95, 100, 195, 200), big) == set()
    assert relative_position((95, 100, 195, 200), big, position_threshold=0.0) == {"left of"}
    # an oblique offset: (d - 2) / |offset| must exceed 0.5, with |offset| including the other axis
    assert relative_position((90, 90, 100, 100), b) == {"left of", "above"}  # (10 - 2) / 14.14 = 0.57
    assert relative_position((90, 85, 100, 95), b) == {"above"}  # dx = 8 / 18.03 = 0.44, dy = 13 / 18.03 = 0.72


@pytest.mark.parametrize(
    ("relation", "good_box", "bad_box", "bad_found"),
    [
        ("left of", (50, 200, 150, 300), (350, 200, 450, 300), "right of"),
        ("right of", (350, 200, 450, 300), (50, 200, 150, 300), "left of"),
        ("above", (200, 50, 300, 150), (200, 350, 300, 450), "below"),
        ("below", (200, 350, 300, 450), (200, 50, 300, 150), "above"),
    ],
)
def test_position_clause(relation, good_box, bad_box, bad_found):
    m = meta("position", [{"class": "teddy bear", "count": 1}, {"class": "dog", "count": 1, "position": [relation, 0]}])
    r = judge(m, [det("teddy bear", TARGET), det("dog", good_box)])
    assert r["correct"] is True, r["reason"]
    r = judge(m, [det("teddy bear", TARGET), det("dog", bad_box)])
    assert r["correct"] is False and r["reason"] == f"expected dog {relation} target, found {bad_found} target"


def test_position_edge_cases():
    m = meta("position", [{"class": "teddy bear", "count": 1}, {"class": "dog", "count": 1, "position": ["left of", 0]}])
    # only slightly left: no relation at all (upstream prints the empty join)
    r = judge(m, [det("teddy bear", TARGET), det("dog", (195, 200, 295, 300))])
    assert r["correct"] is False and r["reason"] == "expected dog left of target, found  target"
    # the target clause failed: no target
    r = judge(m, [det("dog", (50, 200, 150, 300))])
    assert r["correct"] is False
    assert r["reason"] == "expected teddy bear>=1, found 0\nno target for dog to be left of"
    # only the most confident dog is checked against the target
    dets = [det("teddy bear", TARGET), det("dog", (50, 200, 150, 300), 0.9), det("dog", (350, 200, 450, 300), 0.5)]
    assert judge(m, dets)["correct"] is True
    dets[2]["confidence"] = 0.95
    assert judge(m, dets)["correct"] is False
    # position is not checked when the colour already failed (a single reason)
    mc = meta(
        "x", [{"class": "teddy bear", "count": 1}, {"class": "dog", "count": 1, "color": "red", "position": ["left of", 0]}]
    )
    r = judge(mc, [det("teddy bear", TARGET), det("dog", (350, 200, 450, 300), color="blue")])
    assert r["reason"] == "expected red dog>=1, found 0 red; and 1 blue"


def test_position_every_object_against_every_target():
    m = meta("x", [{"class": "cat", "count": 2}, {"class": "dog", "count": 1, "position": ["left of", 0]}])
    cats = [det("cat", (200, 0, 250, 50)), det("cat", (300, 0, 350, 50))]
    assert judge(m, cats + [det("dog", (0, 0, 50, 50))])["correct"] is True
    # between the two cats: left of one, right of the other
    r = judge(m, cats + [det("dog", (250, 0, 300, 50))])
    assert r["correct"] is False and r["reason"] == "expected dog left of target, found right of target"


# ---------------------------------------------------------------------------
# malformed input
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ("single_object", "metadata must be a dict"),
        ({"include": [{"class": "dog", "count": 1}]}, "missing key 'tag'"),
        ({"tag": "x", "include": {"class": "dog"}}, "'include' must be a list"),
        ({"tag": "x", "include": [{"count": 1}]}, r"include\[0\]: missing key 'class'"),
        ({"tag": "x", "include": [{"class": "dog"}]}, r"include\[0\]: missing key 'count'"),
        ({"tag": "x", "include": [{"class": "dog", "count": 0}]}, "'count' must be an int >= 1"),
        ({"tag": "x", "include": [{"class": "dog", "count": 1.0}]}, "'count' must be an int >= 1"),
        ({"tag": "x", "include": [{"class": "dog", "count": 1, "colour": "red"}]}, "unknown keys"),
        ({"tag": "x", "include": [{"class": "dog", "count": 1, "color": "teal"}]}, "'color' must be one of"),
        ({"tag": "x", "include": [{"class": "dog", "count": 1, "position": ["left of", 0]}]}, "position index"),
        (
            {"tag": "x", "include": [{"class": "a", "count": 1}, {"class": "b", "count": 1, "position": ["near", 0]}]},
            "position relation",
        ),
        ({"tag": "x", "include": [], "exclude": [{"class": "dog"}]}, r"exclude\[0\]: missing key 'count'"),
    ],
)
def test_malformed_metadata(metadata, match):
    with pytest.raises(ValueError, match=match):
        evaluate_detections(metadata, [], SIZE)


@pytest.mark.parametrize(
    ("detection", "match"),
    [
        ({"confidence": 0.9, "box": [0, 0, 1, 1]}, "missing key 'class'"),
        ({"class": "dog", "box": [0, 0, 1, 1]}, "missing key 'confidence'"),
        ({"class": "dog", "confidence": 0.9}, "missing key 'box'"),
        ({"class": "dog", "confidence": 1.5, "box": [0, 0, 1, 1]}, "'confidence' must be"),
        ({"class": "dog", "confidence": math.nan, "box": [0, 0, 1, 1]}, "'confidence' must be"),
        ({"class": "dog", "confidence": 0.9, "box": [0, 0, 1]}, "'box' must be 4 finite numbers"),
        ({"class": "dog", "confidence": 0.9, "box": [0, 0, math.inf, 1]}, "'box' must be 4 finite numbers"),
        ({"class": "dog", "confidence": 0.9, "box": [10, 0, 5, 1]}, "x0 <= x1"),
        ({"class": "dog", "confidence": 0.9, "box": [0, 0, 10, 600]}, "y1 <= H=512"),
        ({"class": "dog", "confidence": 0.9, "box": [-1, 0, 10, 10]}, "0 <= x0"),
        ({"class": "dog", "confidence": 0.9, "box": [0, 0, 1, 1], "color": "teal"}, "'color' must be one of"),
    ],
)
def test_malformed_detection(detection, match):
    with pytest.raises(ValueError, match=match):
        evaluate_detections(SINGLE, [detection], SIZE)


def test_malformed_image_size_and_detections():
    for bad in [(0, 10), (10,), (10.0, 10.0), "512x512", (10, -1)]:
        with pytest.raises(ValueError, match="image_size must be a pair"):
            evaluate_detections(SINGLE, [], bad)
    with pytest.raises(ValueError, match="detections must be a list"):
        evaluate_detections(SINGLE, {"class": "bench"}, SIZE)
    # (H, W) order matters: a box 600 px wide fits a 300x700 image but not a 700x300 one
    d = det("bench", (0, 0, 600, 200))
    assert evaluate_detections(SINGLE, [d], (300, 700))["correct"] is True
    with pytest.raises(ValueError, match="x1 <= W=300"):
        evaluate_detections(SINGLE, [d], (700, 300))


# ---------------------------------------------------------------------------
# summarize (summary_scores.py)
# ---------------------------------------------------------------------------


def test_summarize_per_tag_and_overall_mean_over_tags():
    results = [
        # single_object: 3 images, 2 correct -> 2/3 (prompts a: any correct, b: correct)
        {"tag": "single_object", "correct": True, "metadata": "a"},
        {"tag": "single_object", "correct": False, "metadata": "a"},
        {"tag": "single_object", "correct": True, "metadata": "b"},
        # counting: 1 image, incorrect -> 0
        {"tag": "counting", "correct": False, "metadata": "c"},
        # position: 2 images of one prompt, 1 correct -> 1/2
        {"tag": "position", "correct": False, "prompt": "d"},
        {"tag": "position", "correct": True, "prompt": "d"},
    ]
    s = summarize(results)
    assert list(s["per_tag"]) == ["single_object", "counting", "position"]  # first-appearance order
    assert s["per_tag"]["single_object"] == pytest.approx(2 / 3)
    assert s["per_tag"]["counting"] == 0.0
    assert s["per_tag"]["position"] == 0.5
    assert s["per_tag_counts"] == {"single_object": (2, 3), "counting": (0, 1), "position": (1, 2)}
    assert s["overall"] == pytest.approx((2 / 3 + 0 + 0.5) / 3)  # mean over tags, not over images (3/6)
    assert s["image_accuracy"] == 0.5
    assert s["n_images"] == 6 and s["n_prompts"] == 4
    assert s["prompt_accuracy"] == 0.75  # a, b, d have a correct image; c does not


def test_summarize_on_evaluate_outputs_and_errors():
    r1 = judge(SINGLE, [det("bench", (0, 0, 10, 10))])
    r2 = judge(SINGLE, [])
    s = summarize([r1, r2])
    assert s["per_tag"] == {"single_object": 0.5} and s["n_prompts"] == 1 and s["prompt_accuracy"] == 1.0
    with pytest.raises(ValueError, match="non-empty"):
        summarize([])
    with pytest.raises(ValueError, match="missing key 'correct'"):
        summarize([{"tag": "x", "prompt": "p"}])
    with pytest.raises(ValueError, match="must be a bool"):
        summarize([{"tag": "x", "prompt": "p", "correct": 1}])
    with pytest.raises(ValueError, match="'metadata' or 'prompt'"):
        summarize([{"tag": "x", "correct": True}])


# ---------------------------------------------------------------------------
# every real prompt schema
# ---------------------------------------------------------------------------

_OFFSETS = {"left of": (-150, 0), "right of": (150, 0), "above": (0, -150), "below": (0, 150)}


def perfect_detections(m: dict) -> list[dict]:
    """Distinct, well separated boxes satisfying the include list: position targets in the centre, related objects
    150 px away in the prompted direction, everything else on a grid of 40 px boxes."""
    dets, groups = [], []
    has_position = any("position" in req for req in m["include"])
    slot = 0
    for req in m["include"]:
        boxes = []
        for _ in range(req["count"]):
            if "position" in req:
                rel, target = req["position"]
                assert len(groups[target]) == 1 and req["count"] == 1  # true of every real position prompt
                tx0, ty0, tx1, ty1 = groups[target][0]
                ox, oy = _OFFSETS[rel]
                box = (tx0 + ox, ty0 + oy, tx1 + ox, ty1 + oy)
            elif has_position:
                box = (206, 206, 306, 306)  # the centre: room on every side
            else:
                row, col = divmod(slot, 5)
                box = (20 + 100 * col, 20 + 100 * row, 60 + 100 * col, 60 + 100 * row)
                slot += 1
            boxes.append(box)
            dets.append(det(req["class"], box, 0.99, req.get("color")))
        groups.append(boxes)
    return dets


def test_every_real_metadata_entry_accepts_a_perfect_detection_set():
    if not METADATA_FILE.exists():
        pytest.skip(f"{METADATA_FILE} not available")
    rows = [json.loads(line) for line in METADATA_FILE.read_text().splitlines() if line.strip()]
    assert len(rows) == 553
    results = []
    for m in rows:
        r = evaluate_detections(m, perfect_detections(m), SIZE)
        assert r["correct"] is True, (m, r["reason"])
        results.append(r)
        # and dropping the first included object always breaks it
        if m["include"]:
            broken = evaluate_detections(m, perfect_detections(m)[1:], SIZE)
            assert broken["correct"] is False, m
    s = summarize(results)
    assert s["overall"] == 1.0
    assert set(s["per_tag"]) == {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
    assert s["n_images"] == 553
