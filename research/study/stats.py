"""The per-run quantities of the study's tables (``run_stats`` under a hackable proxy, ``gold_stats`` on the gold
reward; fractions, not percent) and their intervals over seeds: Student-t (slas.evals.stats), of one arm (``fmt``)
or paired by seed (``paired``, ``contrast``)."""

from __future__ import annotations

import functools
import math
import statistics

from slas.evals.stats import ci_text, t_interval
from slas.recipe.metrics import best_value, first_value, last_value, series
from slas.toyworld.monitor import should_stop

TAGS = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
EARLY = 8  # iterations 1..EARLY: the "speed" window of the training reward
RISES = (0.05, 0.10)  # part 2: iterations until the held-out strict accuracy reaches iteration 0's + these
DROP = 0.05  # a training reward whose last 20 iterations sit this far below its best 10-iteration mean "fell back"


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
    out["reward_drop"] = reward_drop(rows)  # how far training fell back
    for rise in RISES:
        out[f"to_{round(100 * rise)}"] = reach(rows, rise)
    for t in TAGS:
        out[f"tag_{t}"] = last(f"eval/strict/{t}")
        out[f"d_tag_{t}"] = last(f"eval/strict/{t}") - first(f"eval/strict/{t}")
    return out


def reward_blocks(rows: list[dict]) -> list[tuple[int, float]]:
    """The training reward's 10-iteration means: (index of the block's first logged iteration in the reward series,
    its mean), blocks of 10 consecutive logged iterations from the first (the last may be shorter)."""
    rew = series(rows, "train/reward_mean")
    return [(i, statistics.fmean(v for _, v in rew[i:i + 10])) for i in range(0, len(rew), 10)]


def reward_drop(rows: list[dict]) -> float:
    """How far the training reward fell back: its best 10-iteration mean minus its mean over the last 20 iterations
    (NaN with no training reward). More than DROP is "fell back"."""
    rew = series(rows, "train/reward_mean")
    blocks = reward_blocks(rows)
    if not blocks:
        return math.nan
    return max(m for _, m in blocks) - sum(v for _, v in rew[-20:]) / len(rew[-20:])


def fall_back_start(rows: list[dict]) -> int | None:
    """The iteration where the training reward starts to fall back for good: the first iteration after its best
    10-iteration block (``reward_blocks``) from which the trailing 10-iteration mean stays more than DROP below that
    block's mean to the end of the run; None when it never falls that far or comes back within DROP. The trailing
    mean (not single iterations, whose batch noise would reset the mark) is the same window as the blocks'."""
    rew = series(rows, "train/reward_mean")
    blocks = reward_blocks(rows)
    if not blocks:
        return None
    start, best = max(blocks, key=lambda b: b[1])
    low = [statistics.fmean(v for _, v in rew[max(0, k - 9):k + 1]) < best - DROP for k in range(len(rew))]
    mark = None
    for k in range(len(rew) - 1, start + 9, -1):  # back from the end while the trailing mean stays low
        if not low[k]:
            break
        mark = rew[k][0]
    return mark


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


def fell_back(stats: list[dict]) -> str:
    """"k of n": the runs (``gold_stats``) whose training reward fell back more than DROP from its best."""
    return f"{sum(r['reward_drop'] > DROP for r in stats)} of {len(stats)}"


def fmt(values: list[float], scale: float = 1.0, digits: int = 3, sign: bool = False) -> str:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return "–"
    ci = t_interval(vals)
    s = f"{scale * ci['mean']:+.{digits}f}" if sign else f"{scale * ci['mean']:.{digits}f}"
    return s if math.isnan(ci["half"]) else f"{s} ± {scale * ci['half']:.{digits}f}"


def side(ci: dict) -> int:
    """+1 / -1 when the 95% interval excludes 0 on that side, 0 otherwise (or too few pairs)."""
    lo, hi = ci["ci"] if ci["n"] >= 2 else (math.nan, math.nan)
    return 1 if lo > 0 else -1 if hi < 0 else 0


def iteration_text(it: float) -> str:
    return "never" if math.isnan(it) else f"it. {it:.0f}"


def paired(arms: dict[str, dict[int, list[dict]]], arm: str, ref: str, keys: list[str], stats=None) -> dict[str, dict]:
    """key -> t interval of the paired differences arm - ref of ``stats(rows)`` (default ``gold_stats``) over the
    seeds both ran (NaN differences, e.g. a target one run never reached, are dropped)."""
    stats = stats or gold_stats
    seeds = sorted(set(arms.get(arm, {})) & set(arms.get(ref, {})))
    a = {s: stats(arms[arm][s]) for s in seeds}
    b = {s: stats(arms[ref][s]) for s in seeds}
    return {k: t_interval([a[s][k] - b[s][k] for s in seeds]) for k in keys}


def contrast(arms: dict[str, dict[int, list[dict]]], arm: str, ref: str, keys: list[tuple[str, str, float, int, str]],
             stats=gold_stats) -> str:
    """``arm`` − ``ref`` paired by seed, one "name mean ± half unit (n)" per key of ``keys``."""
    d = paired(arms, arm, ref, [k for k, *_ in keys], stats)
    return ", ".join(f"{name} {ci_text(d[k], sc, dg, unit)}" for k, name, sc, dg, unit in keys)
