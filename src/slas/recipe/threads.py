"""How many torch threads a process uses, and one ``warning:`` line when the cores are already busy at start.

Torch's CPU kernels (OpenMP / oneDNN) split an operation over their threads and wait for the slowest: a thread that
shares its core with another job holds all the others up. Beside one busy loop on 2 cores, a 2-thread ShapesWorld
run took 17.6x longer per iteration than a 1-thread one (benchmarks/oversubscription.py; docs/performance.md), and
nothing said why. So ``slas train`` (``run.threads``), ``slas eval`` and ``slas compare`` (``--threads``) take a thread
count, and at start compare it with the cores that are free: the usable cores (the affinity mask, ``taskset`` / cgroup
cpusets) minus their share of the load average of the last minute, which counts every runnable process of the
machine.
"""

from __future__ import annotations

import math
import os

# set by `slas compare` for the training processes it starts: it checked the load for all of them (its own runs
# would otherwise count as the busy cores that each one warns about)
LOAD_CHECKED = "SLAS_LOAD_CHECKED"


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_threads(processes: int = 1) -> int:
    """``run.threads`` 0 (auto): OMP_NUM_THREADS when it is set (torchrun sets 1), else the usable cores shared among
    the ``processes`` of this machine, never more than torch's own default (the physical cores: a hyperthread adds
    little to these kernels and would share a core's units)."""
    import torch

    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) >= 1:
        return int(env)
    return max(1, min(torch.get_num_threads(), usable_cores() // max(1, processes)))


def free_cores(usable: int, load1: float, cpus: int) -> float:
    """Cores of the ``usable`` ones left by the other processes: the load average spread over all ``cpus`` of the
    machine (a container's load average is the host's), taken from ours."""
    busy = min(load1, cpus) * usable / max(1, cpus)
    return max(0.0, usable - busy)


def busy_warning(threads: int, processes: int, usable: int, load1: float, cpus: int, how: str) -> str | None:
    """The one ``warning:`` line when ``processes`` x ``threads`` torch threads would share cores with other work or
    exceed the affinity mask; None when they fit. ``how``: the setting that lowers them (``run.threads=N``,
    ``--threads N``); ``N`` is replaced by the recommended count."""
    want = threads * processes
    free = free_cores(usable, load1, cpus)
    if want > usable:
        rec = max(1, usable // processes)
        return (f"warning: this run uses {want} torch threads{_per(processes, threads)} but may run on {usable} cores "
                f"(its affinity mask): threads that share a core wait on each other; use {how.replace('N', str(rec))}")
    rec = max(1, math.floor(free + 0.5) // processes)
    # half a core of slack (the load average is an average); one thread per process has no peers to wait for
    if want <= free + 0.5 or load1 < 0.5 or rec >= threads:
        return None
    return (f"warning: the cores are busy: load average {load1:.1f} over the last minute on {cpus} cores leaves about "
            f"{free:.1f} of the {usable} usable ones free, and this run uses {want} torch threads"
            f"{_per(processes, threads)}: threads that share a core wait on each other, often several times slower "
            f"(docs/performance.md); use {how.replace('N', str(rec))}, or stop the other jobs")


def _per(processes: int, threads: int) -> str:
    return f" ({processes} processes x {threads})" if processes > 1 else ""


def load_warning(threads: int, processes: int, how: str) -> str | None:
    """``busy_warning`` for this machine now (None where ``slas compare`` checked it for this process already)."""
    if os.environ.get(LOAD_CHECKED) == "1" or not hasattr(os, "getloadavg"):
        return None
    return busy_warning(threads, processes, usable_cores(), os.getloadavg()[0], os.cpu_count() or 1, how)


def configure(threads: int, how: str, processes: int = 1, warn=print) -> int:
    """Set this process's torch threads (``threads`` 0: ``default_threads``); ``warn`` the busy-cores line when the
    machine is busy (``processes``: how many such processes share this machine). Returns the count used."""
    import torch

    n = threads or default_threads(processes)
    torch.set_num_threads(n)
    if line := load_warning(n, processes, how):
        warn(line)
    return n
