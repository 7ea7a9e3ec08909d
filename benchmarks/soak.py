"""Soak test: does the training process's memory stay flat over a long run?

Runs ``slas train`` (the default config, configs/toy_slas.yaml) for 300 iterations at a reduced batch
(4 prompts x 4 samples, evaluations only at iterations 0 and 300, small ones) as a subprocess, samples the
resident set size (VmRSS of the process and any children, from /proc) every 10 iterations as its
``metrics.jsonl`` advances, and prints a table, the growth from iteration 50 to the last one, and PASS / FAIL
against 5%. Writes ``OUT/soak.json`` and ``OUT/soak.png`` (RSS against iteration); the run itself goes to
``OUT/run`` (replaced on each start). Linux only (reads /proc). Not part of CI: it takes several minutes.

    .venv/bin/python benchmarks/soak.py [--iterations 300] [--out runs/soak] [--threads 1] [overrides...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from slas.recipe.metrics import last_iteration

# the reduced batch and the rare, small evaluations; extra overrides on the command line come after these
SOAK_OVERRIDES = ["train.prompts_per_iter=4", "train.group_size=4", "eval.every=0", "eval.images_per_tag=8",
                  "eval.in_domain_per_tag=4", "monitor.prompts=6", "monitor.group=2"]
EVERY = 10  # iterations between RSS samples
FROM = 50  # growth is measured from this iteration (after warm-up: allocator pools, caches, first checkpoints)
LIMIT_PCT = 5.0


def _status_kib(pid: int, field: str) -> int:
    """``field`` (VmRSS, VmHWM) of /proc/<pid>/status in KiB; 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (data loaders, compile workers), from the ppid of each /proc entry."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_mib(pid: int) -> tuple[float, float, int]:
    """(VmRSS of pid and its descendants, VmHWM of pid alone, number of processes) in MiB."""
    procs = _descendants(pid)
    return sum(_status_kib(p, "VmRSS") for p in procs) / 1024, _status_kib(pid, "VmHWM") / 1024, len(procs)


def plot(samples: list[dict], path: Path, growth: float | None, iterations: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [s["iteration"] for s in samples]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(its, [s["rss_mib"] for s in samples], marker="o", ms=3, label="VmRSS (process + children)")
    base = next((s["rss_mib"] for s in samples if s["iteration"] == FROM), None)
    if base is not None:
        ax.axhline(base * (1 + LIMIT_PCT / 100), color="tab:red", ls="--", lw=1,
                   label=f"+{LIMIT_PCT:.0f}% of iteration {FROM}")
        ax.axvline(FROM, color="grey", lw=0.8, alpha=0.5)
    ax.set_xlabel("iteration")
    ax.set_ylabel("RSS (MiB)")
    title = f"slas train soak, {iterations} iterations"
    if growth is not None:
        title += f": {growth:+.2f}% from iteration {FROM}"
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, max(s["rss_mib"] for s in samples) * 1.15)  # from 0: growth is read against the whole size
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--out", default="runs/soak", help="output folder (soak.json, soak.png, run/)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the training process (OMP_NUM_THREADS)")
    ap.add_argument("overrides", nargs="*", help="extra dotted overrides for slas train")
    args = ap.parse_args()
    if args.iterations < FROM:
        ap.error(f"--iterations must be >= {FROM} (growth is measured from iteration {FROM})")
    out = Path(args.out)
    run = out / "run"
    if run.exists():
        shutil.rmtree(run)
    out.mkdir(parents=True, exist_ok=True)
    overrides = [f"train.iterations={args.iterations}", *SOAK_OVERRIDES, f"run.out_dir={run}", *args.overrides]
    cmd = [sys.executable, "-m", "slas", "train", "--no-progress", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    shown = " ".join(["python", *cmd[1:]])
    print(f"$ OMP_NUM_THREADS={args.threads} {shown}", flush=True)
    log = (out / "train.log").open("w")
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    samples: list[dict] = []
    last, next_at = -1, EVERY
    print(f"{'iteration':>9}  {'RSS MiB':>8}  {'HWM MiB':>8}  {'procs':>5}  {'wall s':>7}", flush=True)
    try:
        while True:
            done = proc.poll() is not None
            it = last_iteration(run)  # the last complete row (the end of the log only: cheap to poll)
            last = last if it is None else max(last, it)
            while last >= next_at and not done:  # sample once per crossed multiple of EVERY (late if the poll lagged)
                rss, hwm, n = rss_mib(proc.pid)
                samples.append({"iteration": next_at, "seen_iteration": last, "rss_mib": round(rss, 2),
                                "hwm_mib": round(hwm, 2), "processes": n, "wall_s": round(time.time() - t0, 1)})
                s = samples[-1]
                print(f"{next_at:>9}  {rss:>8.1f}  {hwm:>8.1f}  {n:>5}  {s['wall_s']:>7.1f}", flush=True)
                next_at += EVERY
            if done:
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    wall = time.time() - t0
    log.close()
    if proc.returncode != 0:
        tail = (out / "train.log").read_text(errors="replace").splitlines()[-15:]
        print(f"slas train exited with status {proc.returncode}; the end of {out / 'train.log'}:", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)
    by_it = {s["iteration"]: s["rss_mib"] for s in samples}
    end_it = max(by_it) if by_it else None
    growth = None
    if FROM in by_it and end_it is not None and end_it > FROM:
        growth = 100 * (by_it[end_it] - by_it[FROM]) / by_it[FROM]
    ok = proc.returncode == 0 and growth is not None and growth < LIMIT_PCT and end_it == args.iterations
    report = {
        "command": shown, "threads": args.threads, "iterations": args.iterations, "every": EVERY,
        "returncode": proc.returncode, "wall_s": round(wall, 1), "samples": samples,
        "rss_from_mib": by_it.get(FROM), "rss_end_mib": by_it.get(end_it) if end_it is not None else None,
        "from_iteration": FROM, "end_iteration": end_it,
        "growth_pct": None if growth is None else round(growth, 3), "limit_pct": LIMIT_PCT, "pass": ok,
    }
    (out / "soak.json").write_text(json.dumps(report, indent=1) + "\n")
    if samples:
        plot(samples, out / "soak.png", growth, args.iterations)
    if growth is None:
        print(f"no growth: RSS was not sampled at iteration {FROM} and after it", flush=True)
    else:
        print(f"RSS {by_it[FROM]:.1f} MiB at iteration {FROM} -> {by_it[end_it]:.1f} MiB at iteration {end_it}: "
              f"{growth:+.2f}% (limit < {LIMIT_PCT:.0f}%); wall {wall:.0f} s")
    print(f"{'PASS' if ok else 'FAIL'}; wrote {out / 'soak.json'} and {out / 'soak.png'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
