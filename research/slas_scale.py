"""SLAS at scale (issue 34): per-seed results of `slas compare` runs as one CSV, the push diagnostics beside the
training reward, and paired intervals between two arms.

    .venv/bin/python research/slas_scale.py csv OUT [OUT ...] [--csv research/results/slas_scale.csv]
    .venv/bin/python research/slas_scale.py plot OUT [OUT ...] [--out research/results/slas_scale_plots]
    .venv/bin/python research/slas_scale.py paired ARM_A ARM_B [--model L] [--column final_heldout] [--csv PATH]
    .venv/bin/python research/slas_scale.py windows OUT [OUT ...] [--every 10] [--unfinished]
    .venv/bin/python research/slas_scale.py synthetic [--groups 4096] [--seed 0]

``OUT`` is an output folder of ``slas compare`` (its runs are ``OUT/runs/<arm>_s<seed>/``; only finished runs count,
unfinished ones are listed on stderr; an (arm, model, seed) met twice keeps the first folder's run).

``csv`` writes one row per run: ``arm,model,seed,base_heldout,final_heldout,best_heldout,final_indomain,fell_back,
late_push`` and ``fresh_heldout`` when some run has it. Held-out is the strict gold accuracy of training's held-out
evaluation (``eval/gold_accuracy``) in percent: at iteration 0 (base), at the end (final) and its best; in-domain
is ``eval/id/gold_accuracy`` at the end. ``model`` is the ShapesWorld size of the run's checkpoint (else the
checkpoint's name). ``fell_back`` is the study's rule (research/study/stats.py ``reward_drop``): the training
reward's mean over the last 20 iterations sits more than 0.05 below its best 10-iteration mean. ``late_push`` is
the mean push over the second half of the run's iterations divided by its mean over the first half, the push being
``train/r_push_informative`` (nft: mean |r - 1/2| over the informative samples) when logged, else
``train/adv_abs_mean_informative`` (mean |A| over them); empty for runs logged before those diagnostics existed.
``fresh_heldout`` is ``overall_strict`` in percent of ``RUN/fresh_heldout.json``, the JSON that
``slas toyworld eval --checkpoint RUN --split test --images-per-tag 48 --seed S --json RUN/fresh_heldout.json``
writes (the held-out evaluation on fresh noise).

``plot`` writes, per model and seed, one figure with a column per arm (``grpo`` and ``slas`` first) and a row per
quantity, on one scale per row: the training reward (and its trailing 10-iteration mean), the informative fraction,
sigma_B (``train/centered_std``), mean |A| over the informative samples and, for nft, mean |r - 1/2| over them. A
dashed line marks where the training reward starts to fall back (``fall_back_start``: the first iteration after its
best 10-iteration mean from which the trailing 10-iteration mean stays more than 0.05 below it).

The net push is the signed mean of the advantages over the batch (``train/adv_mean``): 0 whenever every group's
advantages sum to 0 (``grpo``, ``grpo_global_std``, ``slas`` with ``recenter``). SLAS's power breaks that sum: a group
whose rewards are mostly high has a few large negative deviations and many small positive ones, and the power keeps
the large ones and shrinks the small ones, so the group pushes away from the policy's own samples more than it pulls.
For nft it is read as mean r - 1/2 (``train/r_mean``, logged before ``train/adv_mean`` existed).

``windows`` prints a markdown table per run of the per-window means (default 10 iterations) of the training reward,
the informative fraction, sigma_B, mean |A| and mean |r - 1/2| over the informative samples, and the net push, with
the fall-back start; ``--unfinished`` includes runs that have not reached their last iteration.

``synthetic`` prints, for batches of binary-reward groups of 8 whose per-prompt success rates are drawn from
Beta(2m, 2(1 - m)) for a batch mean m, the mean |A| over the informative samples and the net push over them, for
``grpo``, ``slas`` and ``slas`` with ``recenter`` (slas.algo.advantages at its defaults otherwise, no clip).

``paired`` prints the mean difference ARM_A - ARM_B of one column over the seeds both arms ran on one model, with
its 95% Student-t interval (slas.evals.stats.t_interval of the per-seed differences) and whether it is resolved.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "src"), str(HERE)]  # this checkout's slas, and research/study/

from study.stats import DROP, fall_back_start, reward_drop  # noqa: E402

from slas.config import load_config  # noqa: E402
from slas.evals.stats import t_interval  # noqa: E402
from slas.recipe.metrics import best_value, first_value, last_value, read_metrics, series  # noqa: E402
from slas.recipe.run_dir import RunDir  # noqa: E402
from slas.toyworld.model import resolve_checkpoint  # noqa: E402

COLUMNS = ["arm", "model", "seed", "base_heldout", "final_heldout", "best_heldout", "final_indomain", "fell_back",
           "late_push"]
FRESH = "fresh_heldout"
DEFAULT_CSV = HERE / "results" / "slas_scale.csv"
PUSH_KEYS = ("train/r_push_informative", "train/adv_abs_mean_informative")  # the first one a run logged
PANELS = [("train/reward_mean", "training reward"), ("train/informative_frac", "informative fraction"),
          ("train/centered_std", "sigma_B (centred rewards)"),
          ("train/adv_abs_mean_informative", "mean |A|, informative samples"),
          ("train/r_push_informative", "nft: mean |r - 1/2|, informative"),
          ("net_push", "net push: mean A (nft: mean r - 1/2)")]
NET_PUSH = "net_push"


def panel_series(rows: list[dict], key: str) -> list[tuple[int, float]]:
    """``series`` of a logged key, or of the net push (nft's mean r - 1/2 when logged, else ``train/adv_mean``)."""
    if key != NET_PUSH:
        return series(rows, key)
    r_mean = series(rows, "train/r_mean")
    return [(i, v - 0.5) for i, v in r_mean] if r_mean else series(rows, "train/adv_mean")


def model_name(cfg) -> str:
    """The ShapesWorld size of a run's checkpoint (its config.json's "size"), else the checkpoint as configured."""
    try:
        info = resolve_checkpoint(cfg.model.checkpoint) / "config.json"
        return json.loads(info.read_text())["size"]
    except (OSError, KeyError, ValueError, TypeError):
        return str(cfg.model.checkpoint or cfg.model.backbone)


def load(outs: list[Path], unfinished: bool = False) -> list[dict]:
    """The finished runs of ``slas compare`` folders (every run with some metrics if ``unfinished``):
    {"arm", "model", "seed", "rows", "dir"} each."""
    runs, seen = [], {}
    for out in outs:
        folder = Path(out) / "runs"
        if not folder.is_dir():
            raise ValueError(f"{out} is not an output folder of `slas compare` (no runs/ in it)")
        for run in sorted(folder.glob("*_s*")):
            m = re.fullmatch(r"(.+)_s(\d+)", run.name)
            paths = RunDir(run)
            if not m or not paths.config.is_file() or not paths.metrics.is_file():
                continue
            cfg = load_config(paths.config)
            rows = read_metrics(run)
            if not rows or (not unfinished and rows[-1]["iteration"] < cfg.train.iterations
                            and not paths.early_stop.is_file()):
                print(f"unfinished: {run} ({rows[-1]['iteration'] if rows else 0}/{cfg.train.iterations})",
                      file=sys.stderr)
                continue
            key = (m.group(1), model_name(cfg), int(m.group(2)))
            if key in seen:
                print(f"skipped: {run} (arm {key[0]}, model {key[1]}, seed {key[2]} comes from {seen[key]})",
                      file=sys.stderr)
                continue
            seen[key] = run
            runs.append({"arm": key[0], "model": key[1], "seed": key[2], "rows": rows, "dir": run})
    return runs


def late_push(rows: list[dict]) -> float:
    """Mean push over the second half of the run's iterations / its mean over the first half (NaN if not logged)."""
    for key in PUSH_KEYS:
        pts = series(rows, key)
        if pts:
            mid = pts[-1][0] / 2
            early = [v for i, v in pts if i <= mid]
            late = [v for i, v in pts if i > mid]
            if early and late and statistics.fmean(early) > 0:
                return statistics.fmean(late) / statistics.fmean(early)
            return math.nan
    return math.nan


def fresh_heldout(run: Path) -> float:
    """``overall_strict`` of RUN/fresh_heldout.json in percent (NaN when there is none)."""
    got = RunDir(run).read_fresh_heldout()
    return math.nan if got is None else 100 * got[0]


def row(run: dict) -> dict:
    """One CSV row of a run (numbers; NaN where a quantity was not logged)."""
    rows = run["rows"]
    return {"arm": run["arm"], "model": run["model"], "seed": run["seed"],
            "base_heldout": 100 * first_value(rows, "eval/gold_accuracy"),
            "final_heldout": 100 * last_value(rows, "eval/gold_accuracy"),
            "best_heldout": 100 * best_value(rows, "eval/gold_accuracy"),
            "final_indomain": 100 * last_value(rows, "eval/id/gold_accuracy"),
            "fell_back": reward_drop(rows) > DROP, "late_push": late_push(rows), FRESH: fresh_heldout(run["dir"])}


def _cell(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def write_csv(runs: list[dict], path: Path) -> list[dict]:
    """Write the runs' rows (sorted by model, arm, seed) to ``path``; returns them."""
    table = sorted((row(r) for r in runs), key=lambda x: (x["model"], x["arm"], x["seed"]))
    columns = COLUMNS + ([FRESH] if any(not math.isnan(x[FRESH]) for x in table) else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for x in table:
            w.writerow([_cell(x[c]) for c in columns])
    return table


def read_csv(path: Path) -> list[dict]:
    """The rows of a CSV that ``write_csv`` wrote: numbers as floats (NaN for empty cells), seed as int."""
    with Path(path).open(newline="") as f:
        out = []
        for r in csv.DictReader(f):
            x: dict = {"arm": r["arm"], "model": r["model"], "seed": int(r["seed"]), "fell_back": r["fell_back"] == "true"}
            for k, v in r.items():
                if k not in x:
                    x[k] = float(v) if v else math.nan
            out.append(x)
    return out


def paired(table: list[dict], arm_a: str, arm_b: str, model: str | None = None,
           column: str = "final_heldout") -> dict:
    """t interval of ``column``'s per-seed differences arm_a - arm_b over the seeds both ran (one model: ``model``,
    or the only one the two arms share). Returns t_interval's dict plus ``model`` and ``seeds``."""
    models = sorted({x["model"] for x in table if x["arm"] == arm_a} & {x["model"] for x in table if x["arm"] == arm_b})
    if model is None:
        if len(models) != 1:
            raise ValueError(f"arms {arm_a!r} and {arm_b!r} share the models {models}: choose one with --model")
        model = models[0]
    if model not in models:
        raise ValueError(f"arms {arm_a!r} and {arm_b!r} have no runs on model {model!r} in common (shared: {models})")
    if table and column not in table[0]:
        raise ValueError(f"no column {column!r}; the CSV has {list(table[0])}")
    by = {(x["arm"], x["seed"]): x[column] for x in table if x["model"] == model}
    seeds = sorted(s for a, s in by if a == arm_a and (arm_b, s) in by)
    ci = t_interval([by[arm_a, s] - by[arm_b, s] for s in seeds])
    return ci | {"model": model, "seeds": seeds}


def paired_text(ci: dict, arm_a: str, arm_b: str, column: str) -> str:
    """One line: ``column: A - B on model M = mean ± half (95% t, n seeds [...]): resolved / not resolved``."""
    head = f"{column}: {arm_a} - {arm_b} on model {ci['model']}"
    if not ci["n"]:
        return f"{head}: no seed ran both"
    if math.isnan(ci["half"]):
        return f"{head} = {ci['mean']:+.2f} (one seed, {ci['seeds']}: no interval)"
    lo, hi = ci["ci"]
    verdict = "resolved" if lo > 0 or hi < 0 else "not resolved"
    return (f"{head} = {ci['mean']:+.2f} ± {ci['half']:.2f} (95% t, n = {ci['n']} seeds {ci['seeds']}, "
            f"[{lo:+.2f}, {hi:+.2f}]): {verdict}")


def plot_runs(runs: list[dict], out: Path) -> list[Path]:
    """One figure per (model, seed): a column per arm, a row per logged quantity of PANELS, the fall-back mark."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for model, seed in sorted({(r["model"], r["seed"]) for r in runs}):
        group = {r["arm"]: r for r in runs if r["model"] == model and r["seed"] == seed}
        arms = sorted(group, key=lambda a: (a not in ("grpo", "slas"), a != "grpo", a))  # grpo, slas, then the rest
        panels = [(k, t) for k, t in PANELS if any(panel_series(group[a]["rows"], k) for a in arms)]
        fig, axes = plt.subplots(len(panels), len(arms), figsize=(3.4 * len(arms), 1.9 * len(panels)),
                                 sharex="col", sharey="row", squeeze=False)  # arms on one scale per row
        for j, arm in enumerate(arms):
            rows = group[arm]["rows"]
            mark = fall_back_start(rows)
            for i, (key, title) in enumerate(panels):
                ax = axes[i][j]
                pts = panel_series(rows, key)
                if key == NET_PUSH:
                    ax.axhline(0, color="grey", lw=0.5)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1)
                if pts and key == "train/reward_mean":  # the trailing 10-iteration mean the fall-back mark reads
                    trail = [statistics.fmean(v for _, v in pts[max(0, k - 9):k + 1]) for k in range(len(pts))]
                    ax.plot([p[0] for p in pts], trail, lw=1, color="tab:orange", label="trailing 10-it. mean")
                if mark is not None:
                    ax.axvline(mark, ls="--", color="tab:red", lw=1, label=f"falls back from it. {mark}")
                ax.set_title(f"{arm}: {title}" if i == 0 else title, fontsize=8)
                ax.tick_params(labelsize=7)
            axes[0][j].legend(fontsize=6)
            axes[-1][j].set_xlabel("iteration", fontsize=8)
        fig.suptitle(f"model {model}, seed {seed}", fontsize=9)
        fig.tight_layout()
        path = out / f"slas_scale_{model}_s{seed}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


WINDOW_COLUMNS = [("train/reward_mean", "reward", 3), ("train/informative_frac", "informative", 2),
                  ("train/centered_std", "sigma_B", 3), ("train/adv_abs_mean_informative", "mean abs(A), inf.", 2),
                  ("train/r_push_informative", "mean abs(r - 1/2), inf.", 3), (NET_PUSH, "net push", 4)]


def windows_table(run: dict, every: int = 10) -> str:
    """A markdown table of the per-window means of the push diagnostics of one run, and its fall-back start."""
    rows = run["rows"]
    cols = [(k, t, d) for k, t, d in WINDOW_COLUMNS if panel_series(rows, k)]
    last = max((r["iteration"] for r in rows), default=0)
    mark = fall_back_start(rows)
    lines = [f"{run['dir']} ({run['arm']}, model {run['model']}, seed {run['seed']}, {last} iterations; "
             f"training reward falls back from iteration {mark if mark is not None else '-'})", "",
             "| iterations | " + " | ".join(t for _, t, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for lo in range(1, last + 1, every):
        hi = min(lo + every - 1, last)
        cells = []
        for key, _, digits in cols:
            vals = [v for i, v in panel_series(rows, key) if lo <= i <= hi]
            cells.append(f"{round(statistics.fmean(vals), digits) + 0.0:.{digits}f}" if vals else "")  # no "-0.0"
        lines.append(f"| {lo}-{hi} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def synthetic(groups: int = 4096, seed: int = 0, means: tuple[float, ...] = (0.3, 0.5, 0.7, 0.85, 0.93)) -> list[dict]:
    """Mean |A| and the net push over the informative samples of synthetic binary batches (groups of 8, success
    rates ~ Beta(2m, 2(1 - m))), for grpo, slas and slas with recenter, no clip. One dict per batch mean m."""
    import torch

    from slas.algo.advantages import compute

    gid = torch.arange(groups).repeat_interleave(8)  # [groups * 8]
    out = []
    draws = []
    with torch.random.fork_rng(devices=[]):  # Beta.sample takes no generator: seed the global one, then restore it
        for m in means:  # each batch mean from the same seed, whichever others are asked for
            torch.manual_seed(seed)
            rate = torch.distributions.Beta(2 * m, 2 * (1 - m)).sample((groups,))  # [groups]
            draws.append((torch.rand(groups, 8) < rate[:, None]).double().flatten())  # [groups * 8]
    for m, r in zip(means, draws, strict=True):
        spread = r.view(groups, 8).amax(1) > r.view(groups, 8).amin(1)
        inf = spread[gid]
        x = {"batch_mean": m, "zero_spread": float(1 - spread.double().mean())}
        for arm, name, params in (("grpo", "grpo", {}), ("slas", "slas", {}), ("slas recenter", "slas", {"recenter": True})):
            a = compute(name, r, gid, adv_clip=None, **params)[inf]
            x[arm] = (float(a.abs().mean()), float(a.mean()))
        out.append(x)
    return out


def synthetic_table(res: list[dict]) -> str:
    arms = ["grpo", "slas", "slas recenter"]
    lines = ["| batch mean success | zero-spread groups | " + " | ".join(f"{a}: mean abs(A), net push" for a in arms)
             + " |", "|---" * (2 + len(arms)) + "|"]
    for x in res:
        lines.append(f"| {x['batch_mean']:.2f} | {100 * x['zero_spread']:.0f}% | "
                     + " | ".join(f"{x[a][0]:.2f}, {round(x[a][1], 3) + 0.0:+.3f}" for a in arms) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("csv", help="one row per finished run of the compare folders")
    c.add_argument("outs", nargs="+", type=Path, metavar="OUT")
    c.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    g = sub.add_parser("plot", help="the push diagnostics beside the training reward, per model and seed")
    g.add_argument("outs", nargs="+", type=Path, metavar="OUT")
    g.add_argument("--out", type=Path, default=HERE / "results" / "slas_scale_plots")
    q = sub.add_parser("paired", help="ARM_A - ARM_B of one column, paired by seed, with its 95%% t interval")
    q.add_argument("arm_a")
    q.add_argument("arm_b")
    q.add_argument("--model", help="the model both ran (needed when they share several)")
    q.add_argument("--column", default="final_heldout")
    q.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    w = sub.add_parser("windows", help="per-window means of the push diagnostics of each run, as markdown")
    w.add_argument("outs", nargs="+", type=Path, metavar="OUT")
    w.add_argument("--every", type=int, default=10)
    w.add_argument("--unfinished", action="store_true", help="include runs that have not finished")
    y = sub.add_parser("synthetic", help="the push and net push of synthetic binary batches, per estimator")
    y.add_argument("--groups", type=int, default=4096)
    y.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.cmd == "synthetic":
        print(synthetic_table(synthetic(args.groups, args.seed)))
        return 0
    if args.cmd == "paired":
        if not args.csv.is_file():
            print(f"error: {args.csv} does not exist; write it with `slas_scale.py csv OUT ...`", file=sys.stderr)
            return 2
        try:
            ci = paired(read_csv(args.csv), args.arm_a, args.arm_b, args.model, args.column)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(paired_text(ci, args.arm_a, args.arm_b, args.column))
        return 0
    try:
        runs = load(args.outs, unfinished=args.cmd == "windows" and args.unfinished)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not runs:
        print(f"error: no finished runs under {[str(o) for o in args.outs]}", file=sys.stderr)
        return 2
    if args.cmd == "windows":
        if args.every < 1:
            print(f"error: --every must be >= 1, got {args.every}", file=sys.stderr)
            return 2
        print("\n\n".join(windows_table(r, args.every) for r in runs))
    elif args.cmd == "csv":
        table = write_csv(runs, args.csv)
        print(f"wrote {args.csv} ({len(table)} runs)")
    else:
        for path in plot_runs(runs, args.out):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
