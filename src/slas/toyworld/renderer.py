"""Deterministic renderer: GenEval-schema metadata + seed -> uint8 [H, W, 3].

It makes the pretraining data and the "clean render" half of the verifier's
tests. Shapes are drawn with hard edges by testing pixel centres, so every
pixel is exactly a palette colour or the background.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

# GenEval's relation rule has one implementation: the cited upstream port.
from slas.evals.geneval import relative_position
from slas.toyworld.world import BACKGROUND, CANVAS, COLORS, GAP, MAX_OBJECTS, PALETTE, SIZE_RANGE, SIZE_RANGE_CROWDED


@dataclass(frozen=True)
class Obj:
    cls: str
    color: str
    x: int  # top-left column of the bounding box
    y: int  # top-left row
    size: int  # bounding-box side

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) with exclusive x1, y1."""
        return self.x, self.y, self.x + self.size, self.y + self.size


def shape_mask(cls: str, size: int) -> np.ndarray:
    """Boolean [size, size] mask of a shape in its bounding box."""
    c = (np.arange(size) + 0.5)[None, :]  # pixel-centre columns
    r = (np.arange(size) + 0.5)[:, None]  # pixel-centre rows
    if cls == "square":
        return np.ones((size, size), dtype=bool)
    if cls == "circle":
        half = size / 2
        return (c - half) ** 2 + (r - half) ** 2 <= half**2
    if cls == "triangle":  # upward, apex at top centre, base on the bottom row
        return np.abs(c - size / 2) <= r / 2 + 1e-9
    raise ValueError(f"unknown shape {cls!r}")


def _separated(a: Obj, b: Obj) -> bool:
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    return ax1 + GAP <= bx0 or bx1 + GAP <= ax0 or ay1 + GAP <= by0 or by1 + GAP <= ay0


def scene(meta: dict, seed: int) -> list[Obj]:
    """Sample the objects of a scene that satisfies the prompt exactly."""
    rng = random.Random(seed)
    specs: list[tuple[str, str | None]] = []
    for item in meta["include"]:
        specs += [(item["class"], item.get("color"))] * item["count"]
    if not 1 <= len(specs) <= MAX_OBJECTS:
        raise ValueError(f"a scene holds 1..{MAX_OBJECTS} objects, got {len(specs)}")
    rel = next((it["position"][0] for it in meta["include"] if "position" in it), None)
    lo, hi = SIZE_RANGE if len(specs) <= 2 else SIZE_RANGE_CROWDED
    for _attempt in range(1000):
        objs: list[Obj] = []
        for cls, color in specs:
            size = rng.randint(lo, hi)
            obj = Obj(cls, color or rng.choice(COLORS), rng.randint(0, CANVAS - size), rng.randint(0, CANVAS - size), size)
            if not all(_separated(obj, o) for o in objs):
                break
            objs.append(obj)
        else:
            # position prompts: include[1] is `rel` of include[0], unambiguously
            if rel is None or relative_position(objs[1].box, objs[0].box) == {rel}:
                return objs
    raise RuntimeError(f"could not place scene for {meta['prompt']!r} (seed {seed})")


def draw(objs: list[Obj]) -> np.ndarray:
    img = np.empty((CANVAS, CANVAS, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    for o in objs:
        m = shape_mask(o.cls, o.size)
        img[o.y : o.y + o.size, o.x : o.x + o.size][m] = PALETTE[o.color]
    return img


def render(meta: dict, seed: int) -> np.ndarray:
    """uint8 [CANVAS, CANVAS, 3] image of a random scene that satisfies `meta`."""
    return draw(scene(meta, seed))
