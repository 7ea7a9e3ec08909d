"""ShapesWorld rewards from the verifier (slas.toyworld.verifier)."""

from __future__ import annotations

import numpy as np

from slas.config.errors import short
from slas.rewards import register
from slas.toyworld.verifier import _COLORS_ARR, ASSIGN_DIST, VerifyResult, verify
from slas.toyworld.world import COLORS, RELATIONS, SHAPES, PromptError, parse

# the rewards that judge each image with the verifier against its metadata (here and slas.toyworld.proxies)
VERIFIER_REWARDS = ("toy_score", "toy_correct", "toy_geneval", "toy_biased")


def _short(value: object, n: int = 80) -> str:
    r = repr(value)
    return r if len(r) <= n else r[: n - 3] + "..."


def meta_problem(meta: dict) -> str | None:
    """What is wrong with GenEval-schema metadata that has an ``include`` (what the verifier reads), or None."""

    def count_ok(c: object, low: int) -> bool:
        return isinstance(c, int) and not isinstance(c, bool) and low <= c <= 10**6

    include = meta["include"]
    if not isinstance(include, list) or not include:
        return f"include must be a non-empty list of objects, got {_short(include)}"
    for j, item in enumerate(include):
        if not isinstance(item, dict):
            return f"include[{j}] must be an object, got {_short(item)}"
        if item.get("class") not in SHAPES:
            return f"include[{j}].class must be one of {list(SHAPES)}, got {_short(item.get('class'))}"
        if not count_ok(item.get("count"), 1):
            return f"include[{j}].count must be an int >= 1, got {_short(item.get('count'))}"
        if "color" in item and item["color"] not in COLORS:
            return f"include[{j}].color must be one of {list(COLORS)}, got {_short(item['color'])}"
        if "position" in item:
            pos = item["position"]
            if not (isinstance(pos, list) and len(pos) == 2 and pos[0] in RELATIONS and count_ok(pos[1], 0)
                    and pos[1] < j):
                return (f"include[{j}].position must be [relation, index of an earlier include] with a relation in "
                        f"{list(RELATIONS)}, got {_short(pos)}")
    exclude = meta.get("exclude", [])
    if not isinstance(exclude, list) or not all(
            isinstance(x, dict) and isinstance(x.get("class"), str) and count_ok(x.get("count"), 0) for x in exclude):
        return f"exclude must be a list of {{class, count}} objects, got {_short(exclude)}"
    return None


def prepare_meta(prompt: str, meta: dict) -> dict:
    """The ``prepare`` hook of the rewards that read the verifier's metadata (slas.rewards.register): ``meta`` as
    it is when it holds a valid ``include``, else the ShapesWorld grammar's metadata of the prompt text
    (``parse``) with the record's own keys on top. ValueError naming the problem (an unknown word, a malformed
    prompt, a bad ``include``) otherwise."""
    meta = dict(meta or {})
    if "include" in meta:
        problem = meta_problem(meta)
        if problem:
            raise ValueError(f"{problem} (ShapesWorld rewards need GenEval-schema 'include' with "
                             "class/count/color/position)")
        return meta if "prompt" in meta else meta | {"prompt": prompt}
    if not isinstance(prompt, str):
        raise ValueError(f"needs the prompt text (a ShapesWorld prompt) or metadata with 'include', got {short(prompt)}")
    try:
        parsed = parse(prompt)
    except PromptError as e:
        raise ValueError(f"{e} (ShapesWorld rewards need a ShapesWorld prompt, or metadata with 'include')") from None
    return parsed | meta

# One verifier pass serves every toy reward of a batch: when a config weights
# several of them, the second one reads the cached results. The key holds the
# image bytes themselves, so a new batch in a reused buffer is never confused.
_last: tuple[bytes, tuple[str, ...], list[VerifyResult]] | None = None  # (image bytes, metadata, results)


def _results(images: np.ndarray, metas: list[dict]) -> list[VerifyResult]:
    global _last
    key = (images.tobytes(), tuple(repr(sorted(m.items())) for m in metas))  # the whole metadata: it is what is judged
    if _last is None or _last[:2] != key:
        _last = (*key, [verify(img, m) for img, m in zip(images, metas, strict=True)])
    return _last[2]


def _field(name: str):
    def factory():
        def fn(images: np.ndarray, prompts: list[str], metas: list[dict]) -> np.ndarray:
            return np.array([float(getattr(r, name)) for r in _results(images, metas)])

        return fn

    return factory


# Strict partial credit: exact counts, colours, relations and a cleanliness
# term; 1 exactly when the gold judge says correct. The default RL reward.
register("toy_score", prepare=prepare_meta)(_field("score"))
# The binary gold itself (sparse).
register("toy_correct", prepare=prepare_meta)(_field("correct"))


def clean_score(images: np.ndarray) -> np.ndarray:
    """Dense cleanliness in [0, 1] per image [N]: the mean over pixels of ``max(0, 1 - d / ASSIGN_DIST)``,
    where ``d`` is the RGB distance to the nearest palette colour or the background. Flat, crisp colours
    score 1; the in-between colours that become debris, ambiguous blobs and misread shapes score less.
    Unlike ``score`` it changes smoothly with every pixel, so small exploration noise moves it."""
    img = images.astype(np.float32)  # [N, H, W, 3]
    d = np.linalg.norm(img[..., None, :] - _COLORS_ARR, axis=-1).min(-1)  # [N, H, W]
    return np.clip(1.0 - d / ASSIGN_DIST, 0.0, 1.0).mean(axis=(1, 2)).astype(np.float64)


# Dense, prompt-agnostic image cleanliness (not a gold judge: an empty canvas scores 1). Use it with
# toy_score, never alone.
register("toy_clean")(lambda: lambda images, prompts, metas: clean_score(images))
