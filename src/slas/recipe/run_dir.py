"""A run directory of ``slas train``: its checkpoints, its metrics log, and the trained weights it gives.

``run_dir/`` holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one JSON object per logged
iteration; ``MetricsLog`` writes it, ``read_metrics`` is the one reader), ``curves.png``, ``samples/`` and
``checkpoints/iter_NNNNNN/``.

A checkpoint directory holds everything that changes future updates:

- ``model.safetensors``: the module state (weights and buffers);
- ``ema.safetensors``: EMA weights, when EMA is on;
- ``old.safetensors``: the old policy of the forward-process objectives (train.objective nft / awm);
- ``optim.pt``: optimizer and LR-schedule state (tensors and numbers only,
  loaded with ``torch.load(weights_only=True)``: nothing is unpickled);
- ``rng.safetensors``: the global torch RNG state;
- ``state.json``: iteration, prompt-sampler position, Python RNG state and any
  running statistics.

It is written to a temporary directory and renamed into place, so a kill at
any moment leaves either the previous or the new checkpoint, never half of one.
``state.json`` also records the size and sha256 of every other file (``checksums``); ``verify`` checks them
before anything is loaded, so a truncated or corrupt file is one ``RunError`` naming it (``slas train --resume``
then falls back to the previous intact checkpoint: ``latest_intact``). Checkpoints written before the checksums
load as before, their files checked only for being readable.

Many processes (slas.recipe.parallel): with DDP every rank holds the same weights and
optimizer state, so rank 0 alone writes the files above and any number of
processes (one included) can resume from them. With FSDP2 (``dist.strategy:
fsdp``) the weights, optimizer state and EMA are sharded: every rank writes its
shards with ``torch.distributed.checkpoint`` into ``dcp/`` (``optim.pt`` then
holds only the LR schedule), and rank 0 also writes the consolidated
``model.safetensors`` / ``ema.safetensors`` that ``slas export`` and the
evaluation harness read. DCP reshards on load, so a sharded checkpoint resumes
under another number of processes, or in one process.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from slas.config import Config, ConfigError


def _tensors(state: dict) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save(run_dir: Path, iteration: int, module: torch.nn.Module, optimizer, scheduler, ema: dict | None,
         state: dict, keep: int = 2, world=None, sharded: bool = False, old: dict | None = None) -> Path | None:
    """Write checkpoint ``iteration``; returns its directory (None on ranks other than 0). ``world``
    (slas.recipe.parallel.World) and ``sharded`` (FSDP2) for many processes: then every rank must call it."""
    main = world is None or world.is_main
    if not sharded and not main:
        return None  # DDP: rank 0's weights and optimizer state are every rank's
    ckpt_root = Path(run_dir) / "checkpoints"
    final = ckpt_root / f"iter_{iteration:06d}"
    tmp = ckpt_root / f".tmp_iter_{iteration:06d}"
    if main:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    if sharded:
        world.barrier()  # the directory exists before any rank writes into it
        model_state, ema_state, old_state = _save_shards(tmp / "dcp", module, optimizer, ema, old)
        if not main:
            world.barrier()
            return None
        torch.save({"scheduler": scheduler.state_dict()}, tmp / "optim.pt")
    else:
        model_state, ema_state, old_state = module.state_dict(), ema, old
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optim.pt")
    save_file(_tensors(model_state), str(tmp / "model.safetensors"))
    if ema_state is not None:
        save_file(_tensors(ema_state), str(tmp / "ema.safetensors"))
    if old_state is not None:
        save_file(_tensors(old_state), str(tmp / "old.safetensors"))
    save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    py_state = random.getstate()
    full_state = dict(state, iteration=iteration, python_rng=[py_state[0], list(py_state[1]), py_state[2]],
                      checksums={p.name: _digest(p) for p in sorted(tmp.iterdir()) if p.is_file()})
    (tmp / "state.json").write_text(json.dumps(full_state))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(ckpt_root.glob("iter_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    if sharded:
        world.barrier()  # no rank runs ahead of a checkpoint that is not in place yet
    return final


def _save_shards(path: Path, module: torch.nn.Module, optimizer, ema: dict | None,
                 old: dict | None) -> tuple[dict, dict | None, dict | None]:
    """Every rank writes its shards of the weights, the optimizer state, the EMA and the old policy (DCP); returns
    the consolidated weights, EMA and old policy on rank 0 (empty elsewhere), for the safetensors files."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

    model_sd, optim_sd = get_state_dict(module, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd, "ema": ema or {}, "old": old or {}}, checkpoint_id=str(path))
    full = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def consolidated(d):
        return None if d is None else {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in d.items()}

    return full, consolidated(ema), consolidated(old)


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    ckpts = sorted(p for p in (Path(run_dir) / "checkpoints").glob("iter_*") if (p / "state.json").is_file())
    return ckpts[-1] if ckpts else None


def _digest(path: Path) -> dict:
    """What ``state.json`` records of a checkpoint file: its size and sha256."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return {"size": path.stat().st_size, "sha256": h.hexdigest()}


def checkpoints(run_dir: Path) -> list[Path]:
    """Every checkpoint directory of a run (complete or damaged), oldest first."""
    return sorted(p for p in (Path(run_dir) / "checkpoints").glob("iter_*") if p.is_dir())


def read_state(ckpt: Path) -> dict:
    """A checkpoint's ``state.json``; a ``RunError`` naming it when it is missing, not JSON or not a checkpoint's."""
    path = Path(ckpt) / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: missing (the checkpoint directory is incomplete)") from None
    except UnicodeDecodeError:
        raise RunError(f"{path}: not text; the file is corrupt") from None
    except OSError as e:
        raise RunError(f"{path}: cannot read it: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); the file is truncated "
                       "or corrupt") from None
    if not isinstance(state, dict) or not isinstance(state.get("iteration"), int) or "python_rng" not in state:
        raise RunError(f'{path}: not a checkpoint\'s state (it needs an integer "iteration" and "python_rng"); the file '
                       "is corrupt")
    return state


def verify(ckpt: Path, names: Sequence[str] | None = None) -> dict:
    """Check a checkpoint's files against the sizes and sha256 its ``state.json`` recorded at save time (``names``:
    only these files, those present among them when the checkpoint predates the checksums); returns the state.
    Every problem is a ``RunError`` naming the file and what is wrong."""
    ckpt = Path(ckpt)
    state = read_state(ckpt)
    sums = state.get("checksums")
    if sums is None:  # written before the checksums: each file must at least be readable as what it is
        for p in sorted(ckpt.iterdir()) if names is None else [ckpt / n for n in names if (ckpt / n).is_file()]:
            if p.suffix == ".safetensors":
                _read(p, _safetensors_header)
            elif p.suffix == ".pt":
                _read(p, lambda f: zipfile.ZipFile(f).close())  # torch.save's zip: a cut file loses its directory
        return state
    if not isinstance(sums, dict) or not all(isinstance(v, dict) and isinstance(v.get("size"), int)
                                             and isinstance(v.get("sha256"), str) for v in sums.values()):
        raise RunError(f"{ckpt / 'state.json'}: its checksums are malformed; the file is corrupt")
    for name in sums if names is None else [n for n in names if n in sums]:
        path, want = ckpt / name, sums[name]
        if not path.is_file():
            raise RunError(f"{path}: missing (state.json lists it)")
        size = path.stat().st_size
        if size != want["size"]:
            what = "truncated" if size < want["size"] else "wrong size"
            raise RunError(f"{path}: {what}: {size:,} bytes, but {want['size']:,} were written at save time")
        if _digest(path)["sha256"] != want["sha256"]:
            raise RunError(f"{path}: corrupt: its sha256 differs from the one recorded in state.json at save time")
    return state


def latest_intact(run_dir: Path, warn: Callable[[str], None] = print) -> tuple[Path, dict] | None:
    """The newest checkpoint that passes ``verify``, with its state; each newer one that fails is skipped with one
    ``warn`` line saying what is wrong. None when the run holds no checkpoint; a ``RunError`` listing every problem
    when it holds some and none is intact."""
    problems = []
    for ckpt in reversed(checkpoints(run_dir)):
        try:
            state = verify(ckpt)
        except RunError as e:
            problems.append(str(e))
            warn(f"warning: skipping checkpoint {ckpt.name}: {e}")
            continue
        return ckpt, state
    if problems:
        raise RunError(f"no intact checkpoint to resume {run_dir} from: {'; '.join(problems)} (move "
                       f"{Path(run_dir) / 'checkpoints'} away to train it again from iteration 0)")
    return None


def _safetensors_header(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), "pt"):  # checks the header against the file's length
        pass


def _read(path: Path, reader: Callable[[Path], Any]) -> Any:
    """``reader(path)``; any failure is a ``RunError`` naming the file."""
    try:
        return reader(path)
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except Exception as e:  # safetensors, zip (torch.save) and unpickling errors of a truncated or corrupt file
        msg = " ".join(str(e).split()) or type(e).__name__
        raise RunError(f"{path}: cannot read it, the file is truncated or corrupt "
                       f"({msg if len(msg) <= 120 else msg[:117] + '...'})") from None


def load(ckpt: Path, module: torch.nn.Module, optimizer, scheduler, ema: dict | None, sharded: bool = False,
         old: dict | None = None, state: dict | None = None) -> dict:
    """Restore everything in place; returns the JSON state (with ``iteration``). A checkpoint with ``dcp/`` shards
    (FSDP2) loads into any layout, resharded to this run's processes; one without (one process, DDP) loads into an
    unsharded module only (``sharded`` False). ``state``: the checkpoint's state as ``verify`` returned it (the
    caller checked the files), else the files are verified here. Every file is read before anything is restored,
    so a ``RunError`` (a truncated or corrupt file, named) leaves the module, optimizer and RNGs as they were."""
    state = dict(verify(ckpt) if state is None else state)
    has_shards = (ckpt / "dcp").is_dir()
    if sharded and not has_shards:
        raise ValueError(f"{ckpt} was written by an unsharded run (one process or dist.strategy ddp); resume it with "
                         "dist.strategy ddp (any number of processes)")
    opt = _read(ckpt / "optim.pt", lambda p: torch.load(p, weights_only=True))
    if not isinstance(opt, dict) or "scheduler" not in opt or not (has_shards or "optimizer" in opt):
        raise RunError(f"{ckpt / 'optim.pt'}: not a checkpoint's optimizer state; the file is corrupt")
    rng = _read(ckpt / "rng.safetensors", lambda p: load_file(str(p))["torch"])
    tensors = {} if has_shards else {name: _read(ckpt / f"{name}.safetensors", lambda p: load_file(str(p)))
                                     for name, d in (("model", module), ("ema", ema), ("old", old)) if d is not None}
    state.pop("checksums", None)
    v, internal, gauss = state.pop("python_rng")
    if has_shards:
        _load_shards(ckpt / "dcp", module, optimizer, ema, old)
    else:
        module.load_state_dict(tensors["model"])
        for name, d in (("ema", ema), ("old", old)):
            if d is not None:
                for k in d:
                    d[k].copy_(tensors[name][k])
        optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    torch.set_rng_state(rng)
    random.setstate((v, tuple(internal), gauss))
    return state


def _load_shards(path: Path, module: torch.nn.Module, optimizer, ema: dict | None, old: dict | None) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(module, optimizer)  # initialises an empty optimizer state to load into
    target = {"model": model_sd, "optim": optim_sd, "ema": ema or {}, "old": old or {}}
    dcp.load(target, checkpoint_id=str(path))  # in place, into this run's shards (DTensors) or plain tensors
    set_state_dict(module, optimizer, model_state_dict=target["model"], optim_state_dict=target["optim"])


# ----------------------------------------------------------------------------
# Metrics: the log the loop writes and the one reader
# ----------------------------------------------------------------------------


class MetricsLog:
    """``metrics.jsonl`` (always) plus TensorBoard / W&B when configured. Ranks other than 0 (``main`` False)
    keep their rows in memory and write nothing."""

    def __init__(self, run_dir: Path, cfg: Config, keep_upto: int | None, main: bool = True):
        self.path = run_dir / "metrics.jsonl"
        self.main, self.rows = main, []
        self.tb = self.wandb = None
        if not main:
            return
        if keep_upto is None:
            self.path.write_text("")
        else:  # resume: drop lines written after the checkpoint we resume from
            lines = self.path.read_text().splitlines() if self.path.exists() else []
            kept = [ln for ln in lines if ln.strip() and json.loads(ln)["iteration"] <= keep_upto]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        self.rows = [json.loads(ln) for ln in self.path.read_text().splitlines()]
        if cfg.run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("run.tensorboard is on but tensorboard is not installed: "
                                  "pip install 'slas[tensorboard]'") from None
            self.tb = SummaryWriter(str(run_dir / "tb"))
        if cfg.run.wandb:
            try:
                import wandb
            except ImportError:
                raise ConfigError("run.wandb is on but wandb is not installed: pip install 'slas[wandb]'") from None
            self.wandb = wandb.init(dir=str(run_dir), mode=cfg.run.wandb_mode, config=cfg.to_dict(), resume="allow")

    def write(self, row: dict) -> None:
        if not self.main:
            self.rows.append(row)
            return
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows.append(row)
        step = row["iteration"]
        if self.tb is not None:
            for k, v in row.items():
                if k != "iteration":
                    self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(row, step=step)

    def plot(self, path: Path) -> None:
        if not self.main:
            return
        import matplotlib.pyplot as plt

        fig = metrics_figure(self.rows)
        fig.savefig(path, dpi=80)
        plt.close(fig)


# The proportions the ShapesWorld evaluation logs (fractions of images), each with the metric holding its n: their
# curves get a fixed [0, 1] axis and Wilson 95% bands, and training's final lines their n and intervals.
PROPORTION_N = {"eval/gold_accuracy": "eval/n_images", "eval/geneval_accuracy": "eval/n_images",
                "eval/exact_count": "eval/n_images", "eval/debris": "eval/n_images",
                "eval/id/gold_accuracy": "eval/id/n_images", "eval/id/exact_count": "eval/id/n_images",
                "eval/id/debris": "eval/id/n_images"}


def metrics_figure(rows: list[dict]):
    """The figure of ``curves.png``: one panel per group of logged metrics. Accuracy panels (``PROPORTION_N``) keep
    the y-axis at [0, 1], never zoomed, and shade the Wilson 95% interval of each point whose row logs its n."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slas.evals.stats import wilson

    # (title, [(metric, line label)]): a panel draws each of its metrics that the run logged
    panels = [("train reward", [("train/reward_mean", None)]),
              ("strict gold accuracy", [("eval/gold_accuracy", "held-out (eval.split)"),
                                        ("eval/id/gold_accuracy", "in-domain (train prompts)")]),
              ("held-out GenEval rules", [("eval/geneval_accuracy", None)]),
              ("exact count", [("eval/exact_count", "held-out"), ("eval/id/exact_count", "in-domain")]),
              ("held-out reward (deterministic)", [("eval/reward_mean", None)])]
    panels = [(title, [(k, lab) for k, lab in lines if any(k in r for r in rows)]) for title, lines in panels]
    panels = [(title, lines) for title, lines in panels if lines] or [("no metrics yet", [])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3), squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels, strict=False):
        banded = False
        for key, label in lines:
            pts = [(r["iteration"], r[key]) for r in rows if key in r]
            (line,) = ax.plot(*zip(*pts, strict=False), marker="o" if key.startswith("eval") else None, ms=3,
                              label=label)
            n_key = PROPORTION_N.get(key)
            band = [(r["iteration"], *wilson(r[key] * r[n_key], int(r[n_key]))) for r in rows
                    if n_key and key in r and r.get(n_key) and 0 <= r[key] <= 1]
            if band:
                xs, los, his = zip(*band, strict=True)
                ax.fill_between(xs, los, his, color=line.get_color(), alpha=0.2, linewidth=0)
                banded = True
        if lines and all(k in PROPORTION_N for k, _ in lines):
            ax.set_ylim(0.0, 1.0)  # an accuracy: the whole scale, so that noise never looks like a trend
            title += " (95% Wilson band)" if banded else ""
        if any(label for _, label in lines):
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def read_metrics(run_dir: str | Path, bad: list[int] | None = None) -> list[dict]:
    """The one reader of a run's ``metrics.jsonl``: its rows in iteration order ([] when there is none yet).
    Unreadable lines (a torn last line of a killed run) are skipped; their line numbers are appended to ``bad``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)  # the loop writes NaN for a NaN reward; json reads it back
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("iteration"), int):
            rows.append(row)
        elif bad is not None:
            bad.append(n)
    return sorted(rows, key=lambda r: r["iteration"])


# ----------------------------------------------------------------------------
# Trained weights: the one loader behind ``slas sample``, ``slas toyworld eval``, ``slas eval --model RUN``,
# ``slas export`` and ``slas report``. It builds the backbone from the run's own config, loads the latest
# checkpoint's ``model.safetensors`` and, by default, overlays ``ema.safetensors`` when the run keeps an EMA
# (training's own evaluation samples with it swapped in). ``old.safetensors`` is training state, never sampled.
# Every problem is a ``RunError`` (a ``ValueError``): the CLI prints it as one ``error:`` line, exit status 2.
# ----------------------------------------------------------------------------


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
    """The checkpoint directory read (``checkpoints/iter_NNNNNN``)."""
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
    run = Path(run_dir)
    if not is_run_dir(run):
        raise RunError(f"{run}: no config.yaml there; is it a run directory of `slas train`?")
    ckpt = latest(run)
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
    from safetensors import SafetensorError

    from slas.config import load_config
    from slas.recipe.builders import build_backbone

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
    # the files read, against the sizes and sha256 state.json recorded (a truncated or corrupt one is named)
    verify(ckpt, ["model.safetensors", *(["ema.safetensors"] if use_ema else [])])

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
