import itertools
import random

import numpy as np
import pytest

from slas.toyworld import (
    BACKGROUND,
    CANVAS,
    COLORS,
    PALETTE,
    SHAPES,
    TAGS,
    PromptError,
    all_prompts,
    is_ood,
    parse,
    prompt_text,
    render,
    split,
    verify,
    world,
)
from slas.toyworld import verifier as verify_mod
from slas.toyworld.renderer import draw, relative_position, scene


def test_constants():
    assert len(SHAPES) >= 3 and {"circle", "square", "triangle"} <= set(SHAPES)
    assert len(PALETTE) >= 6 and all(len(v) == 3 for v in PALETTE.values())
    assert CANVAS >= 32
    cols = list(PALETTE.values()) + [BACKGROUND]
    dmin = min(np.linalg.norm(np.subtract(a, b)) for a, b in itertools.combinations(cols, 2))
    # the verifier's colour assignment is unambiguous only if colours are 2*ASSIGN_DIST apart
    assert dmin > 2 * verify_mod.ASSIGN_DIST


def test_grammar_round_trip_every_prompt():
    prompts = all_prompts()
    assert {m["tag"] for m in prompts} == set(TAGS)
    for m in prompts:
        assert parse(m["prompt"]) == m
        assert prompt_text(m) == m["prompt"]
        assert set(m) <= {"tag", "include", "exclude", "prompt"}
    assert parse("  A Photo of  a RED circle ") == parse("a photo of a red circle")


def test_metadata_follows_geneval_schema():
    m = parse("a photo of a circle left of a square")
    assert m["tag"] == "position"
    assert m["include"] == [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["left of", 0]}]
    m = parse("a photo of three triangles")
    assert m["include"] == [{"class": "triangle", "count": 3}]
    assert m["exclude"] == [{"class": "triangle", "count": 4}]
    m = parse("a photo of a blue square and a white triangle")
    assert m["tag"] == "color_attr"
    assert m["include"][1] == {"class": "triangle", "count": 1, "color": "white"}


@pytest.mark.parametrize(
    "text, needle",
    [
        ("a photo of a dog", "'dog'"),
        ("a photo of a red", "cannot parse"),
        ("", "empty"),
        ("a photo of two circle", "plural"),
        ("a photo of a circle and a circle", "different shapes"),
        ("photo a of a circle", "must start with"),
    ],
)
def test_parse_errors_name_the_problem(text, needle):
    with pytest.raises(PromptError, match=needle):
        parse(text)


def test_splits_are_disjoint_deterministic_and_hold_out_compositions():
    train, test, ev = split("train"), split("test"), split("eval")
    assert split("train") == train and split("test") == test
    tr = {m["prompt"] for m in train}
    assert tr.isdisjoint({m["prompt"] for m in test})
    for m in train:
        assert not is_ood(m)
        for it in m["include"]:
            assert (it.get("color"), it["class"]) not in world.HELD_OUT_COLOR_SHAPE
        classes = frozenset(it["class"] for it in m["include"])
        assert classes not in world.HELD_OUT_PAIRS
    assert all(m["ood"] == is_ood(m) for m in test)
    assert sum(m["ood"] for m in test) > 50
    assert len(ev) >= 300
    counts = {t: sum(m["tag"] == t for m in ev) for t in TAGS}
    assert len(set(counts.values())) == 1, counts
    assert len({m["seed"] for m in ev}) == len(ev)
    with pytest.raises(ValueError):
        split("validation")


def test_renderer_is_deterministic_and_exact():
    m = parse("a photo of a red circle left of a blue triangle".replace("red ", "").replace("blue ", ""))
    a, b = render(m, 7), render(m, 7)
    assert a.dtype == np.uint8 and a.shape == (CANVAS, CANVAS, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(render(m, 8), a)
    allowed = {tuple(v) for v in PALETTE.values()} | {BACKGROUND}
    assert {tuple(p) for p in a.reshape(-1, 3)} <= allowed


def test_verifier_on_clean_renders():
    rng = random.Random(0)
    prompts = all_prompts()
    n, strict, lenient, exact = 2000, 0, 0, 0
    for i in range(n):
        m = rng.choice(prompts)
        r = verify(render(m, i), m)
        strict += r.correct
        lenient += r.geneval_correct
        exact += r.exact_count
        assert (r.score == 1.0) == r.correct
    assert strict / n >= 0.995
    assert lenient / n >= 0.995
    assert exact / n >= 0.995


def _violations(kind: str, m: dict, rng: random.Random) -> dict:
    """Metadata of a scene that violates `m` in one way (rendered, then judged against m)."""
    inc = [dict(it) for it in m["include"]]
    if kind == "color":
        it = rng.choice([it for it in inc if "color" in it])
        it["color"] = rng.choice([c for c in COLORS if c != it["color"] and all(c != o.get("color") for o in inc)])
    elif kind == "count":
        it = inc[0]
        it["count"] = rng.choice([c for c in (it["count"] - 1, it["count"] + 1) if 1 <= c <= 4 and c != it["count"]])
        if it["count"] == 0:
            inc = inc[1:]
    elif kind == "shape":
        it = rng.choice(inc)
        others = [s for s in SHAPES if all(s != o["class"] for o in inc)] or [s for s in SHAPES if s != it["class"]]
        it["class"] = rng.choice(others)
    elif kind == "position":
        opp = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
        inc[1]["position"] = [opp[inc[1]["position"][0]], 0]
    return {"tag": m["tag"], "include": inc, "prompt": "(violation)"}


@pytest.mark.parametrize(
    "kind, tags",
    [
        ("color", ["colors", "color_attr"]),
        ("count", ["counting"]),
        ("shape", ["single_object", "two_object", "colors", "color_attr"]),
        ("position", ["position"]),
    ],
)
def test_verifier_rejects_violations(kind, tags):
    rng = random.Random(1)
    pool = [m for m in all_prompts() if m["tag"] in tags]
    n, passed = 300, 0
    for i in range(n):
        m = rng.choice(pool)
        bad = _violations(kind, m, rng)
        if not bad["include"]:
            img = np.full((CANVAS, CANVAS, 3), BACKGROUND, dtype=np.uint8)
        else:
            img = render(bad, i)
        passed += verify(img, m).correct
    assert passed / n < 0.05


def test_debris_fails_strict_but_not_geneval():
    m = parse("a photo of a red circle")
    objs = scene(m, 3)
    img = draw(objs)
    assert verify(img, m).correct
    # a 2x3 blob of colour far from the circle: debris
    x0, y0, x1, y1 = objs[0].box
    y = 0 if y0 > 8 else CANVAS - 4
    x = 0 if x0 > 8 else CANVAS - 4
    img[y : y + 2, x : x + 3] = PALETTE["green"]
    r = verify(img, m)
    assert not r.correct and r.geneval_correct and not r.exact_count
    assert r.score < 1.0 and r.geneval_score == 1.0


def test_ambiguous_colour_region_fails_closed():
    m = parse("a photo of a square")
    objs = scene(m, 5)
    img = draw(objs)
    x0, y0, x1, y1 = objs[0].box
    y = 0 if y0 > 8 else CANVAS - 4
    x = 0 if x0 > 8 else CANVAS - 4
    img[y : y + 3, x : x + 3] = (200, 120, 30)  # orange: between red and yellow
    assert not verify(img, m).correct


def test_relative_position_matches_geneval_examples():
    assert relative_position((0, 10, 8, 18), (20, 10, 28, 18)) == {"left of"}
    assert relative_position((20, 10, 28, 18), (0, 10, 8, 18)) == {"right of"}
    assert relative_position((10, 0, 18, 8), (10, 20, 18, 28)) == {"above"}
    assert relative_position((10, 10, 18, 18), (11, 11, 19, 19)) == set()


@pytest.mark.parametrize(
    "image, needle",
    [
        (np.zeros((16, 16, 3), dtype=np.uint8), "shape"),
        (np.zeros((CANVAS, CANVAS, 3), dtype=np.float32), "uint8"),
        ([[0]], "numpy"),
    ],
)
def test_verifier_rejects_bad_images(image, needle):
    with pytest.raises((ValueError, TypeError), match=needle):
        verify(image, parse("a photo of a circle"))


def test_toy_rewards_match_the_verifier_and_clean_is_dense():
    """The registry's toy rewards equal the verifier's fields; toy_clean is 1 on clean renders and falls
    smoothly (not in steps) as in-between colours appear."""
    from slas import rewards

    metas = split("train")[:12]
    images = np.stack([render(m, seed=i) for i, m in enumerate(metas)])  # [12, 32, 32, 3]
    noisy = np.clip(images.astype(np.int16) + np.random.default_rng(0).integers(-40, 41, images.shape), 0, 255)
    noisy = noisy.astype(np.uint8)
    fn = rewards.build({"toy_score": 1.0, "toy_correct": 2.0, "toy_clean": 0.5})
    for imgs in (images, noisy):
        out = fn(imgs, [m["prompt"] for m in metas], metas)
        res = [verify(i, m) for i, m in zip(imgs, metas, strict=True)]
        assert np.array_equal(out["toy_score"], [r.score for r in res])
        assert np.array_equal(out["toy_correct"], [float(r.correct) for r in res])
        assert np.allclose(out["total"], out["toy_score"] + 2 * out["toy_correct"] + 0.5 * out["toy_clean"])
    build = rewards.build({"toy_clean": 1.0})
    prompts = [m["prompt"] for m in metas]

    def clean(imgs):
        return build(imgs, prompts, metas)["toy_clean"]

    c0 = clean(images)
    assert np.allclose(c0, 1.0, atol=0.05)  # renders are flat palette colours (a thin anti-aliased edge)
    levels = [float(clean(np.clip(images.astype(np.int16) + k, 0, 255).astype(np.uint8)).mean())
              for k in (0, 5, 10, 15)]
    assert levels[0] > levels[1] > levels[2] > levels[3] > 0.4  # a uniform shift lowers it step by step
