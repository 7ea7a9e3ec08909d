"""Per-run table of ShapesWorld training runs: held-out and in-domain strict gold (base, final, best), exact count,
debris and wall time, plus the mean over the runs. The README's and docs' default-recipe tables come from it.

    .venv/bin/python benchmarks/run_table.py [--check] [--max-minutes M] RUN_DIR [RUN_DIR ...]

``--check`` also tests each run against what the default recipe must do: the last held-out strict gold at least
10 points above iteration 0's and within 5 points of the run's best; held-out exact count not below iteration 0's
minus 2 points; debris not above iteration 0's plus 5; out-of-domain strict (the monitor's) not below iteration
0's. ``--max-minutes M`` adds a bound on the logged wall time (rollout + reward + train + eval), which measures the
machine as much as the recipe: seed 0 logged 8.4 minutes alone on 2 idle cores, and 108 on 2 cores shared with
other jobs, with the same numbers (use ``--max-minutes 10`` on 2 idle cores). Exit status 1 when a run fails one.

A run with a ``fresh_heldout.json`` (``slas toyworld eval --checkpoint RUN --split test --images-per-tag 48 --seed S
--json RUN/fresh_heldout.json``: the final model's held-out strict gold on fresh noise) gets a column for it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from slas.config import load_config
from slas.recipe.metrics import read_metrics, series
from slas.recipe.run_dir import RunDir

TIME_KEYS = ("time/rollout_s", "time/reward_s", "time/train_s", "time/eval_s")
COLS = [("held-out", "eval/gold_accuracy"), ("in-domain", "eval/id/gold_accuracy")]


def row(run: Path) -> dict:
    rows = read_metrics(run)
    if not rows:
        raise SystemExit(f"error: {run} has no {RunDir(run).metrics.name} rows")
    out = {"run": str(run), "seed": load_config(RunDir(run).config).run.seed, "iterations": rows[-1]["iteration"],
           "minutes": sum(r.get(k, 0.0) for r in rows for k in TIME_KEYS) / 60, "fresh": np.nan, "fresh_seed": ""}
    try:
        fresh = RunDir(run).read_fresh_heldout()
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if fresh is not None:
        out["fresh"], out["fresh_seed"] = fresh
    for name, key in COLS + [("exact count", "eval/exact_count"), ("debris", "eval/debris")]:
        s = series(rows, key)
        out[name] = (s[0][1], s[-1][1], max(v for _, v in s)) if s else (np.nan,) * 3
    return out


def check(run: Path, max_minutes: float | None = None) -> list[tuple[str, bool, str]]:
    """(criterion, passed, the numbers) of one run (the module docstring's list)."""
    rows = read_metrics(run)
    out = []

    def first_last(key):
        s = series(rows, key)
        return (s[0][1], s[-1][1], max(v for _, v in s)) if s else (np.nan,) * 3

    b, f, best = first_last("eval/gold_accuracy")
    out.append(("held-out gain >= 10 points", f - b >= 0.10 - 1e-12, f"{100 * b:.1f} -> {100 * f:.1f}"))
    out.append(("last within 5 points of the best", best - f <= 0.05 + 1e-12, f"last {100 * f:.1f}, best {100 * best:.1f}"))
    b, f, _ = first_last("eval/exact_count")
    out.append(("exact count >= base - 2", f >= b - 0.02 - 1e-12, f"{100 * b:.1f} -> {100 * f:.1f}"))
    b, f, _ = first_last("eval/debris")
    out.append(("debris <= base + 5", f <= b + 0.05 + 1e-12, f"{100 * b:.1f} -> {100 * f:.1f}"))
    b, f, _ = first_last("monitor/gold_acc_ood")
    out.append(("out-of-domain strict >= base", f >= b - 1e-12, f"{100 * b:.1f} -> {100 * f:.1f}"))
    if max_minutes is not None:
        minutes = sum(r.get(k, 0.0) for r in rows for k in TIME_KEYS) / 60
        out.append((f"<= {max_minutes:g} minutes logged", minutes <= max_minutes, f"{minutes:.1f} min"))
    return out


def main(argv: list[str]) -> int:
    checking = "--check" in argv
    argv = [a for a in argv if a != "--check"]
    max_minutes = None
    if "--max-minutes" in argv:
        i = argv.index("--max-minutes")
        try:
            max_minutes = float(argv[i + 1])
        except (IndexError, ValueError):
            print("error: --max-minutes needs a number of minutes, e.g. --max-minutes 10", file=sys.stderr)
            return 2
        argv = argv[:i] + argv[i + 2:]
    if not argv or {"-h", "--help"} & set(argv):
        print(__doc__)
        return 0 if argv else 2
    rs = [row(Path(a)) for a in argv]
    fresh = any(not np.isnan(r["fresh"]) for r in rs)
    print("| run | seed | held-out base | final | best | in-domain base | final | best | exact count base -> final | "
          "debris base -> final | iterations | minutes (logged) |" + (" held-out final, fresh noise (eval seed) |"
                                                                    if fresh else ""))
    print("|---" * (12 + fresh) + "|")

    def pct(x):
        return f"{100 * x:.1f}" if not np.isnan(x) else ""

    def fresh_cell(r):  # an empty cell for a run without fresh_heldout.json
        return f" {pct(r['fresh'])} ({r['fresh_seed']}) |" if not np.isnan(r["fresh"]) else " |"

    for r in rs:
        h, i, e, d = r["held-out"], r["in-domain"], r["exact count"], r["debris"]
        print(f"| {Path(r['run']).name} | {r['seed']} | {pct(h[0])} | {pct(h[1])} | {pct(h[2])} | "
              f"{pct(i[0])} | {pct(i[1])} | {pct(i[2])} | "
              f"{pct(e[0])} -> {pct(e[1])} | {pct(d[0])} -> {pct(d[1])} | {r['iterations']} | {r['minutes']:.1f} |"
              + (fresh_cell(r) if fresh else ""))
    if len(rs) > 1:
        m = {k: np.mean([r[k] for r in rs], axis=0) for k in ("held-out", "in-domain", "exact count", "debris")}
        h, i, e, d = m["held-out"], m["in-domain"], m["exact count"], m["debris"]
        fresh_mean = np.mean([r["fresh"] for r in rs])  # NaN (an empty cell) unless every run has one
        print(f"| mean | | {pct(h[0])} | {pct(h[1])} | {pct(h[2])} | {pct(i[0])} | {pct(i[1])} | {pct(i[2])} | "
              f"{pct(e[0])} -> {pct(e[1])} | {pct(d[0])} -> {pct(d[1])} | | {np.mean([r['minutes'] for r in rs]):.1f} |"
              + (f" {pct(fresh_mean)} |" if fresh else ""))
    if not checking:
        return 0
    failed = 0
    for a in argv:
        print(f"\n{a}:")
        for name, ok, nums in check(Path(a), max_minutes):
            failed += not ok
            print(f"  {'pass' if ok else 'FAIL'}  {name}: {nums}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
