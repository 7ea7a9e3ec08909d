"""Part 2's one-line paired contrasts: SLAS against DanceGRPO's estimator at SLAS's step size (``MATCHED``), the
gamma sweep's ends, and each arm's push on nft's r (the step size the control matches)."""

from __future__ import annotations

import statistics
from pathlib import Path

from slas.config import load_config
from slas.recipe.metrics import series

from .runs import GAMMA_AXIS, GAMMAS, MATCHED, configs
from .stats import contrast, fmt, gold_stats

GOLD_CONTRAST_KEYS = [("d_id", "in-domain", 100, 1, " pts"), ("d_heldout", "held-out", 100, 1, " pts"),
                     ("auc", "mean held-out gain", 100, 1, " pts"), ("auc_id", "mean in-domain gain", 100, 1, " pts"),
                     ("d_tag_color_attr", "colour attribution", 100, 1, " pts")]  # claim 5's resolved tag
HACK_CONTRAST_KEYS = [("peak_gap", "peak hacking gap", 1, 3, ""), ("d_saturation", "saturation", 1, 3, ""),
                     ("d_heldout", "held-out gold", 100, 1, " pts")]


def matched_line(arms: dict[str, dict[int, list[dict]]], keys: list[tuple[str, str, float, int, str]],
                 stats=gold_stats) -> str:
    """SLAS against DanceGRPO's estimator at SLAS's step size (``MATCHED``) and that control against grpo: is a
    difference between slas and grpo the step size? ``keys``: (key, name, scale, digits, unit)."""
    if MATCHED not in arms or "slas" not in arms:
        return f"Step-size control ({MATCHED}): not run yet."
    return (f"Step-size control: slas − {MATCHED} (DanceGRPO's estimator with r moving as far as SLAS's): "
            f"{contrast(arms, 'slas', MATCHED, keys, stats)}; {MATCHED} − grpo: "
            f"{contrast(arms, MATCHED, 'grpo', keys, stats)}.")


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
        cfg = next((c for part in parts for c in configs(root, part, f"{arm}_s*")), None)
        conf = load_config(cfg) if cfg else None
        if conf is None or conf.train.objective != "nft":
            continue
        adv = [[v for _, v in series(rows, "train/adv_abs_mean")] for rows in arms[arm].values()]
        runs = [statistics.fmean(a) / (2 * conf.forward.r_scale) for a in adv if a]  # runs that logged it
        if runs:
            push.append(f"{arm} {fmt(runs, 1, 4)}")
    return "Push on nft's r (mean |r − 1/2| over the run, before the clamp): " + ", ".join(push) + "." if push else ""
