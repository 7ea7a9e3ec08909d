"""Checkpoints of ``slas train``: ``checkpoints/iter_NNNNNN/`` in a run directory (slas.recipe.run_dir.RunDir).

A checkpoint directory holds everything that changes future updates:

- ``model.safetensors``: the module state (weights and buffers);
- ``ema.safetensors``: EMA weights, when EMA is on;
- ``old.safetensors``: the old policy of the forward-process objectives (train.objective nft / awm);
- ``optim.pt``: optimizer and LR-schedule state (tensors and numbers only, loaded with
  ``torch.load(weights_only=True)``: nothing is unpickled);
- ``rng.safetensors``: the global torch RNG state;
- ``state.json``: iteration, prompt-sampler position, Python RNG state, the objective's and estimator's running
  statistics, and the size and sha256 of every other file (``checksums``).

It is written to a temporary directory and renamed into place, so a kill at any moment leaves either the previous
or the new checkpoint, never half of one. ``verify`` checks the recorded sizes and hashes before anything is loaded,
so a truncated or corrupt file is one ``RunError`` naming it (``slas train --resume`` then falls back to the
previous intact checkpoint: ``latest_intact``).

Many processes (slas.recipe.parallel): with DDP every rank holds the same weights and optimizer state, so rank 0
alone writes the files above and any number of processes (one included) can resume from them. With FSDP2
(``dist.strategy: fsdp``) the weights, optimizer state, EMA and old policy are sharded: every rank writes its own
shards with ``torch.distributed.checkpoint`` into ``dcp/`` and hashes the files it wrote; ``optim.pt`` then holds
only the LR schedule, and there are no safetensors weight files: nothing is ever gathered whole. DCP reshards on
load, so a sharded checkpoint resumes under another number of processes, or in one process; ``load_weights`` reads
its weights into a plain module one tensor at a time (``slas export``, the evaluation harness).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

# the files of a checkpoint directory: the only place their names are spelled
MODEL, EMA, OLD, OPTIM, RNG, STATE, SHARDS = ("model.safetensors", "ema.safetensors", "old.safetensors", "optim.pt",
                                              "rng.safetensors", "state.json", "dcp")
PREFIX = "iter_"  # checkpoints/iter_NNNNNN


class RunError(ValueError):
    """A run directory or checkpoint that cannot be used (printed by the CLI as one ``error:`` line, exit 2)."""


class RunFailure(RuntimeError):
    """A run stopped by its environment, not by its inputs: a full disk, a torchrun process that died (printed by the
    CLI as one ``error:`` line, exit status 1)."""


def name(iteration: int) -> str:
    """The directory name of iteration ``iteration``'s checkpoint."""
    return f"{PREFIX}{iteration:06d}"


def _tensors(state: dict) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save(root: Path, iteration: int, module: torch.nn.Module, optimizer, scheduler, ema: dict | None,
         state: dict, keep: int = 2, group=None, sharded: bool = False, old: dict | None = None) -> Path | None:
    """Write checkpoint ``iteration`` under ``root`` (a run's ``checkpoints/``); returns its directory (None on ranks
    other than 0). ``group`` (slas.recipe.parallel.ProcessGroup) and ``sharded`` (FSDP2) for many processes: then
    every rank must call it.

    A write that fails (a full disk, a file-size limit, an I/O error) removes the partial temporary directory and
    raises ``RunFailure`` saying which file and why; every earlier checkpoint stays as it was (the oldest are removed
    only after the new one is in place)."""
    try:
        return _write(root, iteration, module, optimizer, scheduler, ema, state, keep, group, sharded, old)
    except Exception as e:
        if isinstance(e, torch.distributed.DistError):  # another rank failed: the recipe says so (slas.recipe.train)
            raise
        root, tmp = Path(root), Path(root) / f".tmp_{name(iteration)}"
        files = sorted(tmp.glob("*"), key=lambda p: p.stat().st_mtime) if tmp.is_dir() else []
        try:  # measured before the partial files are removed
            free = f"; {shutil.disk_usage(root).free / 2**20:,.1f} MiB were free there"
        except OSError:
            free = ""
        if group is None or group.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        where = getattr(e, "filename", None) or (files[-1] if files else root)
        raise RunFailure(f"checkpoint {name(iteration)} was not saved: writing {where}: {_why(e)}{free}") from e


def _why(e: Exception) -> str:
    """Why a checkpoint write failed, in words: the OS's reason where the writer kept it."""
    msg = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    if m := re.search(r"\(os error (\d+)\)", msg):  # safetensors: "I/O error: No space left on device (os error 28)"
        return os.strerror(int(m.group(1)))
    if "unexpected pos" in msg or "file write failed" in msg:  # torch.save's zip writer (inline_container.cc)
        return "the file system took only part of it (no space left, a quota or a file-size limit)"
    return msg if len(msg) <= 200 else msg[:197] + "..."


def _write(root: Path, iteration: int, module: torch.nn.Module, optimizer, scheduler, ema: dict | None,
           state: dict, keep: int, group, sharded: bool, old: dict | None) -> Path | None:
    main = group is None or group.is_main
    if not sharded and not main:
        return None  # DDP: rank 0's weights and optimizer state are every rank's
    root = Path(root)
    final = root / name(iteration)
    tmp = root / f".tmp_{name(iteration)}"
    if main:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    shard_sums: dict[str, dict] = {}
    if sharded:
        group.barrier()  # the directory exists before any rank writes into it
        _save_shards(tmp / SHARDS, module, optimizer, ema, old)
        group.barrier()  # every shard and the metadata are on disk
        # each rank hashes the files it wrote (__<rank>_*.distcp; rank 0 also .metadata), in parallel
        mine = sorted((tmp / SHARDS).glob(f"__{group.rank}_*.distcp")) + ([tmp / SHARDS / ".metadata"] if main else [])
        for part in group.all_gather_object({f"{SHARDS}/{p.name}": _digest(p) for p in mine}):
            shard_sums |= part
        if not main:
            group.barrier()
            return None
        torch.save({"scheduler": scheduler.state_dict()}, tmp / OPTIM)
    else:
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / OPTIM)
        save_file(_tensors(module.state_dict()), str(tmp / MODEL))
        if ema is not None:
            save_file(_tensors(ema), str(tmp / EMA))
        if old is not None:
            save_file(_tensors(old), str(tmp / OLD))
    save_file({"torch": torch.get_rng_state()}, str(tmp / RNG))
    py_state = random.getstate()
    sums = {p.name: _digest(p) for p in sorted(tmp.iterdir()) if p.is_file()} | shard_sums
    full_state = dict(state, iteration=iteration, python_rng=[py_state[0], list(py_state[1]), py_state[2]],
                      checksums=dict(sorted(sums.items())))
    (tmp / STATE).write_text(json.dumps(full_state))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for stale in sorted(root.glob(f"{PREFIX}*"))[:-keep]:
        shutil.rmtree(stale, ignore_errors=True)
    if sharded:
        group.barrier()  # no rank runs ahead of a checkpoint that is not in place yet
    return final


def _save_shards(path: Path, module: torch.nn.Module, optimizer, ema: dict | None, old: dict | None) -> None:
    """Every rank writes its shards of the weights, the optimizer state, the EMA and the old policy (DCP)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(module, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd, "ema": ema or {}, "old": old or {}}, checkpoint_id=str(path))


def all_of(root: Path) -> list[Path]:
    """Every checkpoint directory under ``root`` (complete or damaged), oldest first."""
    return sorted(p for p in Path(root).glob(f"{PREFIX}*") if p.is_dir())


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (one with its state file), or None."""
    done = [p for p in all_of(root) if (p / STATE).is_file()]
    return done[-1] if done else None


def _digest(path: Path) -> dict:
    """What the state file records of a checkpoint file: its size and sha256."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return {"size": path.stat().st_size, "sha256": h.hexdigest()}


def read_json(path: Path) -> Any:
    """A JSON file's value; a ``RunError`` naming the file when it is missing, unreadable or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except UnicodeDecodeError:
        raise RunError(f"{path}: not text; the file is corrupt") from None
    except OSError as e:
        raise RunError(f"{path}: cannot read it: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        what = e.msg.removesuffix(" at")  # "Invalid control character at"
        raise RunError(f"{path}: not valid JSON ({what} at line {e.lineno}, column {e.colno}); the file is truncated or "
                       "corrupt") from None
    except RecursionError:
        raise RunError(f"{path}: not valid JSON (nested too deeply); the file is corrupt") from None


def read_state(ckpt: Path) -> dict:
    """A checkpoint's state file; a ``RunError`` naming it when it is missing, not JSON or not a checkpoint's."""
    path = Path(ckpt) / STATE
    if not path.exists():
        raise RunError(f"{path}: missing (the checkpoint directory is incomplete)")
    state = read_json(path)
    if not isinstance(state, dict) or not isinstance(state.get("iteration"), int) or "python_rng" not in state:
        raise RunError(f'{path}: not a checkpoint\'s state (it needs an integer "iteration" and "python_rng"); the file '
                       "is corrupt")
    return state


def verify(ckpt: Path, names: Sequence[str] | None = None) -> dict:
    """Check a checkpoint's files (``names``: only these) against the sizes and sha256 its state file recorded at
    save time; returns the state. Every problem is a ``RunError`` naming the file and what is wrong."""
    ckpt = Path(ckpt)
    state = read_state(ckpt)
    sums = state.get("checksums")
    if sums is None:
        raise RunError(f"{ckpt / STATE}: records no checksums, so its files cannot be checked: checkpoints written "
                       "before slas recorded them are not supported (train the run again)")
    if not isinstance(sums, dict) or not all(isinstance(v, dict) and isinstance(v.get("size"), int)
                                             and isinstance(v.get("sha256"), str) for v in sums.values()):
        raise RunError(f"{ckpt / STATE}: its checksums are malformed; the file is corrupt")
    for file in sums if names is None else [n for n in names if n in sums]:
        path, want = ckpt / file, sums[file]
        if not path.is_file():
            raise RunError(f"{path}: missing ({STATE} lists it)")
        size = path.stat().st_size
        if size != want["size"]:
            what = "truncated" if size < want["size"] else "wrong size"
            raise RunError(f"{path}: {what}: {size:,} bytes, but {want['size']:,} were written at save time")
        if _digest(path)["sha256"] != want["sha256"]:
            raise RunError(f"{path}: corrupt: its sha256 differs from the one recorded in {STATE} at save time")
    return state


def latest_intact(root: Path, warn: Callable[[str], None] = print) -> tuple[Path, dict] | None:
    """The newest checkpoint under ``root`` that passes ``verify``, with its state; each newer one that fails is
    skipped with one ``warn`` line saying what is wrong. None when there is no checkpoint; a ``RunError`` listing
    every problem when there are some and none is intact."""
    problems = []
    for ckpt in reversed(all_of(root)):
        try:
            state = verify(ckpt)
        except RunError as e:
            problems.append(str(e))
            warn(f"warning: skipping checkpoint {ckpt.name}: {e}")
            continue
        return ckpt, state
    if problems:
        raise RunError(f"no intact checkpoint in {root}: {'; '.join(problems)} (move it away to train the run again "
                       "from iteration 0)")
    return None


# bytes per element of each safetensors dtype (safetensors' format: an 8-byte little-endian header length, a JSON
# header {name: {dtype, shape, data_offsets}}, then the data; huggingface/safetensors README.md "Format")
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def check_safetensors(path: Path) -> dict:
    """A safetensors file's header, checked against the file without reading its tensors (cheap for a file of many
    GB): every entry's dtype, shape and byte range agree, and the file ends where the last tensor does. A
    ``RunError`` names the file and says what is wrong (truncated, corrupt header)."""
    path = Path(path)

    def corrupt(what: str) -> RunError:
        return RunError(f"{path}: not a safetensors file, or a corrupt one: {what}")

    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or 8 + n > size:
                if n < 2 or n > 100_000_000:  # safetensors caps headers at 100 MB
                    raise corrupt(f"a {size:,}-byte file with no valid header length")
                raise RunError(f"{path}: truncated: {size:,} bytes, shorter than its own header ({8 + n:,} bytes)")
            raw = f.read(n)
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except OSError as e:
        raise RunError(f"{path}: cannot read it: {e.strerror or e}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise corrupt("its header is not JSON") from None
    if not isinstance(header, dict):
        raise corrupt("its header is not a JSON object")
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        ok = (isinstance(entry, dict) and entry.get("dtype") in _DTYPE_BYTES and isinstance(entry.get("shape"), list)
              and all(isinstance(d, int) and d >= 0 for d in entry["shape"])
              and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
              and all(isinstance(o, int) and o >= 0 for o in entry["data_offsets"]))
        if not ok or entry["data_offsets"][1] - entry["data_offsets"][0] != (
                math.prod(entry["shape"]) * _DTYPE_BYTES[entry["dtype"]]):
            raise corrupt(f"the header entry of tensor {key!r} is malformed")
        end = max(end, entry["data_offsets"][1])
    if size < 8 + n + end:
        raise RunError(f"{path}: truncated: {size:,} bytes, but its header describes {8 + n + end:,}")
    if size > 8 + n + end:
        raise corrupt(f"{size:,} bytes, but its header describes {8 + n + end:,}")
    return header


def _read(path: Path, reader: Callable[[Path], Any]) -> Any:
    """``reader(path)``; any failure is a ``RunError`` naming the file."""
    try:
        return reader(path)
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except RunError:
        raise
    except Exception as e:  # safetensors, zip (torch.save) and unpickling errors of a truncated or corrupt file
        msg = " ".join(str(e).split()) or type(e).__name__
        raise RunError(f"{path}: cannot read it, the file is truncated or corrupt "
                       f"({msg if len(msg) <= 120 else msg[:117] + '...'})") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors (its header checked first: ``check_safetensors``); a ``RunError`` naming it when
    it cannot be read."""
    path = Path(path)
    check_safetensors(path)
    return _read(path, lambda p: load_file(str(p)))


WEIGHTS = {"model": MODEL, "ema": EMA, "old": OLD}  # the weight sets a checkpoint may hold -> their file


def weight_files(ckpt: Path, name: str) -> list[str]:
    """The files (relative to the checkpoint) that hold weight set ``name`` (``model``, ``ema``, ``old``): its
    safetensors file, or every shard file of a sharded checkpoint."""
    ckpt = Path(ckpt)
    if (ckpt / SHARDS).is_dir():
        return sorted(f"{SHARDS}/{p.name}" for p in (ckpt / SHARDS).iterdir() if p.is_file())
    return [WEIGHTS[name]]


def weight_shapes(ckpt: Path, name: str) -> dict[str, tuple[int, ...]] | None:
    """Each tensor's shape in weight set ``name`` of a checkpoint (None when it holds no such set), read from the
    safetensors header or the DCP metadata, without reading the weights."""
    ckpt = Path(ckpt)
    if (ckpt / SHARDS).is_dir():
        from torch.distributed.checkpoint import FileSystemReader

        meta = _read(ckpt / SHARDS / ".metadata", lambda p: FileSystemReader(str(p.parent)).read_metadata())
        prefix = name + "."
        found = {k[len(prefix):]: tuple(m.size) for k, m in meta.state_dict_metadata.items()
                 if k.startswith(prefix) and hasattr(m, "size")}
        return found or None
    path = ckpt / WEIGHTS[name]
    if not path.is_file():
        return None
    from safetensors import safe_open

    def shapes(p: Path) -> dict[str, tuple[int, ...]]:
        with safe_open(str(p), "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}

    return _read(path, shapes)


def read_weights(ckpt: Path, name: str) -> dict[str, torch.Tensor]:
    """Weight set ``name`` of a checkpoint as plain CPU tensors in their saved dtype (a sharded checkpoint's gathered
    one tensor at a time); {} when it holds no such set."""
    ckpt = Path(ckpt)
    if not (ckpt / SHARDS).is_dir():
        path = ckpt / WEIGHTS[name]
        return read_tensors(path) if path.is_file() else {}
    from torch.distributed.checkpoint import FileSystemReader

    meta = _read(ckpt / SHARDS / ".metadata", lambda p: FileSystemReader(str(p.parent)).read_metadata())
    prefix = name + "."
    out = {k[len(prefix):]: torch.empty(tuple(m.size), dtype=m.properties.dtype)
           for k, m in meta.state_dict_metadata.items() if k.startswith(prefix) and hasattr(m, "size")}
    if out:
        load_weights(ckpt, name, out)
    return out


def load_weights(ckpt: Path, name: str, into: dict[str, torch.Tensor]) -> None:
    """Copy weight set ``name`` of a checkpoint into the tensors ``into`` (keyed as saved; plain tensors on any
    device), in place: from its safetensors file, or from the DCP shards without a process group, one tensor at a
    time (no full copy of the checkpoint besides ``into``)."""
    ckpt = Path(ckpt)
    if (ckpt / SHARDS).is_dir():
        import torch.distributed.checkpoint as dcp

        target = {name: {k: v.detach() for k, v in into.items()}}
        _read(ckpt / SHARDS, lambda p: dcp.load(target, checkpoint_id=str(p), no_dist=True))
        return
    saved = read_tensors(ckpt / WEIGHTS[name])
    with torch.no_grad():
        for k, v in into.items():
            v.copy_(saved[k])


def load(ckpt: Path, module: torch.nn.Module, optimizer, scheduler, ema: dict | None, sharded: bool = False,
         old: dict | None = None, state: dict | None = None) -> dict:
    """Restore everything in place; returns the JSON state (with ``iteration``). A checkpoint with shards (FSDP2)
    loads into any layout, resharded to this run's processes; one without (one process, DDP) loads into an
    unsharded module only (``sharded`` False). ``state``: the checkpoint's state as ``verify`` returned it (the
    caller checked the files), else the files are verified here. Every file is read before anything is restored,
    so a ``RunError`` (a truncated or corrupt file, named) leaves the module, optimizer and RNGs as they were."""
    ckpt = Path(ckpt)
    state = dict(verify(ckpt) if state is None else state)
    has_shards = (ckpt / SHARDS).is_dir()
    if sharded and not has_shards:
        raise RunError(f"{ckpt} was written by an unsharded run (one process or dist.strategy ddp); resume it with "
                       "dist.strategy ddp (any number of processes)")
    opt = _read(ckpt / OPTIM, lambda p: torch.load(p, weights_only=True))
    if not isinstance(opt, dict) or "scheduler" not in opt or not (has_shards or "optimizer" in opt):
        raise RunError(f"{ckpt / OPTIM}: not a checkpoint's optimizer state; the file is corrupt")
    rng = _read(ckpt / RNG, lambda p: load_file(str(p))["torch"])
    tensors = {} if has_shards else {file: read_tensors(ckpt / file)
                                     for file, d in ((MODEL, module), (EMA, ema), (OLD, old)) if d is not None}
    state.pop("checksums", None)
    v, internal, gauss = state.pop("python_rng")
    if has_shards:
        _load_shards(ckpt / SHARDS, module, optimizer, ema, old)
    else:
        module.load_state_dict(tensors[MODEL])
        for file, d in ((EMA, ema), (OLD, old)):
            if d is not None:
                for k in d:
                    d[k].copy_(tensors[file][k])
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
