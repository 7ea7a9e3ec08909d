"""One ``slas train`` per run folder: ``RunLock`` holds an exclusive ``flock`` on the folder's lock file
(``RunDir.lock``) for the run's lifetime, so that a second run with the same ``run.out_dir`` stops with one error
line instead of interleaving its metrics, config and checkpoints with the first one's.

The kernel releases an ``flock`` when its holder's process dies, however it dies (a crash, SIGKILL, an OOM kill), so a
lock file left behind by a dead run never blocks the next one: only a live holder does. The file holds the holder's
pid, host and start time, for the second run's message. Under torchrun only rank 0 (``RANK``) takes the lock: rank 0
is the process that writes the folder (``ProcessGroup.is_main``).

A start that fails leaves no run folder behind: the folders the lock made are removed again when they hold nothing
but the lock file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from slas.config import ConfigError
from slas.recipe.run_dir import RunDir


class RunLock:
    """``with RunLock(run): ...``: rank 0 holds ``run.lock`` for the duration (ConfigError when another process holds
    it, or when the folder cannot be written); the other ranks hold nothing."""

    def __init__(self, run: RunDir, main: bool | None = None):
        self.run = run
        self.main = int(os.environ.get("RANK", "0")) == 0 if main is None else main  # torchrun sets RANK per process
        self.fd: int | None = None
        self.made: list[Path] = []  # the folders this lock created, deepest first

    def __enter__(self) -> RunLock:
        if self.main:
            self.acquire()
        return self

    def __exit__(self, kind, error, tb) -> None:
        self.release(failed=kind is not None)

    def acquire(self) -> None:
        root, path = self.run.root, self.run.lock
        self.made = _make_dirs(root)
        try:
            for _ in range(10):  # the holder may unlink the file between our open and our flock: then lock the new one
                fd = _open(root, path)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _holder(path)
                    os.close(fd)
                    raise ConfigError(f"run.out_dir {root} is in use by another `slas train`{holder}: two runs in one "
                                      "folder would mix their metrics and checkpoints; wait for it to finish, or "
                                      "choose another run.out_dir") from None
                try:
                    same = os.fstat(fd).st_ino == os.stat(path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    self.fd = fd
                    break
                os.close(fd)
            else:
                raise ConfigError(f"run.out_dir {root}: could not lock {path.name} (it kept being replaced)")
            info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, (json.dumps(info) + "\n").encode(), 0)
        except BaseException:
            self._remove_made()
            raise

    def release(self, failed: bool = False) -> None:
        """Unlock; the lock file goes (first, so that a process that opened it meanwhile sees it replaced), and after a
        failed start so do the folders the lock made, when they hold nothing else."""
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.run.lock.unlink()
        os.close(self.fd)
        self.fd = None
        if failed:
            self._remove_made()

    def _remove_made(self) -> None:
        for d in self.made:  # deepest first; a folder that holds anything stays
            with contextlib.suppress(OSError):
                d.rmdir()
        self.made = []


def _make_dirs(root: Path) -> list[Path]:
    """Make ``root`` and its missing parents; the ones made, deepest first. One-line ConfigError when it cannot."""
    missing = []
    d = root
    while not d.exists() and d != d.parent:
        missing.append(d)
        d = d.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"run.out_dir {root} is a file, not a folder") from None
    except OSError as e:
        raise ConfigError(f"run.out_dir {root}: cannot create the run folder: {e.strerror or e}") from None
    return missing


def _open(root: Path, path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        why = "is read-only" if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else "cannot be written"
        raise ConfigError(f"run.out_dir {root} {why}: {e.strerror or e} (a run writes its config, metrics and "
                          "checkpoints there; choose a writable run.out_dir)") from None


def _holder(path: Path) -> str:
    """`` (pid P on host H, since T)`` from the lock file, or "" when it cannot be read (the holder is writing it)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f" (pid {int(info['pid'])} on host {info['host']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""
