"""Wall time per prompt of `slas eval` on ShapesWorld: sampling, scoring and the whole run, per suite.

Runs ``slas.apps.eval.run_suite`` (what ``slas eval`` runs) on the shipped base model over the ``eval`` split, one
image per prompt, and prints a markdown table. ``sample`` is the ODE sampler, ``score`` the suite's judge (the
ShapesWorld verifier, or the reward), ``total`` the whole call including the model load, the image files (geneval
writes GenEval's folder layout) and results.jsonl.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_cost.py [--max-prompts 0] [--steps 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from slas.apps.eval import EvalOptions, run_suite
from slas.toyworld.evaluate import EVAL_STEPS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-prompts", type=int, default=0, help="0 = the whole eval split (300 prompts)")
    ap.add_argument("--steps", type=int, default=EVAL_STEPS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--suites", nargs="+", default=["geneval", "toyworld", "reward"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for suite in args.suites:
            opts = EvalOptions(suite=suite, out=Path(tmp) / suite, model="base", max_prompts=args.max_prompts,
                               steps=args.steps, save_images=suite == "geneval",
                               reward="toy_score" if suite == "reward" else None)
            t0 = time.perf_counter()
            s = run_suite(opts)
            total = time.perf_counter() - t0
            n = s["n_prompts_sampled"]
            rows.append((suite, n, s["sample_s"] / n, s["score_s"] / n, total / n, total))
    print(f"ShapesWorld base model, eval split, 1 image per prompt, {args.steps} Euler steps, "
          f"{torch.get_num_threads()} torch thread(s)")
    print("| suite | prompts | sample ms/prompt | score ms/prompt | total ms/prompt | total s |")
    print("|---|---|---|---|---|---|")
    for suite, n, sample, score, per, total in rows:
        print(f"| {suite} | {n} | {sample * 1e3:.1f} | {score * 1e3:.2f} | {per * 1e3:.1f} | {total:.1f} |")


if __name__ == "__main__":
    main()
