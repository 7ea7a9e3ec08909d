"""Oversubscription: how much slower a training run gets when its torch threads share the cores with another job,
and how much of that the thread count the busy-cores warning recommends wins back.

Starts ``--competitors`` busy-loop processes (default: all usable cores but one), waits ``--warmup`` seconds so that
the load average of the last minute sees them, then runs the same short ``slas train`` twice beside them: with the
default thread count (``run.threads`` 0: the usable cores) and with the count the warning recommends (the cores the
competitors leave free). Prints each run's seconds per iteration (rollout + reward + train, from its metrics, without
evaluation), the warning line the default run printed, and the ratio. The runs go to ``OUT/default`` and
``OUT/recommended`` (replaced on each start). A few minutes on 2 cores.

    .venv/bin/python benchmarks/oversubscription.py [--competitors K] [--iterations 2] [--out runs/oversub] [overrides...]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from slas.recipe.metrics import read_metrics
from slas.recipe.threads import usable_cores

# a short run of the default config (toy_M) at a reduced batch (2 prompts x 4 samples), evaluated only at the first
# and last iteration on one prompt (an oversubscribed evaluation of 4 images at 20 steps took 4 minutes on 2 cores)
OVERRIDES = ["train.prompts_per_iter=2", "train.group_size=4", "eval.every=0", "eval.images_per_tag=0",
             "eval.max_prompts=1", "eval.steps=2", "eval.in_domain_per_tag=0", "eval.grid_prompts=[a photo of a red circle]",
             "monitor.enabled=false", "run.checkpoint_every=1000"]
PHASES = ("time/rollout_s", "time/reward_s", "time/train_s")


def _train(out: Path, threads: int, iterations: int, extra: list[str]) -> tuple[float, int, list[str]]:
    """Seconds per iteration of a run with ``threads`` torch threads (0: the default), the count it used (from its
    header line) and its warning lines."""
    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "SLAS_LOAD_CHECKED")}
    cmd = [sys.executable, "-m", "slas", "train", "--no-progress", f"run.out_dir={out}", f"run.threads={threads}",
           f"train.iterations={iterations}", *OVERRIDES, *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    rows = [r for r in read_metrics(out) if r["iteration"] >= 1]
    per_iter = sum(r[k] for r in rows for k in PHASES) / len(rows)
    used = next(int(m.group(1)) for m in map(re.compile(r"\| (\d+) torch threads \|").search, done.stdout.splitlines())
                if m)
    return per_iter, used, [ln for ln in done.stdout.splitlines() if ln.startswith("warning:")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cores = usable_cores()
    ap.add_argument("--competitors", type=int, default=max(1, cores - 1), help="busy-loop processes (default: the "
                    "usable cores but one)")
    ap.add_argument("--iterations", type=int, default=2, help="training iterations per run")
    ap.add_argument("--warmup", type=float, default=45.0, help="seconds the competitors run before the first run, so "
                    "that the load average of the last minute sees them")
    ap.add_argument("--out", default="runs/oversub")
    ap.add_argument("overrides", nargs="*", help="more overrides of both runs")
    args = ap.parse_args()

    recommended = max(1, cores - args.competitors)
    print(f"{cores} usable cores, {args.competitors} busy-loop competitor(s); load average before: "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    competitors = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.competitors)]
    try:
        time.sleep(args.warmup)
        print(f"load average after {args.warmup:.0f} s of competitors: {os.getloadavg()[0]:.1f}", flush=True)
        slow, default, warnings = _train(Path(args.out) / "default", 0, args.iterations, args.overrides)
        print(f"default threads ({default}): {slow:.2f} s/iteration", flush=True)
        for line in warnings:
            print(f"  it said: {line}")
        fast, _, _ = _train(Path(args.out) / "recommended", recommended, args.iterations, args.overrides)
        print(f"recommended threads ({recommended}): {fast:.2f} s/iteration", flush=True)
    finally:
        for p in competitors:
            p.send_signal(signal.SIGKILL)
            p.wait()
    print(f"oversubscription: {args.competitors} competitor(s) on {cores} cores, default {default} threads "
          f"{slow:.2f} s/it, recommended {recommended} {fast:.2f} s/it, slowdown of the default x{slow / fast:.2f}")


if __name__ == "__main__":
    main()
