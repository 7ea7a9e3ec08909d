"""Time to target: iterations and wall time until the held-out strict gold reaches base + 5 and base + 10 points,
for each policy objective x advantage estimator, at several seeds, with each arm's ratio to DanceGRPO
(PPO on SDE log-probs with the ``grpo`` estimator).

    .venv/bin/python benchmarks/time_to_target.py [--out runs/time_to_target] [--seeds 3] [--jobs 2] [--threads 1]
        [--objectives ppo_sde,nft,awm] [--methods grpo,slas] [overrides ...]
    .venv/bin/python benchmarks/time_to_target.py --table-only [--out ...]   # tables from finished runs
    .venv/bin/python benchmarks/time_to_target.py --table-only --objectives awm --methods A,B --paired A,B

Each objective's runs are one ``slas compare`` of its shipped config (``OBJECTIVE_CONFIGS``) over the methods and
seeds, into ``OUT/<objective>/`` (resumable: finished runs are skipped). A target is reached at the first
evaluation whose ``eval/gold_accuracy`` is >= the run's iteration-0 value + the rise; the resolution is the
config's ``eval.every``. Wall time is the run's logged rollout + reward + train + eval seconds up to that
evaluation (so it does not count the time the run waited for the other job on a shared machine). Only finished runs
count. An arm reports the mean over the seeds that reached the target, and how many did; "not reached in N
iterations" when none did.
Writes ``OUT/time_to_target.json`` and ``OUT/time_to_target.md`` (the table in docs/performance.md).
``--paired A,B`` adds, per objective, A − B paired by seed (over the seeds both arms finished) with a 95% Student-t
interval: final held-out points and iterations to each target (a seed that missed a target in either arm is left
out of that column, and the column says how many seeds it has). A and B are method or ``slas compare --sweep`` arm
names (the runs' folder names without ``_s<seed>``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from slas.apps.compare import compare
from slas.apps.compare.planning import RUNS
from slas.config import load_config
from slas.evals.stats import ci_text, t_interval
from slas.recipe.metrics import read_metrics, series
from slas.recipe.run_dir import RunDir

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVE_CONFIGS = {  # the shipped recipe of each objective; compare varies only the estimator and the seed
    "ppo_sde": ROOT / "configs" / "toy_dancegrpo.yaml",
    "nft": ROOT / "configs" / "toy_slas.yaml",
    "awm": ROOT / "configs" / "toy_awm_slas.yaml",
}
RISES = (0.05, 0.10)
BASELINE = ("ppo_sde", "grpo")  # DanceGRPO
HELDOUT = "eval/gold_accuracy"
TIME_KEYS = ("time/rollout_s", "time/reward_s", "time/train_s", "time/eval_s")


def reach(rows: list[dict], rise: float) -> tuple[float, float]:
    """(iteration, wall seconds) at which the held-out gold first reaches iteration 0's + ``rise``; NaN if never."""
    pts = series(rows, HELDOUT)
    if not pts or pts[0][0] != 0:
        return math.nan, math.nan
    target = pts[0][1] + rise
    it = next((i for i, v in pts if v >= target - 1e-12), None)
    if it is None:
        return math.nan, math.nan
    return float(it), sum(r.get(k, 0.0) for r in rows if r["iteration"] <= it for k in TIME_KEYS)


def collect(out: Path, objectives: list[str], methods: list[str]) -> list[dict]:
    """One record per (objective, method): per-seed iterations / seconds to each target."""
    arms = []
    for obj in objectives:
        for m in methods:
            runs = sorted((out / obj / RUNS).glob(f"{m}_s*"))
            per_seed = []
            for run in runs:
                rows = read_metrics(run)
                rc = load_config(RunDir(run).config)
                iterations = rc.train.iterations
                if not rows or (rows[-1]["iteration"] < iterations and not RunDir(run).early_stop.is_file()):
                    continue  # unfinished: only finished runs are counted
                rec = {"run": str(run), "seed": int(run.name.rsplit("_s", 1)[1]), "iterations": rows[-1]["iteration"],
                       "planned": iterations, "base": rows[0].get(HELDOUT, math.nan),
                       "final": rows[-1].get(HELDOUT, math.nan),
                       "secs_total": sum(r.get(k, 0.0) for r in rows for k in TIME_KEYS),
                       "samples_per_iter": rc.train.prompts_per_iter * rc.train.group_size}
                for rise in RISES:
                    it, sec = reach(rows, rise)
                    rec[f"iters_{round(rise * 100)}"], rec[f"secs_{round(rise * 100)}"] = it, sec
                per_seed.append(rec)
            arms.append({"objective": obj, "method": m, "seeds": per_seed})
    return arms


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if math.isfinite(x)]
    return float(np.mean(xs)) if xs else math.nan


def table(arms: list[dict]) -> str:
    base = next((a for a in arms if (a["objective"], a["method"]) == BASELINE), None)
    lines = ["| objective | estimator | seeds | base held-out | final held-out | to +5 pts: iterations (reached) | "
             "wall min | x DanceGRPO | to +10 pts: iterations (reached) | wall min | x DanceGRPO |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in arms:
        s = a["seeds"]
        if not s:
            continue
        cells = [a["objective"], a["method"], str(len(s)), f"{_mean([x['base'] for x in s]):.1%}",
                 f"{_mean([x['final'] for x in s]):.1%}"]
        for rise in RISES:
            key = round(rise * 100)
            its = [x[f"iters_{key}"] for x in s]
            secs = [x[f"secs_{key}"] for x in s]
            n = sum(math.isfinite(v) for v in its)
            if n == 0:
                cells += [f"not reached in {max(x['iterations'] for x in s)} iterations", "-", "-"]
                continue
            ratio = "-"
            if base is not None and a is not base:
                b_secs = [x[f"secs_{key}"] for x in base["seeds"]]
                if any(math.isfinite(v) for v in b_secs):
                    ratio = f"{_mean(secs) / _mean(b_secs):.2f}"
                else:  # DanceGRPO never got there: the arm took this fraction of DanceGRPO's whole (failed) run
                    ratio = f"< {_mean(secs) / _mean([x['secs_total'] for x in base['seeds']]):.2f}"
            k_samples = _mean(its) * s[0]["samples_per_iter"] / 1000
            cells += [f"{_mean(its):.0f} ({n} of {len(s)}; {k_samples:.1f}k samples)", f"{_mean(secs) / 60:.1f}", ratio]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(arms: list[dict], arm_a: str, arm_b: str) -> str:
    """Per objective, ``arm_a`` − ``arm_b`` paired by seed: final held-out (points) and iterations to each target."""
    lines = [f"| {arm_a} − {arm_b} | seeds | final held-out (pts) | "
             + " | ".join(f"iterations to +{round(r * 100)} pts (seeds)" for r in RISES) + " |",
             "|---" * (3 + len(RISES)) + "|"]
    by_key = {(a["objective"], a["method"]): {x["seed"]: x for x in a["seeds"]} for a in arms}
    for obj in dict.fromkeys(a["objective"] for a in arms):
        sa, sb = by_key.get((obj, arm_a), {}), by_key.get((obj, arm_b), {})
        seeds = sorted(set(sa) & set(sb))
        if not seeds:
            continue
        final = t_interval([100.0 * (sa[s]["final"] - sb[s]["final"]) for s in seeds])
        cells = [obj, ",".join(map(str, seeds)), ci_text(final, digits=1, n=False)]
        for rise in RISES:
            key = f"iters_{round(rise * 100)}"
            ci = t_interval([sa[s][key] - sb[s][key] for s in seeds])
            cells.append(f"{ci_text(ci, digits=0, n=False)} ({ci['n']})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/time_to_target")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--objectives", default="ppo_sde,nft,awm")
    ap.add_argument("--methods", default="grpo,slas")
    ap.add_argument("--table-only", action="store_true", help="only read finished runs and write the tables")
    ap.add_argument("--paired", action="append", default=[], metavar="A,B",
                    help="also print A - B paired by seed (method or sweep arm names); repeatable")
    ap.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. train.iterations=60")
    args = ap.parse_args(argv)
    out = Path(args.out)
    objectives = args.objectives.split(",")
    methods = args.methods.split(",")
    pairs = [p.split(",") for p in args.paired]
    bad = next((p for p in pairs if len(p) != 2 or not all(x in methods for x in p)), None)
    if bad is not None:
        sys.exit(f"error: --paired takes two of --methods ({', '.join(methods)}) as A,B, got {','.join(bad)!r}")
    unknown = [o for o in objectives if o not in OBJECTIVE_CONFIGS]
    if unknown:
        sys.exit(f"error: unknown objective {unknown[0]!r}; known: {', '.join(OBJECTIVE_CONFIGS)}")
    if not args.table_only:
        for obj in objectives:
            compare(str(OBJECTIVE_CONFIGS[obj]), methods, list(range(args.seeds)), out / obj, overrides=args.overrides,
                    jobs=args.jobs, threads=args.threads, command=" ".join(sys.argv))
    arms = collect(out, objectives, methods)
    (out / "time_to_target.json").write_text(json.dumps(arms, indent=2) + "\n")
    md = "\n\n".join([table(arms)] + [paired_table(arms, a, b) for a, b in pairs])
    (out / "time_to_target.md").write_text(md + "\n")
    print(md)
    print(f"wrote {out / 'time_to_target.json'} and {out / 'time_to_target.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
