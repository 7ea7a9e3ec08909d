"""SLAS vs DanceGRPO vs Dr.GRPO on the default ShapesWorld recipe, several seeds.

Runs `slas train` once per (config, seed), sequentially (2 cores: one torch job
at a time), then prints a table of held-out strict gold accuracy (base, final,
best), exact count and GenEval-rule accuracy, as mean +- 95% t-interval over
seeds. Existing finished runs are reused, so an interrupted comparison resumes.

    .venv/bin/python benchmarks/compare_estimators.py --seeds 0 1 2 [--out runs/compare] [--md docs/compare_toy.md] \
        [overrides...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from slas import checkpoint
from slas.config import load_config
from slas.train import train

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["toy_slas", "toy_dancegrpo", "toy_drgrpo"]
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def ci(xs: list[float]) -> str:
    xs = np.asarray(xs, dtype=float)
    if len(xs) < 2:
        return f"{100 * xs.mean():.1f}"
    half = T95.get(len(xs) - 1, 1.96) * xs.std(ddof=1) / np.sqrt(len(xs))
    return f"{100 * xs.mean():.1f} +- {100 * half:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--configs", nargs="+", default=CONFIGS)
    ap.add_argument("--out", default="runs/compare")
    ap.add_argument("--md", default=None, help="also write the tables as markdown to this path")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    results: dict[str, list[dict]] = {}
    for name in args.configs:
        for seed in args.seeds:
            run = Path(args.out) / f"{name}_s{seed}"
            cfg = load_config(ROOT / "configs" / f"{name}.yaml", [*args.overrides, f"run.seed={seed}",
                                                                   f"run.out_dir={run}"])
            done = run / "metrics.jsonl"
            rows = [json.loads(x) for x in done.read_text().splitlines()] if done.exists() else []
            if not rows or rows[-1]["iteration"] != cfg.train.iterations:
                train(cfg, resume=checkpoint.latest(run) is not None, progress=False)
                rows = [json.loads(x) for x in done.read_text().splitlines()]
            ev = [r for r in rows if "eval/gold_accuracy" in r]
            results.setdefault(name, []).append({
                "base": ev[0]["eval/gold_accuracy"], "final": ev[-1]["eval/gold_accuracy"],
                "best": max(r["eval/gold_accuracy"] for r in ev),
                "count_base": ev[0]["eval/exact_count"], "count_final": ev[-1]["eval/exact_count"],
                "geneval_final": ev[-1]["eval/geneval_accuracy"],
                "curve": {r["iteration"]: r["eval/gold_accuracy"] for r in ev},
                "minutes": sum(r.get("time/rollout_s", 0) + r.get("time/reward_s", 0) + r.get("time/train_s", 0)
                               + r.get("time/eval_s", 0) for r in rows) / 60,
            })
    keys = ["base", "final", "best", "count_base", "count_final", "geneval_final"]
    lines = [f"held-out `test` split, strict gold unless named, seeds {args.seeds}, mean +- 95% t-interval (percent)",
             "", "| config | " + " | ".join(keys) + " | min/run |", "|---" * (len(keys) + 2) + "|"]
    for name, rs in results.items():
        lines.append(f"| {name} | " + " | ".join(ci([r[k] for r in rs]) for k in keys)
                     + f" | {np.mean([r['minutes'] for r in rs]):.1f} |")
    its = sorted(set.intersection(*(set(r["curve"]) for rs in results.values() for r in rs)))
    lines += ["", "strict gold at each evaluation (mean over seeds, percent)", "",
              "| config | " + " | ".join(f"it {i}" for i in its) + " |", "|---" * (len(its) + 1) + "|"]
    for name, rs in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * np.mean([r['curve'][i] for r in rs]):.1f}" for i in its)
                     + " |")
    print("\n".join(lines))
    if args.md:
        Path(args.md).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
