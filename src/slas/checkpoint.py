"""Atomic training checkpoints and exact resume.

A checkpoint is a directory ``checkpoints/iter_XXXXXX`` holding everything
that changes future updates (STYLE.md habit 8):

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

Many processes (slas.distributed): with DDP every rank holds the same weights and
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

import json
import os
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def _tensors(state: dict) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save(run_dir: Path, iteration: int, module: torch.nn.Module, optimizer, scheduler, ema: dict | None,
         state: dict, keep: int = 2, world=None, sharded: bool = False, old: dict | None = None) -> Path | None:
    """Write checkpoint ``iteration``; returns its directory (None on ranks other than 0). ``world``
    (slas.distributed.World) and ``sharded`` (FSDP2) for many processes: then every rank must call it."""
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
    full_state = dict(state, iteration=iteration, python_rng=[py_state[0], list(py_state[1]), py_state[2]])
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


def load(ckpt: Path, module: torch.nn.Module, optimizer, scheduler, ema: dict | None, sharded: bool = False,
         old: dict | None = None) -> dict:
    """Restore everything in place; returns the JSON state (with ``iteration``). A checkpoint with ``dcp/`` shards
    (FSDP2) loads into any layout, resharded to this run's processes; one without (one process, DDP) loads into an
    unsharded module only (``sharded`` False)."""
    opt = torch.load(ckpt / "optim.pt", weights_only=True)
    if (ckpt / "dcp").is_dir():
        _load_shards(ckpt / "dcp", module, optimizer, ema, old)
    elif sharded:
        raise ValueError(f"{ckpt} was written by an unsharded run (one process or dist.strategy ddp); resume it with "
                         "dist.strategy ddp (any number of processes)")
    else:
        module.load_state_dict(load_file(str(ckpt / "model.safetensors")))
        for name, d in (("ema", ema), ("old", old)):
            if d is not None:
                saved = load_file(str(ckpt / f"{name}.safetensors"))
                for k in d:
                    d[k].copy_(saved[k])
        optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    torch.set_rng_state(load_file(str(ckpt / "rng.safetensors"))["torch"])
    state = json.loads((ckpt / "state.json").read_text())
    v, internal, gauss = state.pop("python_rng")
    random.setstate((v, tuple(internal), gauss))
    return state


def _load_shards(path: Path, module: torch.nn.Module, optimizer, ema: dict | None, old: dict | None) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(module, optimizer)  # initialises an empty optimizer state to load into
    target = {"model": model_sd, "optim": optim_sd, "ema": ema or {}, "old": old or {}}
    dcp.load(target, checkpoint_id=str(path))  # in place, into this run's shards (DTensors) or plain tensors
    set_state_dict(module, optimizer, model_state_dict=target["model"], optim_state_dict=target["optim"])
