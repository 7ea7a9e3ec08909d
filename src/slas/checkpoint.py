"""Atomic training checkpoints and exact resume.

A checkpoint is a directory ``checkpoints/iter_XXXXXX`` holding everything
that changes future updates (STYLE.md habit 8):

- ``model.safetensors``: the module state (weights and buffers);
- ``ema.safetensors``: EMA weights, when EMA is on;
- ``optim.pt``: optimizer and LR-schedule state (tensors and numbers only,
  loaded with ``torch.load(weights_only=True)``: nothing is unpickled);
- ``rng.safetensors``: the global torch RNG state;
- ``state.json``: iteration, prompt-sampler position, Python RNG state and any
  running statistics.

It is written to a temporary directory and renamed into place, so a kill at
any moment leaves either the previous or the new checkpoint, never half of one.
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
         state: dict, keep: int = 2) -> Path:
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"iter_{iteration:06d}"
    tmp = ckpt_root / f".tmp_iter_{iteration:06d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(_tensors(module.state_dict()), str(tmp / "model.safetensors"))
    if ema is not None:
        save_file(_tensors(ema), str(tmp / "ema.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optim.pt")
    save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    py_state = random.getstate()
    full_state = dict(state, iteration=iteration, python_rng=[py_state[0], list(py_state[1]), py_state[2]])
    (tmp / "state.json").write_text(json.dumps(full_state))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(ckpt_root.glob("iter_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    ckpts = sorted(p for p in (Path(run_dir) / "checkpoints").glob("iter_*") if (p / "state.json").is_file())
    return ckpts[-1] if ckpts else None


def load(ckpt: Path, module: torch.nn.Module, optimizer, scheduler, ema: dict | None) -> dict:
    """Restore everything in place; returns the JSON state (with ``iteration``)."""
    module.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    if ema is not None:
        saved = load_file(str(ckpt / "ema.safetensors"))
        for k in ema:
            ema[k].copy_(saved[k])
    opt = torch.load(ckpt / "optim.pt", weights_only=True)
    optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    torch.set_rng_state(load_file(str(ckpt / "rng.safetensors"))["torch"])
    state = json.loads((ckpt / "state.json").read_text())
    v, internal, gauss = state.pop("python_rng")
    random.setstate((v, tuple(internal), gauss))
    return state
