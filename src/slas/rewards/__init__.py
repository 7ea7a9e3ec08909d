"""Reward registry: batched callables ``(images, prompts, metadata) -> scores [N]``.

``images`` are uint8 [N, H, W, 3] in memory (never written to disk and re-read:
JPEG round trips change the reward input: DanceGRPO saves PNGs and re-reads them,
Flow-GRPO JPEG-compresses some rewards' inputs). ``build`` turns a
``{name: weight}`` mapping into one scorer that returns every component and
their weighted sum under ``"total"``.

A reward is registered as a factory: ``factory(**options) -> fn``. Options are
keyword arguments (a local model path, a device, ...), checked by name before
anything is loaded, so a typo fails at config time and not after a rollout.
Heavy reward models (``clip``: CLIP score, PickScore, aesthetic, HPS;
ImageReward) import transformers or their packages only inside the factory.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

RewardFn = Callable[[np.ndarray, list[str], list[dict]], np.ndarray]
RewardFactory = Callable[..., RewardFn]
Prepare = Callable[[str, dict], dict]
_REGISTRY: dict[str, RewardFactory] = {}
_PREPARE: dict[str, Prepare] = {}


class RewardInputError(ValueError):
    """An input a reward cannot judge: metadata its ``prepare`` hook refuses, or images it does not take (e.g. of
    another size). The caller's mistake, not the reward failing: the reward server answers it with a 400, not a
    500."""


def register(name: str, prepare: Prepare | None = None):
    """Register a reward factory: ``@register("x") def x(*, model_path: str, device: str = "cpu"): return fn``.

    The factory's keyword parameters are the reward's options; a zero-argument factory takes none. ``prepare(prompt,
    meta) -> meta``, for a reward that reads metadata beyond the prompt: returns the metadata the reward needs
    (derived from the prompt text where it can be) or raises ValueError saying which fields it needs
    (``prepare_metas``). The recipe runs it on every prompt when the prompts load, the reward server on every request.
    A reward fn raises ``RewardInputError`` for images it does not take.
    """

    def deco(factory: RewardFactory):
        if name in _REGISTRY:
            raise ValueError(f"reward {name!r} is already registered")
        _REGISTRY[name] = factory
        if prepare is not None:
            _PREPARE[name] = prepare
        return factory

    return deco


def prepare_metas(names, prompts: list[str], metas: list[dict]) -> list[dict]:
    """The metadata of each prompt as rewards ``names`` need it (their ``prepare`` hooks, in order);
    ``RewardInputError`` naming the reward and the first prompt (and its index) whose metadata it cannot have."""
    available()  # plugins registered
    out = [dict(m) for m in metas]
    for name in names:
        prep = _PREPARE.get(name)
        if prep is None:
            continue
        for i, (prompt, meta) in enumerate(zip(prompts, out, strict=True)):
            try:
                out[i] = prep(prompt, meta)
            except ValueError as e:
                raise RewardInputError(f"reward {name!r} cannot judge prompt {prompt[:80]!r} (item {i}): {e}") from None
    return out


def available() -> list[str]:
    from slas.plugins import load_plugins

    load_plugins()  # plugins (ShapesWorld's toy_* rewards among them) register on import
    return sorted(_REGISTRY)


def accepted_options(name: str) -> dict[str, object]:
    """Option name -> default of reward ``name`` (``inspect.Parameter.empty`` marks a required option)."""
    if name not in available():
        raise ValueError(f"unknown reward {name!r}; registered: {available()}")
    params = inspect.signature(_REGISTRY[name]).parameters.values()
    return {p.name: p.default for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_options(name: str, options: dict) -> None:
    """Raise ValueError, naming the reward and what it accepts, if ``options`` cannot be passed to its factory."""
    if not isinstance(options, dict):
        raise ValueError(f"options of reward {name!r} must be a mapping of option name to value, got {options!r}")
    accepted = accepted_options(name)
    takes_any = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(_REGISTRY[name]).parameters.values())
    described = ", ".join(k if v is inspect.Parameter.empty else f"{k}={v!r}" for k, v in accepted.items()) or "none"
    unknown = sorted(set(options) - set(accepted))
    if unknown and not takes_any:
        raise ValueError(f"unknown option(s) {unknown} for reward {name!r}; it accepts: {described}")
    missing = [k for k, v in accepted.items() if v is inspect.Parameter.empty and k not in options]
    if missing:
        raise ValueError(f"reward {name!r} needs option(s) {missing}; it accepts: {described}")


def build(weights: dict[str, float], batch_size: int = 256, options: dict[str, dict] | None = None):
    """One scorer for a weighted sum of registered rewards.

    ``options[name]`` holds the keyword arguments of reward ``name``'s factory (e.g.
    ``{"pickscore": {"model_path": "/ckpt/PickScore_v1"}}``); rewards without an entry get none.
    Returns ``score(images, prompts, metas) -> {name: float64 [N], ..., "total": float64 [N]}``.
    """
    options = options or {}
    unknown = [n for n in weights if n not in available()]
    if unknown:
        raise ValueError(f"unknown reward {unknown[0]!r}; registered: {available()}")
    stray = [n for n in options if n not in weights]
    if stray:
        # a misspelt name here would otherwise silently leave a reward at its defaults
        raise ValueError(f"options given for reward {stray[0]!r}, which has no weight; weighted: {list(weights)}")
    for name in weights:
        check_options(name, options.get(name, {}))
    fns = {n: _REGISTRY[n](**options.get(n, {})) for n in weights}

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


# Registration imports: clip (CLIP-family reward models and ImageReward, loaded lazily) and remote (the client of
# `slas reward-server`). Plugins (slas.plugins) register theirs, e.g. ShapesWorld's verifier and proxy rewards.
from slas.rewards import clip, remote  # noqa: E402,F401
