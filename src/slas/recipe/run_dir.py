"""A run directory of ``slas train``: ``RunDir`` names its files (the only place they are spelled), and ``load_run``
gives the trained weights it holds.

``run_dir/`` holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one JSON object per logged iteration;
slas.recipe.metrics writes and reads it), ``curves.png``, ``before_after.png``, ``samples/iter_NNNNNN.png`` (the
evaluation grids), ``early_stop.json`` (when a world's monitor stopped the run), ``checkpoints/iter_NNNNNN/``
(slas.recipe.checkpoint), while a run trains, ``.lock`` (slas.recipe.run_lock), and ``fresh_heldout.json`` where the
final model was evaluated on fresh noise (``slas toyworld eval --seed S --json``; benchmarks/run_table.py and
research/slas_scale.py read it).

``load_run`` is the one loader of trained weights behind ``slas sample``, ``slas toyworld eval``, ``slas eval --model
RUN``, ``slas export`` and ``slas report``. It builds the backbone from the run's own config, loads the latest
checkpoint's weights and, by default, overlays the EMA weights when the run keeps an EMA (training's own evaluation
samples with it swapped in). The old policy is training state, never sampled. Every problem is a ``RunError`` (a
``ValueError``): the CLI prints it as one ``error:`` line, exit status 2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slas.recipe import checkpoint
from slas.recipe.checkpoint import RunError

__all__ = ["LoadedRun", "RunDir", "RunError", "is_run_checkpoint", "is_run_dir", "latest_checkpoint", "load_run",
           "looks_like_run"]

GRID = re.compile(r"iter_(\d+)\.png")  # samples/iter_NNNNNN.png
CHECKPOINT = re.compile(rf"{checkpoint.PREFIX}\d+")  # checkpoints/iter_NNNNNN


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"

    @property
    def before_after(self) -> Path:
        return self.root / "before_after.png"

    @property
    def early_stop(self) -> Path:
        return self.root / "early_stop.json"

    @property
    def fresh_heldout(self) -> Path:
        return self.root / "fresh_heldout.json"

    def read_fresh_heldout(self) -> tuple[float, Any] | None:
        """``fresh_heldout.json``'s held-out strict gold (``overall_strict``, a fraction) and its eval ``seed`` (``""``
        when absent); None when the run has no such file. ValueError when the file is not the JSON of
        ``slas toyworld eval --json``."""
        path = self.fresh_heldout
        if not path.is_file():
            return None
        try:
            got = json.loads(path.read_text())
            return float(got["overall_strict"]), got.get("seed", "")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path} is not the JSON of `slas toyworld eval --json` ({e!r})") from None

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def lock(self) -> Path:
        """Held (``flock``) by the ``slas train`` that writes the folder, removed when it ends (slas.recipe.run_lock)."""
        return self.root / ".lock"

    def grid(self, iteration: int, suffix: str = ".png") -> Path:
        """The evaluation grid of ``iteration`` (``suffix`` ``.jsonl``: its verdicts, where the world writes them)."""
        return self.samples / f"iter_{iteration:06d}{suffix}"

    def grids(self) -> dict[int, Path]:
        """Every evaluation grid of the run: iteration -> path."""
        found = (GRID.fullmatch(p.name) for p in self.samples.glob("iter_*.png")) if self.samples.is_dir() else ()
        return {int(m.group(1)): self.samples / m.group(0) for m in sorted(found, key=lambda m: m.group(0)) if m}

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        return checkpoint.latest(self.checkpoints)

    def is_run(self) -> bool:
        """A directory with a ``config.yaml``: what ``slas train`` leaves (checkpoints or not)."""
        return self.config.is_file()


def is_run_dir(path: str | Path) -> bool:
    """A directory with a ``config.yaml``: what ``slas train`` leaves (checkpoints or not)."""
    return RunDir(path).is_run()


def looks_like_run(path: str | Path) -> bool:
    """A run directory, one of its checkpoints, or a directory with a ``checkpoints/`` folder that has lost its
    config.yaml: what the loaders hand to ``load_run`` (which then says what is missing)."""
    return is_run_dir(path) or is_run_checkpoint(path) or (Path(path) / "checkpoints").is_dir()


def is_run_checkpoint(path: str | Path) -> bool:
    """One checkpoint directory of a run, ``RUN/checkpoints/iter_NNNNNN`` (complete or not; its run may be gone)."""
    path = Path(path)
    return path.is_dir() and CHECKPOINT.fullmatch(path.name) is not None and path.parent.name == "checkpoints"


@dataclass
class LoadedRun:
    """What ``load_run`` loaded."""

    backbone: Any
    """The ``slas.policy`` adapter, weights loaded, its module in eval mode."""
    cfg: Any
    """The run's ``slas.config.Config`` (its config.yaml, with ``run.out_dir`` = the run directory)."""
    checkpoint: Path
    """The checkpoint directory read (``checkpoints/iter_NNNNNN``)."""
    iteration: int
    """The training iteration of that checkpoint."""
    ema: bool
    """True when the EMA weights were overlaid, False for the policy's own (raw) weights."""
    description: str
    """One line naming what was loaded, e.g. ``run runs/x iter_000060 (EMA weights)``."""


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest complete checkpoint of a run directory, or ``RUN/checkpoints/iter_NNNNNN`` itself when given one;
    ``RunError`` when it is not a run, holds none yet, or is a checkpoint whose run's config.yaml is gone."""
    path = Path(run_dir)
    if is_run_checkpoint(path):
        run = RunDir(path.parent.parent)
        if not run.is_run():
            raise RunError(f"{path} is a checkpoint of `slas train`, but {run.config} is missing: a checkpoint loads "
                           "with its run's config; put the checkpoint back in its run directory")
        checkpoint.read_state(path)  # a checkpoint directory without its state file is incomplete
        return path
    run = RunDir(path)
    if not run.is_run():
        raise RunError(f"{run.root}: no {run.config.name} there; is it a run directory of `slas train`?")
    ckpt = run.latest()
    if ckpt is None:
        raise RunError(f"{run.root} holds no checkpoint yet under {run.checkpoints} (a run saves one every "
                       "run.checkpoint_every iterations and at the end)")
    return ckpt


def load_run(run_dir: str | Path, ema: bool | None = None, overrides: Sequence[str] = (),
             check: Callable[[Any], None] | None = None) -> LoadedRun:
    """The final (latest-checkpoint) weights of a run of ``slas train``, or those of one of its checkpoints when
    ``run_dir`` is ``RUN/checkpoints/iter_NNNNNN``.

    ``ema``: None (the default) = the EMA weights when the run keeps one, else the policy's; True = the EMA weights,
    a ``RunError`` when the run keeps none; False = the policy's own weights. ``overrides``: dotted config overrides
    applied to the run's config.yaml (e.g. ``model.device=cpu``). ``check(cfg)``: called with the run's config
    before the backbone is built (which may load gigabytes), to refuse a run early (raise a ``ValueError``).
    """
    from slas.config import load_config
    from slas.recipe.builders import build_backbone

    ckpt = latest_checkpoint(run_dir)
    run = RunDir(ckpt.parent.parent)
    cfg = load_config(run.config, [f"run.out_dir={run.root}", *overrides])
    if check is not None:
        check(cfg)
    ema_shapes = checkpoint.weight_shapes(ckpt, "ema")
    if ema is True and ema_shapes is None:
        raise RunError(f"{ckpt} holds no EMA weights (the run trained with train.ema_decay 0); drop the EMA request "
                       "to use the policy's weights")
    use_ema = ema is not False and ema_shapes is not None
    # the files read, against the sizes and sha256 the state file recorded (a truncated or corrupt one is named)
    checkpoint.verify(ckpt, sorted({*checkpoint.weight_files(ckpt, "model"),
                                    *(checkpoint.weight_files(ckpt, "ema") if use_ema else [])}))

    backbone = build_backbone(cfg)
    module = backbone.module
    where, ema_where = (ckpt, ckpt) if (ckpt / checkpoint.SHARDS).is_dir() else (ckpt / checkpoint.MODEL, ckpt / checkpoint.EMA)
    saved = checkpoint.weight_shapes(ckpt, "model") or {}
    want = module.state_dict()
    missing, unexpected = sorted(set(want) - set(saved)), sorted(set(saved) - set(want))
    if missing or unexpected:
        raise RunError(f"{where} does not fit the model built from {run.config}: "
                       f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                       f"(e.g. {unexpected[:3]})")
    bad = [k for k, shape in saved.items() if shape != tuple(want[k].shape)]
    if bad:
        raise RunError(f"{where} does not fit the model built from {run.config}: "
                       f"{bad[0]} is {saved[bad[0]]}, the model's {tuple(want[bad[0]].shape)}")
    checkpoint.load_weights(ckpt, "model", want)  # in place, one tensor at a time
    if use_ema:
        named = dict(module.named_parameters())
        stray = [k for k in ema_shapes if k not in named]
        if stray:
            raise RunError(f"{ema_where} names {len(stray)} parameter(s) the model lacks, e.g. {stray[:3]}")
        bad = [k for k, shape in ema_shapes.items() if shape != tuple(named[k].shape)]
        if bad:
            raise RunError(f"{ema_where}: {bad[0]} is {ema_shapes[bad[0]]}, the model's {tuple(named[bad[0]].shape)}")
        checkpoint.load_weights(ckpt, "ema", {k: named[k].data for k in ema_shapes})
    module.eval()
    iteration = int(checkpoint.read_state(ckpt)["iteration"])
    weights = "EMA weights" if use_ema else "raw weights"
    return LoadedRun(backbone, cfg, ckpt, iteration, use_ema, f"run {run.root} {ckpt.name} ({weights})")
