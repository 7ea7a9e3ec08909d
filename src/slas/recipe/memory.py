"""Peak memory of each phase of an iteration, per process (``run.log_memory``; the keys: docs/performance.md).

``PhaseMemory.phase(name)`` brackets one phase of the recipe: it resets the peak on entry and keeps, per name, the
largest peak seen since the last ``row()`` (a phase that repeats in an iteration, the micro-batches of several
optimizer steps, logs its worst). ``row(pg)`` returns them as metrics, rank 0's and the maximum over ranks.

- CUDA: ``torch.cuda.max_memory_allocated`` (what tensors held) and ``max_memory_reserved`` (what the caching
  allocator held) after ``torch.cuda.reset_peak_memory_stats``, and the host's peak resident set;
- CPU: the process's peak resident set, ``VmHWM`` of /proc/self/status, which writing "5" to /proc/self/clear_refs
  resets to the current resident set (Linux, proc(5)). It counts everything the process holds (Python, libraries),
  so a phase's peak includes the memory held before it started.

Off (the default), ``phase`` is a null context and ``row`` returns {}: nothing is measured or logged.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from slas.config import ConfigError

# the phases, in the order an iteration runs them (``load`` and ``resume``: once, in setup)
PHASES = ("load", "resume", "encode", "rollout", "decode", "reward", "train", "step", "eval", "save")
MIB = 2**20
_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def peak_rss() -> int:
    """This process's peak resident set since the last ``reset_peak_rss`` (or its start), in bytes."""
    for line in _STATUS.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # "VmHWM:   123456 kB"
    raise OSError(f"{_STATUS} has no VmHWM line")


def reset_peak_rss() -> None:
    """Reset the peak resident set to the current one (Linux: "5" to /proc/self/clear_refs)."""
    _CLEAR_REFS.write_text("5")


class PhaseMemory:
    """The per-phase peaks of this process: CUDA's allocator (when CUDA is available and ``device``, model.device,
    is not the CPU) and the resident set, or the resident set alone."""

    def __init__(self, enabled: bool, device: str = "cpu"):
        self.enabled = enabled
        self.cuda = enabled and torch.cuda.is_available() and not device.startswith("cpu")
        self.peaks: dict[str, list[float]] = {}  # phase -> [peak, reserved, host] in MiB (reserved, host: CUDA only)
        if enabled:
            try:
                reset_peak_rss()
                peak_rss()
            except OSError as e:
                raise ConfigError(f"run.log_memory needs Linux's /proc/self/status and /proc/self/clear_refs to "
                                  f"measure the peak resident set ({e.strerror or e}); turn it off") from None

    @contextlib.contextmanager
    def phase(self, name: str):
        """Measure the peak memory of the code within, as phase ``name`` (one of ``PHASES``)."""
        if not self.enabled:
            yield
            return
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        reset_peak_rss()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
                now = [torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved(), peak_rss()]
            else:
                now = [peak_rss(), 0, 0]
            seen = self.peaks.get(name, [0.0] * 3)
            self.peaks[name] = [max(a, b / MIB) for a, b in zip(seen, now, strict=True)]

    def row(self, pg) -> dict[str, float]:
        """The peaks measured since the last call, as metrics (every rank must call it: one all-reduce when there
        are several processes): ``memory/<phase>_mib`` rank 0's peak, ``memory/<phase>_max_mib`` the largest over
        ranks; on CUDA also ``_reserved_mib`` and ``_host_mib`` (rank 0's). {} when off."""
        if not self.enabled:
            return {}
        mine = torch.tensor([self.peaks.get(p, [-1.0])[0] for p in PHASES], dtype=torch.float64)  # [phases]
        top = pg.all_reduce(mine, "max") if pg.size > 1 else mine
        row = {}
        for i, p in enumerate(PHASES):
            if p not in self.peaks:
                continue
            peak, reserved, host = self.peaks[p]
            row[f"memory/{p}_mib"] = round(peak, 1)
            if pg.size > 1:
                row[f"memory/{p}_max_mib"] = round(float(top[i]), 1)
            if self.cuda:
                row |= {f"memory/{p}_reserved_mib": round(reserved, 1), f"memory/{p}_host_mib": round(host, 1)}
        self.peaks = {}
        return row


OFF = PhaseMemory(False)  # measures nothing: the default of ``Objective``
