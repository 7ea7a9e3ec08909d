"""Tables of the ShapesWorld hacking study (docs/shapesworld-study.md) from the runs of research/study.sh.

    .venv/bin/python research/study_tables.py [runs/study] [--md PATH] [--plots DIR]
    .venv/bin/python research/study_tables.py [runs/study] --part2 [--md PATH]   # part 2: the gold reward, nft

Part 2 (``--part2``) reads ``OUT/part2_*/runs/<arm>_s<seed>`` (the default recipe, DiffusionNFT on the strict gold
reward) and prints, per arm and paired against DanceGRPO's estimator at the same seed: the held-out and in-domain
strict accuracy (final, change), iterations to base + 5 and + 10 held-out points, the area under the held-out curve,
exact count, debris, per-tag accuracy, and a verdict per claim; the same under a hackable proxy (``part2_hack*``,
``part2_pref``: hacking gap, saturation, the monitor's early stop), per model size (``part2_scale_*``, with
whether training holds its gains: debris and the training reward's fall from its best; ``L``'s step-size and shape
probes, PART2_SCALE_STEP; ``part2_hack_scale_*``), under ``awm`` (``part2_awm``), and against DanceGRPO's estimator
at SLAS's step size
(``MATCHED``: ``part2_matched``, ``part2_hack_matched``, ``part2_pref_matched``). Part 1 (the default) is the PPO-on-SDE study:

Reads every ``OUT/<part>/runs/<arm>_s<seed>/metrics.jsonl`` (parts: main, gamma, recenter, normalize,
batch_std_of; whichever exist) and prints markdown:

1. per arm, mean ± 95% Student-t half-width over seeds of the quantities the paper's claims are about;
2. paired differences against DanceGRPO (``grpo``) at the same seed (the iteration-0 evaluation is identical
   for every arm of one seed, so pairing removes the evaluation's sampling noise from the base level);
3. how reliably DanceGRPO hacks: per seed, the proxy's rise and the out-of-domain gold's fall from its best;
4. the held-out evaluation's strict accuracy per GenEval tag at the end (compositional fidelity).

Only finished runs (all ``train.iterations``) count; unfinished ones are listed. ``--plots DIR`` writes
``study_curves.png`` (proxy, out-of-domain gold score and saturation vs iteration of the main arms: mean,
95% t band), ``study_gamma.png`` (the same for the gamma sweep) and ``study_grid_iter_*.png`` (the main
comparison's sample grids at its first and last evaluation, from ``slas compare``).

The tables, verdicts and figures live in the package research/study/ (one module per concept); this is its command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "src"), str(HERE)]  # this checkout's slas, and research/study/ when loaded by path

from study.part1 import has_scale, part1  # noqa: E402
from study.part2 import part2  # noqa: E402
from study.plots import part1_plots, part2_plots  # noqa: E402
from study.runs import load_runs, part2_runs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default="runs/study")
    ap.add_argument("--md", help="also write the markdown here")
    ap.add_argument("--plots", help="directory for the figures (study_*.png; with --part2 study2_*.png)")
    ap.add_argument("--part2", action="store_true", help="part 2: the default recipe on the gold reward")
    ap.add_argument("--patience", type=int, default=3,
                    help="part 2: replay the monitor's early stop with this monitor.patience (the runs used 3)")
    args = ap.parse_args()
    root = Path(args.root)
    if args.patience < 1:
        sys.exit(f"--patience {args.patience}: must be >= 1 (evaluations in a row)")
    if not root.is_dir():
        sys.exit(f"{root} does not exist: run `bash research/study.sh {root}` first")
    if args.part2:
        runs = part2_runs(root)
        text = "\n".join(part2(root, runs, args.patience)) + "\n"
        print(text)
        if args.md:
            Path(args.md).write_text(text)
        if args.plots:
            part2_plots(root, runs, Path(args.plots))
        return
    arms = load_runs(root)
    if not arms and not has_scale(root):
        sys.exit(f"no finished runs under {root}")
    text = "\n".join(part1(root, arms)) + "\n"
    print(text)
    if args.md:
        Path(args.md).write_text(text)
    if args.plots and arms:
        part1_plots(root, arms, Path(args.plots))


if __name__ == "__main__":
    main()
