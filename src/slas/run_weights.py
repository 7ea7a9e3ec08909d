"""The trained weights of a run of ``slas train``: the one loader behind ``slas sample``, ``slas toyworld eval``,
``slas eval --model RUN`` and ``slas export``.

A run directory holds its ``config.yaml`` and ``checkpoints/iter_XXXXXX/`` (``slas.checkpoint``). ``load_run`` builds
the backbone from the run's own config (``slas.train.build_backbone``), loads the latest checkpoint's
``model.safetensors`` (the policy: weights and buffers) and, by default, overlays ``ema.safetensors`` when the run
keeps an EMA (``train.ema_decay > 0``): the EMA holds the trainable parameters only, and training's own evaluation
samples with it swapped in (``train.swapped_params``). ``old.safetensors`` (the old policy of the forward-process
objectives) is training state, never sampled.

Every problem is a ``RunError`` (a ``ValueError``): the CLI prints it as one ``error:`` line, exit status 2.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LoadedRun", "RunError", "is_run_dir", "latest_checkpoint", "load_run"]


class RunError(ValueError):
    """A run directory that cannot give trained weights (printed by the CLI as one ``error:`` line, exit 2)."""


@dataclass
class LoadedRun:
    """What ``load_run`` loaded."""

    backbone: Any
    """The ``slas.policy`` adapter, weights loaded, its module in eval mode."""
    cfg: Any
    """The run's ``slas.config.Config`` (its config.yaml, with ``run.out_dir`` = the run directory)."""
    checkpoint: Path
    """The checkpoint directory read (``checkpoints/iter_XXXXXX``)."""
    iteration: int
    """The training iteration of that checkpoint."""
    ema: bool
    """True when the EMA weights were overlaid, False for the policy's own (raw) weights."""
    description: str
    """One line naming what was loaded, e.g. ``run runs/x iter_000060 (EMA weights)``."""


def is_run_dir(path: str | Path) -> bool:
    """A directory with a ``config.yaml``: what ``slas train`` leaves (checkpoints or not)."""
    return (Path(path) / "config.yaml").is_file()


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest complete checkpoint of a run directory; ``RunError`` when it is not a run or holds none yet."""
    from . import checkpoint

    run = Path(run_dir)
    if not is_run_dir(run):
        raise RunError(f"{run}: no config.yaml there; is it a run directory of `slas train`?")
    ckpt = checkpoint.latest(run)
    if ckpt is None:
        raise RunError(f"{run} holds no checkpoint yet under {run / 'checkpoints'} (a run saves one every "
                       "run.checkpoint_every iterations and at the end)")
    return ckpt


def load_run(run_dir: str | Path, ema: bool | None = None, overrides: Sequence[str] = (),
             check: Callable[[Any], None] | None = None) -> LoadedRun:
    """The final (latest-checkpoint) weights of a run of ``slas train``.

    ``ema``: None (the default) = the EMA weights when the run keeps one, else the policy's; True = the EMA weights,
    a ``RunError`` when the run keeps none; False = the policy's own weights. ``overrides``: dotted config overrides
    applied to the run's config.yaml (e.g. ``model.device=cpu``). ``check(cfg)``: called with the run's config
    before the backbone is built (which may load gigabytes), to refuse a run early (raise a ``ValueError``).
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .config import load_config
    from .train import build_backbone

    run = Path(run_dir)
    ckpt = latest_checkpoint(run)
    cfg = load_config(run / "config.yaml", [f"run.out_dir={run}", *overrides])
    if check is not None:
        check(cfg)
    ema_file = ckpt / "ema.safetensors"
    if ema is True and not ema_file.is_file():
        raise RunError(f"{ckpt} holds no EMA weights (the run trained with train.ema_decay 0); drop the EMA request "
                       "to use the policy's weights")
    use_ema = ema is not False and ema_file.is_file()

    def read(path: Path) -> dict[str, torch.Tensor]:
        try:
            return load_file(str(path))
        except (OSError, SafetensorError) as e:
            raise RunError(f"{path}: cannot read it: {e}") from None

    backbone = build_backbone(cfg)
    module = backbone.module
    state = read(ckpt / "model.safetensors")
    want = module.state_dict()
    missing, unexpected = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or unexpected:
        raise RunError(f"{ckpt / 'model.safetensors'} does not fit the model built from {run / 'config.yaml'}: "
                       f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                       f"(e.g. {unexpected[:3]})")
    bad = [k for k, v in state.items() if v.shape != want[k].shape]
    if bad:
        raise RunError(f"{ckpt / 'model.safetensors'} does not fit the model built from {run / 'config.yaml'}: "
                       f"{bad[0]} is {tuple(state[bad[0]].shape)}, the model's {tuple(want[bad[0]].shape)}")
    module.load_state_dict({k: v.to(want[k].device) for k, v in state.items()})
    if use_ema:
        named = dict(module.named_parameters())
        saved = read(ema_file)
        stray = [k for k in saved if k not in named]
        if stray:
            raise RunError(f"{ema_file} names {len(stray)} parameter(s) the model lacks, e.g. {stray[:3]}")
        bad = [k for k, v in saved.items() if v.shape != named[k].shape]
        if bad:
            raise RunError(f"{ema_file}: {bad[0]} is {tuple(saved[bad[0]].shape)}, the model's "
                           f"{tuple(named[bad[0]].shape)}")
        with torch.no_grad():
            for k, v in saved.items():
                named[k].copy_(v)
    module.eval()
    try:
        iteration = int(json.loads((ckpt / "state.json").read_text())["iteration"])
    except (OSError, ValueError, KeyError, TypeError):
        iteration = int(ckpt.name.rpartition("_")[2])
    weights = "EMA weights" if use_ema else "raw weights"
    return LoadedRun(backbone, cfg, ckpt, iteration, use_ema, f"run {run} {ckpt.name} ({weights})")
