"""Reward registry: batched callables ``(images, prompts, metadata) -> scores [N]``.

``images`` are uint8 [N, H, W, 3] in memory (never written to disk and re-read:
JPEG round trips change the reward input, ANCHORS_ALGO §5.5). ``build`` turns a
``{name: weight}`` mapping into one scorer that returns every component and
their weighted sum under ``"total"``. Heavy reward models (open_clip, HPS,
ImageReward) register lazily and import their packages only when built.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

RewardFn = Callable[[np.ndarray, list[str], list[dict]], np.ndarray]
_REGISTRY: dict[str, Callable[[], RewardFn]] = {}


def register(name: str):
    """Register a reward factory: ``@register("x") def x(): return fn``."""

    def deco(factory: Callable[[], RewardFn]):
        if name in _REGISTRY:
            raise ValueError(f"reward {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return deco


def available() -> list[str]:
    return sorted(_REGISTRY)


def build(weights: dict[str, float], batch_size: int = 256):
    """One scorer for a weighted sum of registered rewards.

    Returns ``score(images, prompts, metas) -> {name: float64 [N], ..., "total": float64 [N]}``.
    """
    unknown = [n for n in weights if n not in _REGISTRY]
    if unknown:
        raise ValueError(f"unknown reward {unknown[0]!r}; registered: {available()}")
    fns = {n: _REGISTRY[n]() for n in weights}

    def score(images: np.ndarray, prompts: list[str], metas: list[dict]) -> dict[str, np.ndarray]:
        n = len(images)
        if len(prompts) != n or len(metas) != n:
            raise ValueError(f"got {n} images, {len(prompts)} prompts and {len(metas)} metadata entries")
        out = {}
        for name, fn in fns.items():
            parts = [np.asarray(fn(images[i : i + batch_size], prompts[i : i + batch_size], metas[i : i + batch_size]),
                                dtype=np.float64) for i in range(0, n, batch_size)]
            out[name] = np.concatenate(parts) if parts else np.zeros(0)
            if out[name].shape != (n,):
                raise ValueError(f"reward {name!r} returned shape {out[name].shape}, expected ({n},)")
        out["total"] = sum(w * out[name] for name, w in weights.items())
        return out

    return score


from . import toy  # noqa: E402,F401  (registers the ShapesWorld rewards)
