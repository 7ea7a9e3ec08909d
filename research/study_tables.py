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
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from slas.config import load_config  # noqa: E402
from slas.evals.stats import t_interval  # noqa: E402
from slas.recipe.metrics import best_value, first_value, last_value, read_metrics, series  # noqa: E402
from slas.recipe.run_dir import RunDir  # noqa: E402
from slas.toyworld.model import resolve_checkpoint  # noqa: E402
from slas.toyworld.monitor import should_stop  # noqa: E402

PARTS = ["main", "gamma", "recenter", "normalize", "batch_std_of"]
PART2 = ["part2_main", "part2_estimators", "part2_gamma",  # part 2: the default recipe (nft) on the strict gold reward
         "part2_normalize", "part2_batch_std_of", "part2_recenter", "part2_drop_zero",  # and SLAS's open details,
         "part2_matched"]  # and DanceGRPO's estimator at SLAS's step size (MATCHED)
PART2_PROBE = "part2_hack_probe"  # part 2: DanceGRPO's estimator on toy_biased at a few strengths, one seed
# part 2 under a hackable proxy: toy_biased at the chosen strength (with the gold part's other arms), toy_pref
PART2_PROXY = {"part2_hack": ["part2_hack", "part2_hack_estimators", "part2_hack_gamma", "part2_hack_matched"],
               "part2_pref": ["part2_pref", "part2_pref_matched"]}
PART2_SCALE = {"S": "part2_scale_S", "M": "part2_main", "L": "part2_scale_L"}  # part 2 on the gold reward per size
# a size's step-size arms on the gold reward (MATCHED and SLAS_STEP on that size; M's control is part2_matched) and
# grpo_global_std (SLAS's batch std without its power), merged into its part
PART2_SCALE_STEP = {"part2_scale_L": ["part2_scale_L_matched", "part2_scale_L_slas_step", "part2_scale_L_global_std"]}
PART2_HACK_SCALE = {"S": "part2_hack_scale_S", "M": "part2_hack", "L": "part2_hack_scale_L"}  # and under toy_biased
PART2_AWM = "part2_awm"  # the main arms under the other forward-process objective (configs/toy_awm_slas.yaml)
# DanceGRPO's estimator with nft's r_scale 5 -> 4: its r moves 1.25x as far from 1/2 at the same advantages, as SLAS's
# do at its defaults (1.24x, research/slas_options.py): a step-size control for SLAS's differences
MATCHED = "grpo-r_scale4"
SLAS_STEP = "slas-r_scale6.2"  # and the converse: SLAS with nft's r_scale 5 -> 6.2 (5 x 1.24), r moving as DanceGRPO's
SCALE_PROBES = (MATCHED, SLAS_STEP, "grpo_global_std")  # PART2_SCALE_STEP's arms: the step size and the shape
SEEDS = 5  # seeds per arm of the study: a proxy part with fewer pairs gets no verdict yet
RISES = (0.05, 0.10)  # part 2: iterations until the held-out strict accuracy reaches iteration 0's + these
DROP = 0.05  # a training reward whose last 20 iterations sit this far below its best 10-iteration mean "fell back"
# the scale comparison: the same config and arms (slas, grpo) on each model size; M is the main part
SCALE_PARTS = {"S": "scale_S", "M": "main", "L": "scale_L"}
TAGS = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
EARLY = 8  # iterations 1..EARLY: the "speed" window of the training reward


def load_runs(root: Path, parts: list[str] = PARTS) -> dict[str, dict[int, list[dict]]]:
    """arm -> seed -> metrics rows, for the finished runs; unfinished ones are reported on stderr."""
    arms: dict[str, dict[int, list[dict]]] = {}
    origin: dict[str, str] = {}
    for part in parts:
        for run in sorted((root / part / "runs").glob("*_s*")):
            m = re.fullmatch(r"(.+)_s(\d+)", run.name)
            paths = RunDir(run)
            cfg = paths.config
            if not m or not paths.metrics.is_file() or not cfg.is_file():
                continue
            rows = read_metrics(run)
            want = load_config(cfg).train.iterations
            if not rows or rows[-1]["iteration"] < want:
                print(f"unfinished: {part}/{run.name} ({rows[-1]['iteration'] if rows else 0}/{want})",
                      file=sys.stderr)
                continue
            arm = m.group(1)
            if origin.setdefault(arm, part) != part:  # an arm belongs to the first part that ran it
                print(f"skipped: {part}/{run.name} ({arm} comes from {origin[arm]}/)", file=sys.stderr)
                continue
            arms.setdefault(arm, {})[int(m.group(2))] = rows
    return arms


def run_stats(rows: list[dict]) -> dict[str, float]:
    """The per-run quantities of the tables (fractions, not percent)."""
    first, last, best = (functools.partial(f, rows) for f in (first_value, last_value, best_value))
    rew = series(rows, "train/reward_mean")
    out = {
        "early_reward": sum(v for i, v in rew if i <= EARLY) / max(1, sum(1 for i, _ in rew if i <= EARLY)),
        "late_reward": sum(v for _, v in rew[-EARLY:]) / max(1, len(rew[-EARLY:])),
        "proxy_gain": last("monitor/proxy_id") - first("monitor/proxy_id"),
        "base_ood": first("monitor/gold_acc_ood"),
        "final_ood": last("monitor/gold_acc_ood"),
        "best_ood": best("monitor/gold_acc_ood"),
        "d_ood_score": last("monitor/gold_score_ood") - first("monitor/gold_score_ood"),
        "d_id_score": last("monitor/gold_score_id") - first("monitor/gold_score_id"),
        "d_heldout": last("eval/gold_accuracy") - first("eval/gold_accuracy"),
        "final_heldout": last("eval/gold_accuracy"),
        "peak_gap": best("monitor/hacking_gap"),
        "final_gap_ood": last("monitor/hacking_gap_ood"),
        "d_saturation": last("monitor/saturation") - first("monitor/saturation"),
        "final_div_pixel": last("monitor/div_pixel"),
        "final_div_detect": last("monitor/div_detect"),
        "d_exact_count": last("eval/exact_count") - first("eval/exact_count"),
    }
    for t in TAGS:
        out[f"tag_{t}"] = last(f"eval/strict/{t}")
        out[f"base_tag_{t}"] = first(f"eval/strict/{t}")
    return out


def fmt(values: list[float], scale: float = 1.0, digits: int = 3, sign: bool = False) -> str:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return "–"
    ci = t_interval(vals)
    s = f"{scale * ci['mean']:+.{digits}f}" if sign else f"{scale * ci['mean']:.{digits}f}"
    return s if math.isnan(ci["half"]) else f"{s} ± {scale * ci['half']:.{digits}f}"


COLS = [  # key, header, scale, digits, signed
    ("early_reward", f"train reward, it. 1–{EARLY}", 1, 3, False),
    ("late_reward", f"train reward, last {EARLY}", 1, 3, False),
    ("proxy_gain", "proxy rise (ID)", 1, 3, True),
    ("final_ood", "final gold OOD %", 100, 1, False),
    ("d_ood_score", "Δ gold score OOD", 1, 3, True),
    ("d_heldout", "Δ held-out gold (pts)", 100, 1, True),
    ("peak_gap", "peak hacking gap", 1, 3, False),
    ("d_saturation", "Δ saturation", 1, 3, True),
    ("final_div_detect", "final diversity (detections)", 1, 3, False),
]


def arm_table(arms: dict[str, dict[int, list[dict]]], order: list[str]) -> list[str]:
    lines = ["| arm | seeds | " + " | ".join(h for _, h, *_ in COLS) + " |", "|---" * (len(COLS) + 2) + "|"]
    for arm in order:
        if arm not in arms:
            continue
        stats = [run_stats(r) for _, r in sorted(arms[arm].items())]
        cells = [fmt([s[k] for s in stats], sc, d, sg) for k, _, sc, d, sg in COLS]
        lines.append(f"| {arm} | {len(stats)} | " + " | ".join(cells) + " |")
    return lines


def paired_table(arms: dict[str, dict[int, list[dict]]], order: list[str], ref: str = "grpo") -> list[str]:
    keys = [("proxy_gain", "proxy rise", 1, 3), ("early_reward", f"train reward it. 1–{EARLY}", 1, 3),
            ("late_reward", f"train reward, last {EARLY}", 1, 3),
            ("final_ood", "final gold OOD (pts)", 100, 1), ("d_ood_score", "Δ gold score OOD", 1, 3),
            ("d_heldout", "Δ held-out gold (pts)", 100, 1), ("peak_gap", "peak hacking gap", 1, 3),
            ("d_saturation", "Δ saturation", 1, 3)]
    lines = [f"| arm − {ref} | pairs | " + " | ".join(h for _, h, *_ in keys) + " |", "|---" * (len(keys) + 2) + "|"]
    if ref not in arms:
        return lines
    for arm in order:
        if arm == ref or arm not in arms:
            continue
        seeds = sorted(set(arms[arm]) & set(arms[ref]))
        a = {s: run_stats(arms[arm][s]) for s in seeds}
        b = {s: run_stats(arms[ref][s]) for s in seeds}
        cells = [fmt([a[s][k] - b[s][k] for s in seeds], sc, d, True) for k, _, sc, d in keys]
        lines.append(f"| {arm} | {len(seeds)} | " + " | ".join(cells) + " |")
    return lines


def is_hacked(rows: list[dict]) -> bool:
    """The proxy ends higher than it started while the OOD gold ends >= 5 points below its best."""
    p, g = series(rows, "monitor/proxy_id"), series(rows, "monitor/gold_acc_ood")
    return p[-1][1] > p[0][1] and g[-1][1] <= max(v for _, v in g) - 0.05


def stop_iteration(rows: list[dict], patience: int = 3) -> float:
    """The first evaluation at which the monitor's early stop (``monitor.early_stop``, ``monitor.patience``) would
    have stopped the run: in-domain gold score down and proxy up at each of the last ``patience`` evaluations.
    NaN if never."""
    trail = []
    for r in rows:
        if "monitor/proxy_id" in r and "monitor/gold_score_id" in r:
            trail.append((r["monitor/proxy_id"], r["monitor/gold_score_id"]))
            if should_stop(trail, patience):
                return float(r["iteration"])
    return math.nan


def hack_table(arms: dict[str, dict[int, list[dict]]], arm: str = "grpo", patience: int = 3) -> list[str]:
    lines = ["| seed | proxy it. 0 → final | gold OOD it. 0 / best / final % | held-out gold it. 0 → final % "
             "| hacked? | monitor's early stop at |", "|---|---|---|---|---|---|"]
    n_hacked = 0
    for seed, rows in sorted(arms.get(arm, {}).items()):
        p = series(rows, "monitor/proxy_id")
        g = series(rows, "monitor/gold_acc_ood")
        h = series(rows, "eval/gold_accuracy")
        best = max(v for _, v in g)
        hacked = is_hacked(rows)
        n_hacked += hacked
        lines.append(f"| {seed} | {p[0][1]:.3f} → {p[-1][1]:.3f} | {100 * g[0][1]:.1f} / {100 * best:.1f} / "
                     f"{100 * g[-1][1]:.1f} | {100 * h[0][1]:.1f} → {100 * h[-1][1]:.1f} | {'yes' if hacked else 'no'} "
                     f"| {_iteration(stop_iteration(rows, patience))} |")
    lines.append("")
    lines.append(f"{arm}: {n_hacked} of {len(arms.get(arm, {}))} seeds hacked (proxy up, out-of-domain gold "
                 "finishing at least 5 points below its best).")
    return lines


def _iteration(it: float) -> str:
    return "never" if math.isnan(it) else f"it. {it:.0f}"


def tag_table(arms: dict[str, dict[int, list[dict]]], order: list[str]) -> list[str]:
    runs = [run_stats(r) for arm in order for r in arms.get(arm, {}).values()]
    tags = [t for t in TAGS if any(math.isfinite(s[f"tag_{t}"]) for s in runs)]  # the split may lack a tag
    lines = ["| arm | " + " | ".join(tags) + " | Δ exact count (pts) |", "|---" * (len(tags) + 2) + "|"]
    base_done = False
    for arm in order:
        if arm not in arms:
            continue
        stats = [run_stats(r) for _, r in sorted(arms[arm].items())]
        if not base_done:
            lines.append("| base model (iteration 0) | " + " | ".join(
                fmt([s[f"base_tag_{t}"] for s in stats], 100, 1) for t in tags) + " | – |")
            base_done = True
        lines.append(f"| {arm} | " + " | ".join(fmt([s[f"tag_{t}"] for s in stats], 100, 1) for t in tags)
                     + f" | {fmt([s['d_exact_count'] for s in stats], 100, 1, True)} |")
    return lines


def model_params(root: Path, part: str) -> int | None:
    """Parameter count of the model a part's runs trained (from its checkpoint's config.json)."""
    for cfg in sorted((root / part / "runs").glob("*/config.yaml")):
        info = resolve_checkpoint(load_config(cfg).model.checkpoint) / "config.json"
        if info.is_file():
            return json.loads(info.read_text()).get("n_params")
    return None


def scale_table(root: Path) -> list[str]:
    """SLAS vs DanceGRPO per model size: each size's arms, and their paired differences."""
    per_seed = []
    lines = ["| model | parameters | pairs | base gold OOD % | grpo final OOD % | slas final OOD % "
             "| slas − grpo: OOD gold (pts) | held-out gold (pts) | peak hacking gap | Δ saturation | grpo seeds hacked |",
             "|---" * 11 + "|"]
    for size, part in SCALE_PARTS.items():
        arms = load_runs(root, [part])
        if "grpo" not in arms or "slas" not in arms:
            continue
        seeds = sorted(set(arms["grpo"]) & set(arms["slas"]))
        a = {s: run_stats(arms["slas"][s]) for s in seeds}
        b = {s: run_stats(arms["grpo"][s]) for s in seeds}
        n = model_params(root, part)
        hacked = f"{sum(is_hacked(arms['grpo'][s]) for s in seeds)} of {len(seeds)}"
        diff = [fmt([a[s][k] - b[s][k] for s in seeds], sc, d, True)
                for k, sc, d in [("final_ood", 100, 1), ("d_heldout", 100, 1), ("peak_gap", 1, 3),
                                 ("d_saturation", 1, 3)]]
        lines.append(f"| {size} | {f'{n:,}' if n else '?'} | {len(seeds)} | {fmt([b[s]['base_ood'] for s in seeds], 100, 1)} "
                     f"| {fmt([b[s]['final_ood'] for s in seeds], 100, 1)} | {fmt([a[s]['final_ood'] for s in seeds], 100, 1)} "
                     f"| " + " | ".join(diff) + f" | {hacked} |")
        d = [100 * (a[s]["final_ood"] - b[s]["final_ood"]) for s in seeds]
        ci = t_interval(d)
        per_seed.append(f"- {size}: slas − grpo final OOD gold per seed {', '.join(f'{v:+.1f}' for v in d)} pts; "
                        f"95% t interval [{ci['mean'] - ci['half']:+.2f}, {ci['mean'] + ci['half']:+.2f}]")
    return lines + [""] + per_seed


HACK_PANELS = [("monitor/proxy_id", "proxy (toy_biased), in-domain"), ("monitor/gold_score_ood", "gold score, out-of-domain"),
               ("monitor/saturation", "saturation (the bias)")]
GOLD_PANELS = [("eval/gold_accuracy", "held-out strict accuracy (240 images)"),
               ("eval/id/gold_accuracy", "in-domain strict accuracy (144 images)")]


def plot(arms: dict[str, dict[int, list[dict]]], order: list[str], path: Path,
         panels: list[tuple[str, str]] = HACK_PANELS) -> None:
    """One panel per (metric key, title): each arm's mean over seeds at every evaluation, with its 95% t band
    (arms with fewer than 3 seeds: dashed, no band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.7 * len(panels), 3.2))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for arm in order:
            if arm not in arms:
                continue
            per_seed = [dict(series(r, key)) for r in arms[arm].values()]
            its = sorted(set.intersection(*[set(s) for s in per_seed]))
            cis = [t_interval([s[i] for s in per_seed]) for i in its]
            mean = [c["mean"] for c in cis]
            half = [0.0 if math.isnan(c["half"]) else c["half"] for c in cis]
            if len(per_seed) < 3:  # a probe: t_{0.975,1} = 12.7 would swamp the axes, so a dashed mean, no band
                ax.plot(its, mean, "--", label=f"{arm} ({len(per_seed)} seeds, no band)")
                continue
            ax.plot(its, mean, label=arm)
            ax.fill_between(its, [m - h for m, h in zip(mean, half, strict=True)],
                            [m + h for m, h in zip(mean, half, strict=True)], alpha=0.15)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ----------------------------------------------------------------------------
# Part 2: the gold reward (training that learns)
# ----------------------------------------------------------------------------


def reach(rows: list[dict], rise: float) -> float:
    """The first evaluated iteration whose held-out strict accuracy is >= iteration 0's + ``rise``; NaN if none."""
    pts = series(rows, "eval/gold_accuracy")
    if not pts or pts[0][0] != 0:
        return math.nan
    return next((float(i) for i, v in pts if v >= pts[0][1] + rise - 1e-12), math.nan)


def mean_gain(rows: list[dict], key: str) -> float:
    """The mean of ``key`` over the run minus its first value: the trapezoid area under the gain curve over the
    evaluated span, divided by that span (NaN with fewer than two evaluations). Less noisy than the last value."""
    pts = series(rows, key)
    if len(pts) < 2:
        return math.nan
    area = sum((i1 - i0) * ((v0 + v1) / 2 - pts[0][1]) for (i0, v0), (i1, v1) in zip(pts, pts[1:], strict=False))
    return area / max(1, pts[-1][0] - pts[0][0])


def gold_stats(rows: list[dict]) -> dict[str, float]:
    """The per-run quantities of part 2 (fractions; iterations)."""
    first, last = (functools.partial(f, rows) for f in (first_value, last_value))
    out = {
        "final_heldout": last("eval/gold_accuracy"), "d_heldout": last("eval/gold_accuracy") - first("eval/gold_accuracy"),
        "final_id": last("eval/id/gold_accuracy"), "d_id": last("eval/id/gold_accuracy") - first("eval/id/gold_accuracy"),
        "auc": mean_gain(rows, "eval/gold_accuracy"), "auc_id": mean_gain(rows, "eval/id/gold_accuracy"),
        "d_exact_count": last("eval/exact_count") - first("eval/exact_count"),
        "final_debris": last("eval/debris"), "d_debris": last("eval/debris") - first("eval/debris"),
    }
    rew = series(rows, "train/reward_mean")  # the training reward (the strict partial credit on train prompts)
    out["early_reward"] = sum(v for i, v in rew if i <= 20) / max(1, sum(1 for i, _ in rew if i <= 20))
    out["late_reward"] = sum(v for _, v in rew[-20:]) / max(1, len(rew[-20:]))
    blocks = [statistics.fmean(v for _, v in rew[i:i + 10]) for i in range(0, len(rew), 10)]  # 10-iteration means
    out["reward_drop"] = max(blocks) - out["late_reward"] if blocks else math.nan  # how far training fell back
    for rise in RISES:
        out[f"to_{round(100 * rise)}"] = reach(rows, rise)
    for t in TAGS:
        out[f"tag_{t}"] = last(f"eval/strict/{t}")
        out[f"d_tag_{t}"] = last(f"eval/strict/{t}") - first(f"eval/strict/{t}")
    return out


GOLD_COLS = [  # key, header, scale, digits, signed
    ("final_heldout", "held-out % (final)", 100, 1, False), ("d_heldout", "Δ held-out (pts)", 100, 1, True),
    ("final_id", "in-domain % (final)", 100, 1, False), ("d_id", "Δ in-domain (pts)", 100, 1, True),
    ("to_5", "iterations to +5", 1, 0, False), ("to_10", "iterations to +10", 1, 0, False),
    ("auc", "mean held-out gain over the run (pts)", 100, 1, True),
    ("auc_id", "mean in-domain gain over the run (pts)", 100, 1, True),
    ("d_exact_count", "Δ exact count (pts)", 100, 1, True), ("d_debris", "Δ debris (pts)", 100, 1, True),
]


def _cell(values: list[float], sc: float, d: int, sg: bool, key: str) -> str:
    text = fmt(values, sc, d, sg)
    if key.startswith("to_"):
        text += f" ({sum(math.isfinite(v) for v in values)}/{len(values)} reached)"
    return text


def gold_arm_table(arms: dict[str, dict[int, list[dict]]], order: list[str]) -> list[str]:
    lines = ["| arm | seeds | " + " | ".join(h for _, h, *_ in GOLD_COLS) + " |", "|---" * (len(GOLD_COLS) + 2) + "|"]
    for arm in order:
        if arm in arms:
            stats = [gold_stats(r) for _, r in sorted(arms[arm].items())]
            cells = [_cell([st[k] for st in stats], sc, d, sg, k) for k, _, sc, d, sg in GOLD_COLS]
            lines.append(f"| {arm} | {len(stats)} | " + " | ".join(cells) + " |")
    return lines


def paired(arms: dict[str, dict[int, list[dict]]], arm: str, ref: str, keys: list[str], stats=None) -> dict[str, dict]:
    """key -> t interval of the paired differences arm - ref of ``stats(rows)`` (default ``gold_stats``) over the
    seeds both ran (NaN differences, e.g. a target one run never reached, are dropped)."""
    stats = stats or gold_stats
    seeds = sorted(set(arms.get(arm, {})) & set(arms.get(ref, {})))
    a = {s: stats(arms[arm][s]) for s in seeds}
    b = {s: stats(arms[ref][s]) for s in seeds}
    return {k: t_interval([a[s][k] - b[s][k] for s in seeds]) for k in keys}


def gold_paired(arms: dict[str, dict[int, list[dict]]], arm: str, ref: str = "grpo") -> dict[str, dict]:
    """The part-2 quantities, paired (``paired`` of ``gold_stats``)."""
    keys = [k for k, *_ in GOLD_COLS] + [f"d_tag_{t}" for t in TAGS] + ["early_reward", "late_reward"]
    return paired(arms, arm, ref, keys)


def gold_paired_table(arms: dict[str, dict[int, list[dict]]], order: list[str], ref: str = "grpo") -> list[str]:
    cols = [c for c in GOLD_COLS if c[0] not in ("final_id", "final_heldout")]
    lines = [f"| arm − {ref} | pairs | " + " | ".join(h for _, h, *_ in cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for arm in order:
        if arm == ref or arm not in arms or ref not in arms:
            continue
        seeds = sorted(set(arms[arm]) & set(arms[ref]))
        a = {s: gold_stats(arms[arm][s]) for s in seeds}
        b = {s: gold_stats(arms[ref][s]) for s in seeds}
        cells = [fmt([a[s][k] - b[s][k] for s in seeds], sc, d, True) for k, _, sc, d, _ in cols]
        lines.append(f"| {arm} | {len(seeds)} | " + " | ".join(cells) + " |")
    return lines


def gold_tag_table(arms: dict[str, dict[int, list[dict]]], order: list[str]) -> list[str]:
    lines = ["| arm | " + " | ".join(TAGS) + " |", "|---" * (len(TAGS) + 1) + "|"]
    for arm in order:
        if arm in arms:
            stats = [gold_stats(r) for _, r in sorted(arms[arm].items())]
            lines.append(f"| {arm} (change from iteration 0, pts) | "
                         + " | ".join(fmt([st[f"d_tag_{t}"] for st in stats], 100, 1, True) for t in TAGS) + " |")
    return lines


def ci_text(ci: dict, sc: float = 1, digits: int = 3, unit: str = "", n: bool = True) -> str:
    """``+mean ± half unit (n = N)`` of a t interval, scaled; no ``± half`` where there is no spread (one pair),
    ``–`` where there is nothing to pair (e.g. no seed where both runs reached a target)."""
    if not ci["n"]:
        return "–" + (" (n = 0)" if n else "")
    half = "" if math.isnan(ci["half"]) else f" ± {sc * ci['half']:.{digits}f}"
    return f"{sc * ci['mean']:+.{digits}f}{half}{unit}" + (f" (n = {ci['n']})" if n else "")


def _sign(ci: dict) -> int:
    """+1 / -1 when the 95% interval excludes 0 on that side, 0 otherwise (or too few pairs)."""
    lo, hi = ci["ci"] if ci["n"] >= 2 else (math.nan, math.nan)
    return 1 if lo > 0 else -1 if hi < 0 else 0


def gold_verdicts(arms: dict[str, dict[int, list[dict]]], arm: str = "slas", ref: str = "grpo",
                  label: str = "") -> list[str]:
    """One verdict line per claim of the paper that part 2 tests (1, 2, 5), from the paired 95% intervals;
    ``label`` names the objective where it is not the default's."""
    if arm not in arms or ref not in arms:
        return [f"1. (needs finished {arm} and {ref} runs{', ' + label if label else ''})"]
    tag = f" ({label})" if label else ""
    d = gold_paired(arms, arm, ref)

    def show(k: str, sc: float = 100, unit: str = "pts", digits: int = 1) -> str:
        return ci_text(d[k], sc, digits, f" {unit}" if unit else "")

    speed = [_sign(d["auc"]), -_sign(d["to_5"]), -_sign(d["to_10"])]
    v1 = ("supported" if max(speed) > 0 and min(speed) >= 0 else "contradicted" if min(speed) < 0 and max(speed) <= 0
          else "not supported (the paired intervals hold 0)" if max(speed) == 0 else "mixed")
    v2 = {1: "supported", -1: "contradicted", 0: "not supported (the paired interval holds 0)"}[_sign(d["d_heldout"])]
    keys5 = [f"d_tag_{t}" for t in TAGS] + ["d_exact_count"]
    name5 = {k: k.removeprefix("d_tag_").replace("d_exact_count", "exact count") for k in keys5}
    falls = [name5[k] for k in keys5 if _sign(d[k]) < 0]
    rises = [f"{name5[k]} {show(k)}" for k in keys5 if _sign(d[k]) > 0]
    v5 = (f"contradicted ({', '.join(falls)} fall against {ref})" if falls else
          f"supported where resolved (no tag falls; resolved rises: {'; '.join(rises)})" if rises else
          "not supported (no per-tag or exact-count difference resolved)")
    return [f"1. faster training dynamics{tag}: {v1}. Mean held-out gain over the run {show('auc')}; iterations to +5 "
            f"{show('to_5', 1, 'iterations')}, to +10 {show('to_10', 1, 'iterations')} (seeds where both reached); "
            f"training reward over iterations 1-20 {show('early_reward', 1, '', 3)}, over the last 20 "
            f"{show('late_reward', 1, '', 3)}; in-domain strict accuracy, final {show('d_id')}, mean gain over the "
            f"run {show('auc_id')}.",
            f"2. better out-of-domain (held-out compositions){tag}: {v2}. Final held-out {show('d_heldout')}.",
            f"5. fidelity (per-tag, exact count){tag}: {v5}. Exact count {show('d_exact_count')}."]


def reward_label(root: Path, part: str) -> str:
    """The training reward of a part's runs, as its config names it (``toy_biased`` (lam 4))."""
    for cfg in sorted((root / part / "runs").glob("*/config.yaml")):
        r = load_config(cfg).reward
        return ", ".join(f"`{k}`" + (" (" + ", ".join(f"{o} {v:g}" if isinstance(v, float) else f"{o} {v}"
                                                      for o, v in r.options[k].items()) + ")" if r.options.get(k) else "")
                         for k in r.weights)
    return "?"


def probe_table(arms: dict[str, dict[int, list[dict]]], patience: int = 3) -> list[str]:
    """One row per probed arm (its first seed): does DanceGRPO hack at this strength under this objective?"""
    lines = ["| arm | proxy it. 0 → final | peak hacking gap | Δ saturation | gold OOD it. 0 / best / final % "
             "| held-out gold it. 0 → final % | hacked? | monitor's early stop at |", "|---" * 8 + "|"]
    for arm in sorted(arms):
        rows = arms[arm][min(arms[arm])]
        s = run_stats(rows)
        p, g, h = (series(rows, k) for k in ("monitor/proxy_id", "monitor/gold_acc_ood", "eval/gold_accuracy"))
        lines.append(f"| {arm} | {p[0][1]:.3f} → {p[-1][1]:.3f} | {s['peak_gap']:.3f} | {s['d_saturation']:+.3f} "
                     f"| {100 * g[0][1]:.1f} / {100 * max(v for _, v in g):.1f} / {100 * g[-1][1]:.1f} "
                     f"| {100 * h[0][1]:.1f} → {100 * h[-1][1]:.1f} | {'yes' if is_hacked(rows) else 'no'} "
                     f"| {_iteration(stop_iteration(rows, patience))} |")
    return lines


def hack_verdict(arms: dict[str, dict[int, list[dict]]], label: str, arm: str = "slas", ref: str = "grpo") -> str:
    """Claim 3 under one proxy, from the paired peak hacking gap (the proxy's rise beyond the gold's, gold units)."""
    if arm not in arms or ref not in arms:
        return f"3. less reward hacking ({label}): not tested (needs finished {arm} and {ref} runs)"
    seeds = sorted(set(arms[arm]) & set(arms[ref]))
    d = paired(arms, arm, ref, ["peak_gap", "final_ood", "d_saturation", "d_heldout"], run_stats)
    n_hacked = {x: sum(is_hacked(arms[x][s]) for s in seeds) for x in (ref, arm)}

    def show(k: str, sc: float = 1, digits: int = 3, unit: str = "") -> str:
        return ci_text(d[k], sc, digits, unit, n=False)

    sign = _sign(d["peak_gap"])
    if len(seeds) < SEEDS:
        verdict = f"not tested yet ({len(seeds)} of {SEEDS} seeds)"
    elif sign == 0 and not any(n_hacked.values()):
        verdict = f"not tested (neither arm hacked at any of {len(seeds)} seeds)"
    else:
        verdict = {1: "contradicted", -1: "supported", 0: "not supported (the paired interval holds 0)"}[sign]
    return (f"3. less reward hacking ({label}): {verdict}. Peak hacking gap {show('peak_gap')} (n = {len(seeds)}); "
            f"saturation change {show('d_saturation')}; final OOD gold {show('final_ood', 100, 1, ' pts')}, "
            f"held-out {show('d_heldout', 100, 1, ' pts')}; seeds hacked: {ref} {n_hacked[ref]} of {len(seeds)}, "
            f"{arm} {n_hacked[arm]} of {len(seeds)}.")


def scale_pairs(root: Path, parts: dict[str, str], loaded: dict[str, dict[str, dict[int, list[dict]]]],
                stats=gold_stats) -> dict[str, dict]:
    """size -> {params, seeds, both arms' ``stats`` per paired seed, slas's and grpo's rows}, for the sizes of
    ``parts`` (size -> part) with finished slas and grpo runs; ``loaded``: part -> its runs (``part2_runs``'s
    ``scale``), read once."""
    out = {}
    for size, part in parts.items():
        arms = loaded[part]
        seeds = sorted(set(arms.get("slas", {})) & set(arms.get("grpo", {})))
        if seeds:
            out[size] = {"params": model_params(root, part), "seeds": seeds,
                         "slas": [stats(arms["slas"][s]) for s in seeds],
                         "grpo": [stats(arms["grpo"][s]) for s in seeds],
                         "rows": {arm: [arms[arm][s] for s in seeds] for arm in ("grpo", "slas")}}
    return out


def gold_scale_table(sizes: dict[str, dict]) -> list[str]:
    lines = ["| model | parameters | pairs | base held-out % | grpo Δ held-out (pts) | slas Δ held-out (pts) "
             "| slas − grpo: Δ held-out (pts) | mean held-out gain over the run (pts) | Δ in-domain (pts) "
             "| Δ exact count (pts) |", "|---" * 10 + "|"]
    for size, x in sizes.items():
        def diff(k: str, x: dict = x) -> str:
            return fmt([a[k] - b[k] for a, b in zip(x["slas"], x["grpo"], strict=True)], 100, 1, True)

        base = [b["final_heldout"] - b["d_heldout"] for b in x["grpo"]]
        n = x["params"]
        lines.append(f"| {size} | {f'{n:,}' if n else '?'} | {len(x['seeds'])} | {fmt(base, 100, 1)} "
                     f"| {fmt([b['d_heldout'] for b in x['grpo']], 100, 1, True)} "
                     f"| {fmt([a['d_heldout'] for a in x['slas']], 100, 1, True)} | {diff('d_heldout')} "
                     f"| {diff('auc')} | {diff('d_id')} | {diff('d_exact_count')} |")
    return lines


def gold_scale_stability_table(sizes: dict[str, dict]) -> list[str]:
    """Per size on the gold reward: does training hold its gains? The change of debris (images with a stray
    component) and how far the training reward (the gold itself) fell back from its best 10-iteration mean."""
    lines = ["| model | pairs | grpo Δ debris (pts) | slas Δ debris (pts) | slas − grpo: Δ debris (pts) "
             "| grpo training reward: fall from its best | slas: fall from its best | seeds that fell back "
             f"more than {DROP} (grpo, slas) |", "|---" * 8 + "|"]
    for size, x in sizes.items():
        def arm(a: str, k: str, sc: float, d: int, signed: bool, x: dict = x) -> str:
            return fmt([r[k] for r in x[a]], sc, d, signed)

        diff = fmt([a["d_debris"] - b["d_debris"] for a, b in zip(x["slas"], x["grpo"], strict=True)], 100, 1, True)
        fell = ", ".join(fell_back(x[a]) for a in ("grpo", "slas"))
        lines.append(f"| {size} | {len(x['seeds'])} | {arm('grpo', 'd_debris', 100, 1, True)} "
                     f"| {arm('slas', 'd_debris', 100, 1, True)} | {diff} | {arm('grpo', 'reward_drop', 1, 3, False)} "
                     f"| {arm('slas', 'reward_drop', 1, 3, False)} | {fell} |")
    return lines


def fell_back(stats: list[dict]) -> str:
    """"k of n": the runs (``gold_stats``) whose training reward fell back more than DROP from its best."""
    return f"{sum(r['reward_drop'] > DROP for r in stats)} of {len(stats)}"


def stability_arm_table(arms: dict[str, dict[int, list[dict]]], order: list[str]) -> list[str]:
    """The stability columns per arm of ``order`` on the seeds all of them have (a size's step-size and shape
    probes: which of them fall back as slas does?)."""
    seeds = sorted(set.intersection(*(set(arms[a]) for a in order)))
    lines = ["| arm | seeds | Δ held-out (pts) | Δ debris (pts) | training reward: fall from its best "
             f"| seeds that fell back more than {DROP} |", "|---" * 6 + "|"]
    for a in order:
        x = [gold_stats(arms[a][s]) for s in seeds]
        lines.append(f"| {a} | {', '.join(map(str, seeds))} | {fmt([r['d_heldout'] for r in x], 100, 1, True)} "
                     f"| {fmt([r['d_debris'] for r in x], 100, 1, True)} | {fmt([r['reward_drop'] for r in x])} "
                     f"| {fell_back(x)} |")
    return lines


def welch(a: list[float], b: list[float], level: float = 0.95) -> dict:
    """mean(a) - mean(b) with a Welch-Satterthwaite t half-width (two independent samples)."""
    from scipy import stats

    mean = statistics.fmean(a) - statistics.fmean(b)
    if min(len(a), len(b)) < 2:  # no spread to estimate
        return {"mean": mean, "half": math.nan, "n": min(len(a), len(b)), "ci": (math.nan, math.nan)}
    sa, sb = (statistics.variance(x) / len(x) for x in (a, b))
    df = (sa + sb) ** 2 / (sa ** 2 / (len(a) - 1) + sb ** 2 / (len(b) - 1)) if sa + sb > 0 else math.inf
    half = stats.t.ppf(0.5 + level / 2, df) * math.sqrt(sa + sb) if sa + sb > 0 else 0.0
    return {"mean": mean, "half": half, "n": min(len(a), len(b)), "ci": (mean - half, mean + half)}


def scale_verdict(sizes: dict[str, dict], label: str = "gold reward", key: str = "d_heldout", better: int = 1,
                  what: str = "held-out change", sc: float = 100, digits: int = 1, unit: str = " pts") -> str:
    """Claim 4 (SLAS's advantage holds or grows with size): the paired slas - grpo difference of ``key`` at each
    size, and the change of that difference from the smallest to the largest size (Welch: different runs).
    ``better`` is +1 where higher is better for SLAS (held-out gold), -1 where lower is (the hacking gap)."""
    per = {k: [a[key] - b[key] for a, b in zip(x["slas"], x["grpo"], strict=True)] for k, x in sizes.items()}
    cis = {k: t_interval(v) for k, v in per.items()}
    each = "; ".join(f"{k} {ci_text(c, sc, digits, unit)}" for k, c in cis.items())
    if len(sizes) < 2:
        return (f"4. better with scale ({label}): not tested (needs two model sizes with slas and grpo runs)"
                + (f". SLAS − DanceGRPO {what} on {each}." if sizes else ""))
    small, large = list(per)[0], list(per)[-1]
    trend = welch(per[large], per[small])
    signs = [better * _sign(c) for c in cis.values()]
    if better * _sign(cis[large]) < 0 or better * _sign(trend) < 0:
        verdict = "contradicted"
    elif all(x > 0 for x in signs):
        verdict = "supported"
    else:
        verdict = "not supported (the intervals hold 0)"
    return (f"4. better with scale ({label}): {verdict}. SLAS − DanceGRPO {what} per size: {each}; "
            f"{large} − {small} {ci_text(trend, sc, digits, unit, n=False)} (Welch).")


def hack_scale_table(sizes: dict[str, dict]) -> list[str]:
    """Part 2 under the proxy per model size: each arm's peak hacking gap and the paired differences."""
    lines = ["| model | parameters | pairs | grpo peak hacking gap | slas peak hacking gap "
             "| slas − grpo: peak hacking gap | Δ saturation | Δ held-out gold (pts) | seeds hacked (grpo, slas) |",
             "|---" * 9 + "|"]
    for size, x in sizes.items():
        def diff(k: str, sc: float, d: int, x: dict = x) -> str:
            return fmt([a[k] - b[k] for a, b in zip(x["slas"], x["grpo"], strict=True)], sc, d, True)

        n = x["params"]
        hacked = ", ".join(f"{sum(map(is_hacked, x['rows'][arm]))} of {len(x['seeds'])}" for arm in ("grpo", "slas"))
        lines.append(f"| {size} | {f'{n:,}' if n else '?'} | {len(x['seeds'])} "
                     f"| {fmt([b['peak_gap'] for b in x['grpo']])} | {fmt([a['peak_gap'] for a in x['slas']])} "
                     f"| {diff('peak_gap', 1, 3)} | {diff('d_saturation', 1, 3)} | {diff('d_heldout', 100, 1)} "
                     f"| {hacked} |")
    return lines


def matched_line(arms: dict[str, dict[int, list[dict]]], keys: list[tuple[str, str, float, int, str]],
                 stats=gold_stats) -> str:
    """SLAS against DanceGRPO's estimator at SLAS's step size (``MATCHED``) and that control against grpo: is a
    difference between slas and grpo the step size? ``keys``: (key, name, scale, digits, unit)."""
    if MATCHED not in arms or "slas" not in arms:
        return f"Step-size control ({MATCHED}): not run yet."
    return (f"Step-size control: slas − {MATCHED} (DanceGRPO's estimator with r moving as far as SLAS's): "
            f"{contrast(arms, 'slas', MATCHED, keys, stats)}; {MATCHED} − grpo: "
            f"{contrast(arms, MATCHED, 'grpo', keys, stats)}.")


def contrast(arms: dict[str, dict[int, list[dict]]], arm: str, ref: str, keys: list[tuple[str, str, float, int, str]],
             stats=gold_stats) -> str:
    """``arm`` − ``ref`` paired by seed, one "name mean ± half unit (n)" per key of ``keys``."""
    d = paired(arms, arm, ref, [k for k, *_ in keys], stats)
    return ", ".join(f"{name} {ci_text(d[k], sc, dg, unit)}" for k, name, sc, dg, unit in keys)


GAMMAS = ["slas-gamma0.5", "slas", "slas-gamma2"]  # the power 1 + gamma at gamma 0.5, 1 (slas's default), 2
GAMMA_AXIS = ["grpo_global_std", *GAMMAS]  # grpo_global_std: the linear end (gamma 0 with the batch std of rewards)
ESTIMATORS = ["grpo", "drgrpo", "grpo_global_std", "slas"]


def detail_arms(arms: dict) -> list[str]:
    """SLAS's open-detail arms (``slas-<option><value>``, one option changed from the defaults), gamma's aside."""
    return sorted(a for a in arms if a.startswith("slas-") and "gamma" not in a)


def gamma_line(arms: dict[str, dict[int, list[dict]]], keys: list[tuple[str, str, float, int, str]],
               stats=gold_stats) -> str:
    """Does the power's exponent matter? The two ends of the sweep paired by seed, the default against each, and
    the default against the linear end (``grpo_global_std``), which needs no sweep runs."""
    lo, mid, hi = GAMMAS
    linear = GAMMA_AXIS[0]
    power = (f"slas (gamma 1) − {linear} (the linear end: what the power adds to the batch std): "
             f"{contrast(arms, mid, linear, keys, stats)}" if linear in arms and mid in arms else "")
    missing = [a for a in GAMMAS if a not in arms]
    sweep = (f"not run yet ({', '.join(missing)} missing)" if missing else
             f"{hi} − {lo}: {contrast(arms, hi, lo, keys, stats)}; "
             f"slas (gamma 1) − {lo}: {contrast(arms, mid, lo, keys, stats)}")
    return "Gamma sweep: " + "; ".join(filter(None, [sweep, power])) + "."


def push_line(root: Path, parts: list[str], arms: dict[str, dict[int, list[dict]]], order: list[str]) -> str:
    """Each arm's push on nft's r: per finished run, the mean over iterations of ``train/adv_abs_mean`` /
    (2 ``forward.r_scale``), i.e. mean |r - 1/2| before r's clamp to [0, 1]; over seeds: the step size the control
    matches. ``r_scale`` is read from one config of the arm (in ``parts``): it is the same for every seed."""
    push = []
    for arm in (a for a in order if a in arms):
        cfg = next((c for part in parts for c in sorted((root / part / "runs").glob(f"{arm}_s*/config.yaml"))), None)
        conf = load_config(cfg) if cfg else None
        if conf is None or conf.train.objective != "nft":
            continue
        adv = [[v for _, v in series(rows, "train/adv_abs_mean")] for rows in arms[arm].values()]
        runs = [statistics.fmean(a) / (2 * conf.forward.r_scale) for a in adv if a]  # runs that logged it
        if runs:
            push.append(f"{arm} {fmt(runs, 1, 4)}")
    return "Push on nft's r (mean |r − 1/2| over the run, before the clamp): " + ", ".join(push) + "." if push else ""


GOLD_CONTRAST_KEYS = [("d_id", "in-domain", 100, 1, " pts"), ("d_heldout", "held-out", 100, 1, " pts"),
                     ("auc", "mean held-out gain", 100, 1, " pts"), ("auc_id", "mean in-domain gain", 100, 1, " pts"),
                     ("d_tag_color_attr", "colour attribution", 100, 1, " pts")]  # claim 5's resolved tag
HACK_CONTRAST_KEYS = [("peak_gap", "peak hacking gap", 1, 3, ""), ("d_saturation", "saturation", 1, 3, ""),
                     ("d_heldout", "held-out gold", 100, 1, " pts")]


def part2_runs(root: Path) -> dict[str, dict[str, dict[int, list[dict]]]]:
    """The finished part-2 runs the tables and the figures share, read once: ``gold`` (PART2), ``awm`` (PART2_AWM)
    and each proxy part (PART2_PROXY's keys, with their extra arms merged), and ``scale``: part -> its own runs for
    each part of PART2_SCALE and PART2_HACK_SCALE (with a size's step-size arms, PART2_SCALE_STEP)."""
    gold = load_runs(root, PART2)
    proxy = {part: load_runs(root, parts) for part, parts in PART2_PROXY.items()}
    # M's scale parts are the first parts of gold and of a proxy, whose arms they own (load_runs' first-part rule)
    first = {PART2[0]: gold} | {parts[0]: proxy[part] for part, parts in PART2_PROXY.items()}
    scale = {p: first[p] if p in first else load_runs(root, [p, *PART2_SCALE_STEP.get(p, [])])
             for p in (*PART2_SCALE.values(), *PART2_HACK_SCALE.values())}
    if not gold and not any(scale.values()):  # a scale part alone (e.g. only L rerun) still prints its rows
        sys.exit(f"no finished part-2 runs under {root} (parts {PART2 + [p for p in scale if p not in PART2]}); run "
                 f"`bash research/study.sh {root} part2`")
    return {"gold": gold, "awm": load_runs(root, [PART2_AWM]), "scale": scale} | proxy


def part2(root: Path, runs: dict[str, dict[str, dict[int, list[dict]]]], patience: int = 3) -> list[str]:
    """Every part-2 table and verdict from ``runs`` (``part2_runs``); ``patience``: the monitor early-stop rule
    replayed in the hacking tables."""
    arms = runs["gold"]
    order = ["grpo", "slas", "drgrpo", "grpo_global_std", "slas-gamma0.5", "slas-gamma2", MATCHED]
    order += sorted(a for a in arms if a not in order)
    out, verdicts = [], []
    if arms:
        out += ["## Part 2: the default recipe (DiffusionNFT) on the strict gold reward", "",
                *gold_arm_table(arms, order), "", "### Paired differences against DanceGRPO's estimator (same seeds)",
                "", *gold_paired_table(arms, order), "", matched_line(arms, GOLD_CONTRAST_KEYS), "",
                gamma_line(arms, GOLD_CONTRAST_KEYS), "",
                push_line(root, PART2, arms, order), "",
                "### Held-out strict accuracy per tag: change from iteration 0", "", *gold_tag_table(arms, order), ""]
        verdicts += gold_verdicts(arms)
    details = detail_arms(arms)
    if details:  # one option at a time against slas at its defaults
        out += ["### SLAS's open details: paired differences against slas at its defaults", "",
                *gold_paired_table(arms, ["slas", *details], ref="slas"), ""]
    other = [a for a in GAMMAS if a != "slas" and a in arms and "grpo" in arms]
    if other:  # the same claims at the sweep's other gammas: is a verdict a property of gamma 1 only?
        out += ["### The gold-reward claims at the other gammas (against DanceGRPO, paired)", "",
                *claim_lines([v for a in other for v in gold_verdicts(arms, arm=a, label=a.removeprefix("slas-"))])]
    awm = runs["awm"]
    if awm:
        out += [f"### Part 2 under the other forward-process objective: awm ({PART2_AWM})", "",
                *gold_arm_table(awm, ["grpo", "slas"]), "", *gold_paired_table(awm, ["grpo", "slas"]), "",
                "Held-out strict accuracy per tag under awm: change from iteration 0", "",
                *gold_tag_table(awm, ["grpo", "slas"]), ""]
        verdicts += gold_verdicts(awm, label="awm")
    probe = load_runs(root, [PART2_PROBE])
    if probe:
        out += [f"### Part 2 under a hackable proxy: the strength probe ({PART2_PROBE})", "", *probe_table(probe, patience), ""]
    for part in PART2_PROXY:
        hack = runs[part]
        if not hack:
            continue
        label = reward_label(root, part)
        hack_order = ["grpo", "slas"] + [a for a in order if a in hack and a not in ("grpo", "slas")]
        hack_order += sorted(a for a in hack if a not in hack_order)
        out += [f"### Part 2 under a hackable proxy: {label} ({part})", "", *arm_table(hack, hack_order), "",
                "Paired differences against DanceGRPO's estimator (same seeds):", "",
                *paired_table(hack, hack_order), "", matched_line(hack, HACK_CONTRAST_KEYS, run_stats), "",
                gamma_line(hack, HACK_CONTRAST_KEYS, run_stats), "",
                push_line(root, PART2_PROXY[part], hack, hack_order), ""]
        for arm in hack_order[:2]:
            out += [f"Per seed, {arm}:", "", *hack_table(hack, arm, patience), ""]
        verdicts.append(hack_verdict(hack, label))
    sizes = scale_pairs(root, PART2_SCALE, runs["scale"])
    if sizes:
        out += ["### Part 2 per model size (gold reward; M is the main comparison)", "", *gold_scale_table(sizes), "",
                "Does training hold its gains, per size:", "", *gold_scale_stability_table(sizes), ""]
    for size, part in PART2_SCALE.items():
        arms, parts = runs["scale"][part], [part, *PART2_SCALE_STEP.get(part, [])]
        step = [a for a in SCALE_PROBES if a in arms]
        if part in PART2_SCALE_STEP and step and {"grpo", "slas"} <= set(arms):  # the step, or which part of the shape?
            order = ["grpo", "slas", *step]
            push = push_line(root, parts, arms, order)
            out += [f"Step size and shape on {size} ({', '.join(parts[1:])}, paired with {part}'s seeds):", "",
                    *stability_arm_table(arms, order), "", *([push, ""] if push else [])]
            if MATCHED in arms:
                out += [matched_line(arms, GOLD_CONTRAST_KEYS), ""]
            if SLAS_STEP in arms:
                out += [f"SLAS at DanceGRPO's step size: {SLAS_STEP} − slas: "
                        f"{contrast(arms, SLAS_STEP, 'slas', GOLD_CONTRAST_KEYS)}; {SLAS_STEP} − grpo: "
                        f"{contrast(arms, SLAS_STEP, 'grpo', GOLD_CONTRAST_KEYS)}.", ""]
    verdicts.append(scale_verdict(sizes))
    hack_sizes = scale_pairs(root, PART2_HACK_SCALE, runs["scale"], run_stats)
    if hack_sizes:
        label = reward_label(root, PART2_HACK_SCALE[next(iter(hack_sizes))])  # the smallest size's runs
        out += [f"### Part 2 per model size under {label} (M is part2_hack)", "", *hack_scale_table(hack_sizes), ""]
        verdicts.append(scale_verdict(hack_sizes, label, "peak_gap", -1, "peak hacking gap", 1, 3, ""))
    if not any(runs[part] for part in PART2_PROXY):
        verdicts.append("3. less reward hacking: not tested in part 2 (no proxy runs)")
    verdicts.sort(key=lambda v: int(v.split(".")[0]))  # claims in the paper's order (stable within one claim)
    return out + ["### Verdicts (SLAS − DanceGRPO, paired 95% t intervals)", "", *claim_lines(verdicts)]


def claim_lines(verdicts: list[str]) -> list[str]:
    """Verdict lines ("3. less reward hacking ...") as paragraphs with a bold claim number: as a Markdown ordered
    list, "1. 2. 3. 3. 4. 5." would render renumbered 1 to 6."""
    out = []
    for v in verdicts:
        n, _, rest = v.partition(". ")
        out += [f"**{n}.** {rest}", ""]
    return out


def save_grid(src: Path, dst: Path) -> None:
    """A copy of one of `slas compare`'s side-by-side sample grids, in a 64-colour palette (ShapesWorld images are a
    handful of flat colours, so the copy stays small)."""
    from PIL import Image

    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.open(src).convert("RGB").quantize(64).save(dst, optimize=True)


def part2_plots(root: Path, runs: dict[str, dict[str, dict[int, list[dict]]]], out: Path) -> None:
    """study2_gold.png (the gold arms' held-out and in-domain curves), study2_hack.png and study2_pref.png (the
    toy_biased and toy_pref arms' proxy, out-of-domain gold and saturation), study2_estimators.png and
    study2_gamma.png (the other estimators and the gamma axis, gold reward; ``_hack`` under toy_biased) and
    study2_details.png (SLAS's open details against its defaults, gold reward) and study2_awm.png (the main arms
    under awm) once those runs exist, and the last evaluation's sample grids of the gold, awm, toy_biased and
    toy_pref comparisons and of ``L`` on the gold reward, whose curves (with the training reward and debris) are
    study2_scale_L.png (``runs``: ``part2_runs``)."""
    gold, awm, hack, pref = runs["gold"], runs["awm"], runs["part2_hack"], runs["part2_pref"]
    if gold:
        plot(gold, ["grpo", "slas", MATCHED], out / "study2_gold.png", GOLD_PANELS)
    if awm:
        plot(awm, ["grpo", "slas"], out / "study2_awm.png", GOLD_PANELS)
    if hack:
        plot(hack, ["grpo", "slas", MATCHED], out / "study2_hack.png", HACK_PANELS)
    for arms, suffix, panels in ((gold, "", GOLD_PANELS), (hack, "_hack", HACK_PANELS)):
        for name, order in (("estimators", ESTIMATORS), ("gamma", GAMMA_AXIS)):
            if len([a for a in order if a in arms]) > 2:  # more than the main comparison's two arms
                plot(arms, order, out / f"study2_{name}{suffix}.png", panels)
    details = detail_arms(gold)
    if details:
        plot(gold, ["slas", *details], out / "study2_details.png", GOLD_PANELS)
    if pref:
        plot(pref, ["grpo", "slas", MATCHED], out / "study2_pref.png",
             [("monitor/proxy_id", "proxy (toy_pref), in-domain"), *HACK_PANELS[1:]])
    large = runs["scale"][PART2_SCALE["L"]]
    if {"grpo", "slas"} <= set(large):  # does training hold its gains on L (and its step-size arms, if run)?
        plot(large, ["grpo", "slas", *SCALE_PROBES], out / "study2_scale_L.png",
             [*GOLD_PANELS, ("train/reward_mean", "training reward (the gold)"), ("eval/debris", "debris, held-out")])
    for part, stem in (("part2_main", "study2_grid"), (PART2_AWM, "study2_awm_grid"),
                       ("part2_hack", "study2_hack_grid"), ("part2_pref", "study2_pref_grid"),
                       (PART2_SCALE["L"], "study2_scale_L_grid")):
        grids = sorted((root / part / "grids").glob("iter_*.png"))
        if grids:
            it = int(grids[-1].stem.removeprefix("iter_"))
            save_grid(grids[-1], out / f"{stem}_iter_{it}.png")


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
    has_scale = any((root / p / "runs").is_dir() for p in SCALE_PARTS.values() if p != "main")
    if not arms and not has_scale:
        sys.exit(f"no finished runs under {root}")
    main_order = ["grpo", "slas", "drgrpo", "grpo_global_std"]
    # grpo_global_std is the linear end of the gamma axis (SLAS at gamma 0 with batch_std_of=rewards)
    ablation = ["grpo_global_std", "slas-gamma0.5", "slas", "slas-gamma2", "slas-recenterTrue", "slas-normalizeafter",
                "slas-batch_std_ofrewards"]
    ablation += sorted(a for a in arms if a not in main_order + ablation)  # any other swept arm found
    out = [] if not arms else ["## Estimators (configs/toy_hack.yaml)", "", *arm_table(arms, main_order), "",
           "### Paired differences against DanceGRPO (same seeds)", "", *paired_table(arms, main_order), "",
           "### SLAS against the linear batch-std estimator (what the power adds)", "",
           *paired_table(arms, ["slas"], ref="grpo_global_std"), "",
           "### Does DanceGRPO hack reliably?", "", *hack_table(arms), "",
           "### Held-out strict accuracy per tag at the end (%)", "", *tag_table(arms, main_order), "",
           "## SLAS ablations (gamma and the undetermined options)", "", *arm_table(arms, ablation), "",
           "### Paired differences against SLAS at its defaults", "", *paired_table(arms, ablation, ref="slas")]
    if has_scale:  # a part of the scale comparison alone (e.g. only scale_L rerun) prints its rows
        out += ["", "## Model scale: SLAS vs DanceGRPO on S, M and L (same config)", "", *scale_table(root)]
    text = "\n".join(out) + "\n"
    print(text)
    if args.md:
        Path(args.md).write_text(text)
    if args.plots and arms:
        plot(arms, main_order, Path(args.plots) / "study_curves.png")
        plot(arms, ablation[:4], Path(args.plots) / "study_gamma.png")
        grids = sorted((root / "main" / "grids").glob("iter_*.png"))
        for g in grids[:1] + grids[-1:]:  # slas compare's side-by-side grids, first and last evaluation
            save_grid(g, Path(args.plots) / f"study_grid_{g.stem}.png")


if __name__ == "__main__":
    main()
