"""What ``slas train`` leaves and says when it fails: a fresh start that fails before its first checkpoint leaves
nothing behind (``undo_failed_start``), and a run stopped by its environment, a full disk or a torchrun process that
died or stalled, is one ``RunFailure`` line that says what happened and where the run can resume from (``explain``).

A dead process is seen at once by the others when its connections close: gloo fails the next collective with
"Connection closed by peer" (measured under 1 s after a kill -9, docs/reliability.md). A process that stalls, or
whose host is lost, closes nothing: the others then wait in their collective for ``dist.timeout_min`` (the process
group timeout the recipe sets), and fail with a time-out.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import torch

from slas.config import Config
from slas.recipe import checkpoint
from slas.recipe.checkpoint import RunFailure
from slas.recipe.run_dir import RunDir

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, a quota, a file-size limit (RLIMIT_FSIZE)
ABSENT: frozenset[str] = frozenset({"\0"})  # the snapshot of a run directory that does not exist
# how the collective backends word a peer that is gone or silent (gloo pair.cc / unbound_buffer.cc, NCCL, c10d)
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "remote worker crashing",
              "NCCL communicator was aborted", "Socket closed")
_TIMED_OUT = ("Timed out", "timed out", "Timeout", "timeout")


def snapshot(root: Path) -> frozenset[str]:
    """The names in ``root`` before a fresh start (``ABSENT`` when there is no such directory)."""
    return frozenset(p.name for p in root.iterdir()) if root.is_dir() else ABSENT


def undo_failed_start(run: RunDir, before: frozenset[str]) -> bool:
    """After a fresh start failed before its first checkpoint (a reward that raises in the iteration-0 evaluation, a
    full disk, Ctrl-C twice): rank 0 removes what the start made, the run directory itself when it made it, so that
    nothing is left that looks like a run. A directory with a checkpoint is a run and is kept. True when what is left
    is not a run (no config.yaml)."""
    if int(os.environ.get("RANK", "0")) != 0 or not run.root.is_dir() or checkpoint.all_of(run.checkpoints):
        return False
    if before is ABSENT:
        shutil.rmtree(run.root, ignore_errors=True)
    else:
        for p in run.root.iterdir():
            if p.name not in before:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return not run.is_run()


def _collective_failure(e: BaseException) -> bool:
    """An error of a collective or of the rendezvous store (another process is gone, or silent too long)."""
    if isinstance(e, torch.distributed.DistError):
        return True
    msg = str(e)
    return (isinstance(e, RuntimeError) and int(os.environ.get("WORLD_SIZE", "1")) > 1
            and any(s in msg for s in _PEER_GONE + _TIMED_OUT) and any(s in msg for s in ("gloo", "NCCL", "c10d",
                                                                                            "Connection", "ProcessGroup")))


def explain(e: BaseException, run: RunDir, cfg: Config, removed: bool) -> RunFailure | None:
    """The one-line ``RunFailure`` for an error that stopped the run from outside (a full disk, another torchrun
    process that died or stalled), saying where the run can resume from; None for any other error."""
    if isinstance(e, RunFailure):
        what, then = str(e), "free space (or fix the cause), then"
    elif isinstance(e, OSError) and e.errno in DISK_FULL:
        what, then = f"{e.filename or run.root}: {e.strerror}", "free space, then"
    elif _collective_failure(e):
        msg = " ".join(str(e).split())
        cause = next((s for s in _PEER_GONE + _TIMED_OUT if s in msg), "")
        detail = (msg[msg.index(cause):] if cause else msg).split(". ")[0][:160]  # its first sentence
        rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
        if cause in _TIMED_OUT:
            why = (f"another process stalled, or its host was lost, for dist.timeout_min ({cfg.dist.timeout_min:g} "
                   "min); if rank 0 was evaluating or saving a checkpoint for that long, raise dist.timeout_min")
        else:
            why = "another process died (killed, crashed or out of memory: its own log says which)"
        what, then = f"rank {rank} of {world} stopped: a collective failed ({detail}): {why}", "continue with torchrun"
    else:
        return None
    return RunFailure(f"{what}; {_where_it_stands(run, removed, then)}")


def _where_it_stands(run: RunDir, removed: bool, then: str) -> str:
    """What a run stopped by its environment still has, and the command that continues it."""
    if removed:
        return f"the run had no checkpoint yet, so what it wrote in {run.root} was removed: start it again"
    ckpt = run.latest()
    if ckpt is None:
        return f"{run.root} holds no checkpoint yet: {then} `slas train --resume {run.root}` starts it afresh"
    return f"the last checkpoint, {ckpt}, is intact: {then} `slas train --resume {run.root}`"
