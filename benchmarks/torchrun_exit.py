"""Do both processes of a finished 2-process run exit? Counts the runs in which a rank is still alive after training.

Runs ``slas train`` N times in 2 processes (DDP over gloo on the CPU, launched as torchrun would by the tests'
launcher, tests/_torchrun.py) on a random-init XS ShapesWorld model with tests/integration/test_distributed.py's
3-iteration config, and counts the runs in which some rank had not exited ``--grace`` seconds after the first one
did; a rank still running after ``--limit`` seconds prints its Python stacks (faulthandler) and exits 1. The slas
it imports is the checkout's, or the one on PYTHONPATH: ``PYTHONPATH=TREE/src`` measures another tree (e.g. before a
change).

    .venv/bin/python benchmarks/torchrun_exit.py [--runs 100] [--grace 30] [--limit 60] [--out runs/torchrun_exit]

About 5 s per run on 2 cores. Not part of CI.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "integration")]

from test_distributed import _argv  # noqa: E402

from _torchrun import PRELOAD, _worker, free_port  # noqa: E402
from slas.toyworld import model as toymodel  # noqa: E402


def one_run(ctx, ckpt: Path, out: Path, grace: float, limit: float) -> tuple[list[int | None], float, bool]:
    """One 2-process run: each rank's exit code, seconds, and whether a rank was still alive ``grace`` seconds after
    the other exited. A rank still running after ``limit`` seconds prints its stacks and exits 1 (faulthandler,
    armed by the launcher's worker)."""
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, _argv(ckpt, out), {}, limit)) for r in range(2)]
    t0 = time.time()
    for p in procs:
        p.start()
    ended: list[float] = []
    while len(ended) < len(procs) and time.time() - t0 < limit + 10:
        ended += [time.time()] * (sum(not p.is_alive() for p in procs) - len(ended))
        time.sleep(0.1)
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join()
    hung = len(ended) < len(procs) or ended[-1] - ended[0] > grace
    return [p.exitcode for p in procs], time.time() - t0, hung


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--grace", type=float, default=30.0, help="seconds a rank may take to exit after the first did")
    ap.add_argument("--limit", type=float, default=60.0, help="seconds after which a rank prints its stacks and exits 1")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "torchrun_exit")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    torch.manual_seed(0)
    ckpt = args.out / "xs"
    toymodel.save(toymodel.build("XS"), ckpt)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    import slas

    print(f"slas from {Path(slas.__file__).parent}; {args.runs} runs of 2 processes", flush=True)
    hangs, failed = 0, 0
    for i in range(args.runs):
        codes, secs, hung = one_run(ctx, ckpt, args.out / "run", args.grace, args.limit)
        hangs += hung
        failed += not hung and codes != [0, 0]
        if hung or codes != [0, 0] or (i + 1) % 10 == 0:
            print(f"run {i + 1}: exit codes {codes}, {secs:.1f} s{' (a rank did not exit)' if hung else ''}", flush=True)
        shutil.rmtree(args.out / "run", ignore_errors=True)
    print(f"{hangs} of {args.runs} runs left a rank alive {args.grace:g} s after the other exited; {failed} failed "
          "otherwise")


if __name__ == "__main__":
    main()
