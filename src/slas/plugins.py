"""Plugins: modules that register backbones, rewards and worlds when imported.

A plugin is any importable module whose import calls ``slas.policy.register_adapter``, ``slas.rewards.register``,
``slas.plugins.register_world`` and/or ``slas.plugins.register_objective``. Installed packages declare theirs as
entry points in the group ``slas.plugins`` (``[project.entry-points."slas.plugins"] name = "package.module"``); the
``SLAS_PLUGINS`` environment variable (comma-separated module names) adds more without packaging. ShapesWorld (``slas.toyworld``)
is a plugin like any other: the generic layers never import it, they look names up in the registries, which load
the plugins on first use.

A *world* supplies what the recipe needs when the config names no prompt files: its prompts by split name and
its evaluation. The recipe calls ``world.prompts("train")`` for ``data.prompts: null`` and
``world.evaluate_backbone(backbone, cfg, run_dir, iteration, score_fn=..., history=...)`` at each evaluation when
``data.eval_prompts`` is null.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

GROUP = "slas.plugins"
BUILTIN = ("slas.toyworld",)  # shipped plugins, loaded even when the package metadata is missing (a bare checkout)
_loaded: list[str] = []


class World(Protocol):
    """A prompt world: named prompt splits and an evaluation protocol (``data.world``)."""

    def prompts(self, split: str) -> list[dict]:
        """The prompt entries (``{"prompt": str, ...metadata}``) of split ``split``; ValueError for an unknown one."""

    def evaluate_backbone(self, backbone: Any, cfg: Any, run_dir: Path, iteration: int, *, score_fn: Any,
                 history: list[dict]) -> dict[str, float]:
        """One evaluation of ``backbone`` (eval mode, the weights to evaluate in place): ``eval/*`` metrics; it may
        write files (sample grids) under ``run_dir``. ``score_fn``: the training reward (``slas.rewards.build``);
        ``history``: the run's metrics rows so far."""


_WORLDS: dict[str, World] = {}

# train.objective name -> its class (slas.recipe.objectives.Objective) or "module:Class", imported on first use
_OBJECTIVES: dict[str, str | type] = {
    "ppo_sde": "slas.recipe.objectives:PPOObjective",  # PPO-clip on SDE transitions (DanceGRPO, Flow-GRPO)
    "nft": "slas.recipe.objectives:NFTObjective",  # DiffusionNFT
    "awm": "slas.recipe.objectives:AWMObjective",  # Advantage Weighted Matching
}


def load_plugins() -> list[str]:
    """Import every plugin once (built-in, entry points, ``SLAS_PLUGINS``); returns the module names loaded."""
    if _loaded:
        return list(_loaded)
    names = list(BUILTIN)
    names += [ep.value for ep in entry_points(group=GROUP)]
    names += [n.strip() for n in os.environ.get("SLAS_PLUGINS", "").split(",") if n.strip()]
    for name in dict.fromkeys(names):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ImportError(f"slas plugin {name!r} cannot be imported: {e}") from e
        _loaded.append(name)
    return list(_loaded)


def register_world(name: str, world: World) -> None:
    """Register world ``name`` (``data.world``)."""
    _add(_WORLDS, "world", name, world)


def worlds() -> list[str]:
    load_plugins()
    return sorted(_WORLDS)


def get_world(name: str) -> World:
    """The world registered as ``name``; ValueError naming the known ones otherwise."""
    return _lookup(_WORLDS, "world", name)


def register_objective(name: str, target: str | type) -> None:
    """Register policy objective ``name`` (``train.objective``): a subclass of slas.recipe.objectives.Objective, or
    ``"module:Class"`` (imported on first use)."""
    _add(_OBJECTIVES, "objective", name, target)


def objectives() -> list[str]:
    """The registered ``train.objective`` names (plugins loaded)."""
    load_plugins()
    return sorted(_OBJECTIVES)


def objective_class(name: str) -> type:
    """The class of ``train.objective`` ``name``."""
    return resolve(_lookup(_OBJECTIVES, "objective", name))


def resolve(target: str | type) -> type:
    """A registered class, or ``"module:Class"`` imported now."""
    if isinstance(target, str):
        module, cls = target.split(":")
        return getattr(importlib.import_module(module), cls)
    return target


def _add(table: dict, kind: str, name: str, value) -> None:
    if name in table and table[name] is not value:
        raise ValueError(f"{kind} {name!r} is already registered")
    table[name] = value


def _lookup(table: dict, kind: str, name: str):
    load_plugins()
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; registered: {sorted(table)}")
    return table[name]
