"""ShapesWorld constants, the prompt grammar and the deterministic splits.

The grammar mirrors GenEval's six tags (Ghosh et al. 2023,
``djghosh13/geneval`` ``prompts/evaluation_metadata.jsonl``) and emits metadata
in GenEval's own schema::

    {"tag": "position", "prompt": "a photo of a circle left of a square",
     "include": [{"class": "square", "count": 1},
                 {"class": "circle", "count": 1, "position": ["left of", 0]}]}

Every prompt text parses back to exactly the metadata that produced it
(``parse(prompt_text(m)) == m``), so prompts files and metadata files are
interchangeable.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass

from slas.config.errors import short

# ----------------------------------------------------------------------------
# Constants (read by the renderer, the verifier, the model and the tests).
# ----------------------------------------------------------------------------

CANVAS = 32  # image side in pixels; images are uint8 [CANVAS, CANVAS, 3]
BACKGROUND = (128, 128, 128)  # plain mid-grey
# Six well separated colours: min pairwise RGB distance 118 (blue-purple), background included.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (225, 25, 25),
    "yellow": (245, 215, 20),
    "green": (20, 175, 45),
    "blue": (30, 50, 235),
    "purple": (150, 30, 190),
    "white": (250, 250, 250),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
PLURALS = {s: s + "s" for s in SHAPES}
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
MAX_OBJECTS = 4

# Shape sizes: side of the bounding box in pixels. Scenes with 3-4 objects use
# the smaller range so that they always fit without overlap.
SIZE_RANGE = (8, 13)
SIZE_RANGE_CROWDED = (7, 10)
GAP = 2  # minimum empty pixels between two bounding boxes (keeps components apart)

# Held-out compositions (never in `train`; every prompt that uses one is `ood`).
HELD_OUT_COLOR_SHAPE: frozenset[tuple[str, str]] = frozenset(
    {("red", "triangle"), ("blue", "square"), ("white", "circle")}
)
HELD_OUT_PAIRS: frozenset[frozenset[str]] = frozenset({frozenset({"square", "triangle"})})
# Fraction of in-domain prompts of each tag additionally held out from `train`
# (they go to `test` with ood=False) so that `test` also measures plain
# prompt generalisation. Tags with fewer than 10 in-domain prompts keep all.
IN_DOMAIN_TEST_FRACTION = 0.15
SPLIT_SEED = 20260527
EVAL_PER_TAG = 50  # the fixed `eval` set: 50 entries per tag = 300
EVAL_SEED = 1234

PROMPT_PREFIX = "a photo of "


class PromptError(ValueError):
    """A prompt that the ShapesWorld grammar cannot parse (the message says why)."""


# ----------------------------------------------------------------------------
# Metadata <-> text
# ----------------------------------------------------------------------------


def _obj_phrase(item: dict) -> str:
    color = item.get("color")
    return f"a {color} {item['class']}" if color else f"a {item['class']}"


def prompt_text(meta: dict) -> str:
    """The canonical prompt text of GenEval-schema metadata."""
    tag, inc = meta["tag"], meta["include"]
    if tag in ("single_object", "colors"):
        body = _obj_phrase(inc[0])
    elif tag in ("two_object", "color_attr"):
        body = f"{_obj_phrase(inc[0])} and {_obj_phrase(inc[1])}"
    elif tag == "counting":
        n, cls = inc[0]["count"], inc[0]["class"]
        body = f"{NUMBERS[n]} {cls if n == 1 else PLURALS[cls]}"
    elif tag == "position":
        rel = inc[1]["position"][0]
        body = f"{_obj_phrase(inc[1])} {rel} {_obj_phrase(inc[0])}"
    else:
        raise PromptError(f"unknown tag {tag!r}; expected one of {TAGS}")
    return PROMPT_PREFIX + body


def make_meta(tag: str, include: list[dict]) -> dict:
    """Build metadata (adds GenEval's `exclude` for counting, and the prompt)."""
    meta: dict = {"tag": tag, "include": include}
    if tag == "counting":
        meta["exclude"] = [{"class": include[0]["class"], "count": include[0]["count"] + 1}]
    meta["prompt"] = prompt_text(meta)
    return meta


VOCAB_WORDS: tuple[str, ...] = tuple(
    sorted(
        {"a", "photo", "of", "and", "left", "right", "above", "below"}
        | set(COLORS)
        | set(SHAPES)
        | set(PLURALS.values())
        | set(NUMBERS.values())
    )
)

_COLOR_RE = "|".join(COLORS)
_SHAPE_RE = "|".join(SHAPES)
_OBJ = rf"a (?:(?P<{{c}}>{_COLOR_RE}) )?(?P<{{s}}>{_SHAPE_RE})"
_REL_RE = "|".join(RELATIONS)
_PATTERNS = [
    ("counting", re.compile(rf"^(?P<n>{'|'.join(NUMBERS.values())}) (?P<s>\w+)$")),
    ("pair", re.compile("^" + _OBJ.format(c="c1", s="s1") + " and " + _OBJ.format(c="c2", s="s2") + "$")),
    (
        "position",
        re.compile("^" + _OBJ.format(c="c1", s="s1") + rf" (?P<rel>{_REL_RE}) " + _OBJ.format(c="c2", s="s2") + "$"),
    ),
    ("single", re.compile("^" + _OBJ.format(c="c1", s="s1") + "$")),
]


def _normalise(text: str) -> str:
    return " ".join(text.strip().lower().split())


def _valid(candidates: list[str]) -> list[str]:
    """The candidate prompts that parse, in order, without duplicates."""
    out: list[str] = []
    for c in candidates:
        try:
            out.append(parse(c)["prompt"])
        except PromptError:
            continue
    return list(dict.fromkeys(out))


def _did_you_mean(candidates: list[str]) -> str:
    valid = _valid(candidates)
    return "; did you mean " + " or ".join(repr(c) for c in valid) + "?" if valid else ""


_COLOURED_COUNT = re.compile(rf"^(?P<n>{'|'.join(NUMBERS.values())}) (?P<c>{_COLOR_RE}) (?P<s>\w+)$")


def _singular(word: str) -> str:
    return next((s for s, pl in PLURALS.items() if word == pl), word)


def parse(text: str) -> dict:
    """Parse a ShapesWorld prompt into GenEval-schema metadata.

    Raises PromptError naming the unknown word or the malformed structure. The grammar is GenEval's: counting and
    position prompts take no colours (GenEval has no such prompts, and the tags, the splits and the pretrained
    model follow it); for such a near miss the error suggests the nearest valid prompts.
    """
    norm = _normalise(text)
    if not norm:
        raise PromptError("empty prompt")
    shown = short(text)  # the prompt as messages quote it: a 100 KB line is cut to 80 characters
    unknown = [w for w in norm.split() if w not in VOCAB_WORDS]
    if unknown:
        raise PromptError(
            f"unknown word {short(unknown[0], 40)} in prompt {shown}; ShapesWorld knows colours {list(COLORS)}, "
            f"shapes {list(SHAPES)}, counts {list(NUMBERS.values())} and relations {list(RELATIONS)}"
        )
    if not norm.startswith(PROMPT_PREFIX):
        raise PromptError(f"prompt {shown} must start with {PROMPT_PREFIX!r} (GenEval style)"
                          + _did_you_mean([PROMPT_PREFIX + norm.removeprefix("photo of ").removeprefix("of ")]))
    body = norm[len(PROMPT_PREFIX):]
    for kind, pat in _PATTERNS:
        m = pat.match(body)
        if not m:
            continue
        g = m.groupdict()
        if kind == "counting":
            n = {v: k for k, v in NUMBERS.items()}[g["n"]]
            word = g["s"]
            expected = PLURALS if n > 1 else {s: s for s in SHAPES}
            cls = next((s for s, w in expected.items() if w == word), None)
            if cls is None:
                shape = _singular(word)
                raise PromptError(f"in {shown}: {g['n']!r} needs {'a plural' if n > 1 else 'a singular'} shape"
                                  + _did_you_mean([f"{PROMPT_PREFIX}{g['n']} {PLURALS.get(shape, shape) if n > 1 else shape}"]))
            return make_meta("counting", [{"class": cls, "count": n}])
        o1 = {"class": g["s1"], "count": 1} | ({"color": g["c1"]} if g["c1"] else {})
        if kind == "single":
            return make_meta("colors" if g["c1"] else "single_object", [o1])
        o2 = {"class": g["s2"], "count": 1} | ({"color": g["c2"]} if g["c2"] else {})
        if kind == "pair":
            if o1["class"] == o2["class"]:
                raise PromptError(f"in {shown}: the two objects must be different shapes (GenEval two_object)")
            if bool(g["c1"]) != bool(g["c2"]):
                raise PromptError(f"in {shown}: give a colour to both objects or to neither"
                                  + _did_you_mean([f"{PROMPT_PREFIX}a {o1['class']} and a {o2['class']}"]))
            if g["c1"] and g["c1"] == g["c2"]:
                raise PromptError(f"in {shown}: the two colours must differ (GenEval color_attr)")
            return make_meta("color_attr" if g["c1"] else "two_object", [o1, o2])
        # position: "<o1> <rel> <o2>" means o1 is <rel> o2; GenEval stores the
        # reference object first and the relation on the second entry.
        if g["c1"] or g["c2"]:
            colours = [c for c in (g["c1"], g["c2"]) if c]
            raise PromptError(f"in {shown}: position prompts take no colours (GenEval position)" + _did_you_mean(
                [f"{PROMPT_PREFIX}a {o1['class']} {g['rel']} a {o2['class']}"]
                + ([f"{PROMPT_PREFIX}a {g['c1']} {o1['class']} and a {g['c2']} {o2['class']}"] if len(colours) == 2
                   else [f"{PROMPT_PREFIX}a {colours[0]} {o1['class'] if g['c1'] else o2['class']}"])))
        if o1["class"] == o2["class"]:
            raise PromptError(f"in {shown}: the two objects must be different shapes")
        return make_meta("position", [o2, o1 | {"position": [g["rel"], 0]}])
    m = _COLOURED_COUNT.match(body)
    if m:  # "three green triangles": GenEval's counting prompts take no colour
        n, c, shape = m["n"], m["c"], _singular(m["s"])
        raise PromptError(f"in {shown}: counting prompts take no colours (GenEval counting)" + _did_you_mean(
            [f"{PROMPT_PREFIX}{n} {shape if n == 'one' else PLURALS.get(shape, shape)}", f"{PROMPT_PREFIX}a {c} {shape}"]))
    raise PromptError(
        f"cannot parse prompt {shown}; expected forms like 'a photo of a red circle', "
        "'a photo of three squares', 'a photo of a circle left of a triangle', "
        "'a photo of a blue square and a white triangle'"
    )


# ----------------------------------------------------------------------------
# The prompt space and its splits
# ----------------------------------------------------------------------------


def all_prompts() -> list[dict]:
    """Every prompt of the grammar, in a fixed order (metadata dicts)."""
    out: list[dict] = []
    for s in SHAPES:
        out.append(make_meta("single_object", [{"class": s, "count": 1}]))
    for a, b in itertools.permutations(SHAPES, 2):
        out.append(make_meta("two_object", [{"class": a, "count": 1}, {"class": b, "count": 1}]))
    for s in SHAPES:
        for n in NUMBERS:
            out.append(make_meta("counting", [{"class": s, "count": n}]))
    for s in SHAPES:
        for c in COLORS:
            out.append(make_meta("colors", [{"class": s, "count": 1, "color": c}]))
    for a, b in itertools.permutations(SHAPES, 2):
        for rel in RELATIONS:
            out.append(make_meta("position", [{"class": a, "count": 1}, {"class": b, "count": 1, "position": [rel, 0]}]))
    for a, b in itertools.permutations(SHAPES, 2):
        for c1, c2 in itertools.permutations(COLORS, 2):
            out.append(
                make_meta("color_attr", [{"class": a, "count": 1, "color": c1}, {"class": b, "count": 1, "color": c2}])
            )
    return out


def is_ood(meta: dict) -> bool:
    """True if the prompt uses a held-out colour-shape pair or object pair."""
    inc = meta["include"]
    if any((it.get("color"), it["class"]) in HELD_OUT_COLOR_SHAPE for it in inc):
        return True
    classes = frozenset(it["class"] for it in inc)
    return len(classes) > 1 and classes in HELD_OUT_PAIRS


@dataclass(frozen=True)
class Splits:
    train: list[dict]
    test: list[dict]
    eval: list[dict]


def _build_splits() -> Splits:
    rng = random.Random(SPLIT_SEED)
    train: list[dict] = []
    test: list[dict] = []
    for tag in TAGS:
        tagged = [m for m in all_prompts() if m["tag"] == tag]
        in_domain = [m for m in tagged if not is_ood(m)]
        test += [m | {"ood": True} for m in tagged if is_ood(m)]
        n_hold = int(len(in_domain) * IN_DOMAIN_TEST_FRACTION) if len(in_domain) >= 10 else 0
        held = set(rng.sample(range(len(in_domain)), n_hold))
        for i, m in enumerate(in_domain):
            (test if i in held else train).append(m | {"ood": False})
    # `eval`: a fixed GenEval-style set over the whole grammar, EVAL_PER_TAG
    # entries per tag. Tags with fewer unique prompts are cycled; every entry
    # has its own seed so repeated prompts still get distinct samples.
    erng = random.Random(EVAL_SEED)
    ev: list[dict] = []
    for tag in TAGS:
        tagged = [m for m in all_prompts() if m["tag"] == tag]
        order = erng.sample(tagged, len(tagged))
        for k in range(EVAL_PER_TAG):
            ev.append(order[k % len(order)] | {"seed": EVAL_SEED * 1000 + len(ev)})
    return Splits(train=train, test=test, eval=ev)


_SPLITS: Splits | None = None


def split(name: str) -> list[dict]:
    """Prompts of a split: ``train`` (RL prompts), ``test`` (held-out, with
    ``ood`` flags) or ``eval`` (fixed balanced set, entries carry a ``seed``)."""
    global _SPLITS
    if _SPLITS is None:
        _SPLITS = _build_splits()
    if name not in ("train", "test", "eval"):
        raise ValueError(f"unknown split {name!r}; expected 'train', 'test' or 'eval'")
    return [dict(m) for m in getattr(_SPLITS, name)]
