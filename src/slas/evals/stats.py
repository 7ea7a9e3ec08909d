"""Confidence intervals for evaluation results: a mean over images, and the difference of two paired evaluations.

Images of one prompt are not independent samples of the benchmark (they share the prompt's difficulty), so both
intervals treat the *prompt* as the unit of resampling (a cluster), not the image. With one image per prompt this is
the ordinary i.i.d. interval.

Over a few training runs (one number per seed), ``t_interval`` is the Student-t interval of a mean and ``welch`` that of
the difference of two independent groups of runs; ``ci_text`` writes either as ``+mean ± half``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["MIN_N", "Z95", "ci_text", "format_proportion", "mean_ci", "paired_bootstrap", "resolved", "t_interval", "welch",
           "wilson"]

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal
# The fewest images behind an accuracy for a difference of two accuracies to be presented as a gain or a loss:
# below it the CLI prints "n too small" / "not resolved" (at n = 100 a Wilson interval is still about +-10 points).
MIN_N = 100


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (95% by default) of a proportion of ``k`` successes in ``n`` trials.

    ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``p = k/n``. Unlike the normal interval it
    never collapses to a point at ``k = 0`` or ``k = n`` (k=0, n=4 gives [0, 0.490]) and stays inside [0, 1].
    ``k`` may be fractional (an accuracy times its n). ``n = 0`` gives (nan, nan).
    """
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= k <= n:
        raise ValueError(f"wilson: need 0 <= k <= n, got k={k}, n={n}")
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def format_proportion(p: float, n: int, note: str = "") -> str:
    """``41.7% [31.0%, 53.2%] (n=72)``: a proportion with its n and its Wilson 95% interval (``note`` goes after
    the n: ``(n=72, iteration 4)``)."""
    lo, hi = wilson(p * n, n)
    return f"{p:.1%} [{lo:.1%}, {hi:.1%}] (n={n}{note})"


def resolved(p_a: float, n_a: int, p_b: float, n_b: int, paired_ci: Sequence[float] | None = None,
             min_n: int = MIN_N) -> bool:
    """Whether accuracy ``p_b`` (over ``n_b`` images) differs from ``p_a`` (over ``n_a``) clearly enough to be shown as
    a gain or a loss: both n at least ``min_n``, and the paired 95% interval of ``B - A`` (``paired_bootstrap``, when
    per-image results are available) excluding 0, or without one, the two Wilson intervals disjoint (conservative:
    it ignores the pairing)."""
    if min(n_a, n_b) < min_n:
        return False
    if paired_ci is not None:
        return paired_ci[0] > 0 or paired_ci[1] < 0
    (lo_a, hi_a), (lo_b, hi_b) = wilson(p_a * n_a, n_a), wilson(p_b * n_b, n_b)
    return hi_a < lo_b or hi_b < lo_a


def mean_ci(values: Sequence[float], clusters: Sequence[Hashable] | None = None, z: float = Z95) -> dict:
    """Mean of ``values`` with a normal-approximation confidence interval (95% by default).

    With clusters (e.g. the prompt of each image) the standard error is the cluster-robust one of a mean,
    ``SE^2 = P / (P - 1) * sum_c (S_c - n_c * mean)^2 / N^2`` (``S_c``, ``n_c``: sum and size of cluster c, ``P``
    clusters, ``N`` values); with equal cluster sizes it is ``sd(cluster means) / sqrt(P)``, and with one value per
    cluster the usual ``sd / sqrt(N)``. Fewer than two clusters give a NaN interval.

    Returns ``{"mean", "se", "ci95": [lo, hi], "sd", "n", "n_clusters"}`` (``ci95`` holds the ``z`` interval).
    """
    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError("values must be a non-empty 1-d sequence of numbers")
    if not np.isfinite(y).all():
        raise ValueError(f"values hold {int((~np.isfinite(y)).sum())} NaN or infinite entries")
    labels = list(range(len(y))) if clusters is None else list(clusters)
    if len(labels) != len(y):
        raise ValueError(f"{len(y)} values but {len(labels)} cluster labels")
    index: dict[Hashable, int] = {}
    ids = np.array([index.setdefault(c, len(index)) for c in labels])
    P, N = len(index), len(y)
    mean = float(y.mean())
    sums = np.bincount(ids, weights=y, minlength=P)
    sizes = np.bincount(ids, minlength=P)
    se = math.sqrt(P / (P - 1) * float(((sums - sizes * mean) ** 2).sum()) / N**2) if P > 1 else math.nan
    return {"mean": mean, "se": se, "ci95": [mean - z * se, mean + z * se], "sd": float(y.std(ddof=1)) if N > 1 else math.nan,
            "n": N, "n_clusters": P}


def t_interval(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean of a few independent replicates (e.g. one number per training seed) with Student's t interval.

    ``half = t_{(1 + level) / 2, n - 1} * sd / sqrt(n)`` (sd with ddof 1): exact for normal replicates, and with
    3-10 seeds much wider than the normal interval (t = 4.30 at n = 3, 2.78 at n = 5). NaN values are dropped;
    fewer than two left give a NaN half-width. Returns ``{"mean", "half", "ci": [lo, hi], "n"}``.
    """
    from scipy.stats import t as student_t

    y = np.asarray(values, dtype=np.float64)
    y = y[np.isfinite(y)]
    n = len(y)
    if n == 0:
        return {"mean": math.nan, "half": math.nan, "ci": [math.nan, math.nan], "n": 0}
    mean = float(y.mean())
    half = float(student_t.ppf((1 + level) / 2, n - 1) * y.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return {"mean": mean, "half": half, "ci": [mean - half, mean + half], "n": n}


def ci_text(ci: dict, sc: float = 1, digits: int = 3, unit: str = "", n: bool = True) -> str:
    """``+mean ± half unit (n = N)`` of a t interval, scaled; no ``± half`` where there is no spread (one pair),
    ``–`` where there is nothing to pair (e.g. no seed where both runs reached a target)."""
    if not ci["n"]:
        return "–" + (" (n = 0)" if n else "")
    half = "" if math.isnan(ci["half"]) else f" ± {sc * ci['half']:.{digits}f}"
    return f"{sc * ci['mean']:+.{digits}f}{half}{unit}" + (f" (n = {ci['n']})" if n else "")


def paired_bootstrap(a: Sequence[float], b: Sequence[float], clusters: Sequence[Hashable],
                     strata: Sequence[Hashable] | None = None, n_boot: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Paired, stratified cluster bootstrap of ``B - A`` for a score that is a mean of per-stratum means.

    ``a[i]`` and ``b[i]`` score the same image (same prompt and seed) under two models. The score of a model is the
    unweighted mean over strata (GenEval: tags) of the mean over that stratum's images; without strata, the mean over
    all images. Each replicate resamples, within every stratum, its clusters (prompts) with replacement and keeps
    every image of a drawn prompt under both models, so the pairing (and the correlation it removes) is kept. The
    interval is the percentile interval of the replicates; the seed makes it reproducible.

    Returns ``{"a", "b", "diff", "ci95": [lo, hi], "per_stratum": {s: {"a", "b", "diff", "ci95", "n", "n_clusters"}},
    "n_boot", "seed", "level"}``; ``ci95`` holds the ``level`` interval.
    """
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = len(va)
    if va.shape != (n,) or vb.shape != (n,) or n == 0:
        raise ValueError(f"a and b must be non-empty 1-d sequences of the same length, got {va.shape} and {vb.shape}")
    if not (np.isfinite(va).all() and np.isfinite(vb).all()):
        raise ValueError("a and b must be finite")
    if len(clusters) != n or (strata is not None and len(strata) != n):
        raise ValueError(f"{n} pairs but {len(clusters)} cluster labels and {n if strata is None else len(strata)} strata")
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"n_boot must be >= 1 and level in (0, 1), got {n_boot}, {level}")
    strata = ["all"] * n if strata is None else list(strata)
    rng = np.random.default_rng(seed)
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    per: dict[Hashable, dict] = {}
    reps = []  # per stratum: [n_boot] replicate differences
    means_a, means_b = [], []
    for s in dict.fromkeys(strata):  # first-appearance order
        rows = [i for i in range(n) if strata[i] == s]
        index: dict[Hashable, int] = {}
        ids = np.array([index.setdefault(clusters[i], len(index)) for i in rows])
        P = len(index)
        sa = np.bincount(ids, weights=va[rows], minlength=P)  # [P] per-cluster sums
        sb = np.bincount(ids, weights=vb[rows], minlength=P)
        cnt = np.bincount(ids, minlength=P).astype(np.float64)
        draw = rng.integers(0, P, size=(n_boot, P))  # [n_boot, P] cluster indices
        tot = cnt[draw].sum(1)
        rep = (sb[draw].sum(1) - sa[draw].sum(1)) / tot  # [n_boot]
        ma, mb = float(sa.sum() / cnt.sum()), float(sb.sum() / cnt.sum())
        lo, hi = np.percentile(rep, q)
        per[s] = {"a": ma, "b": mb, "diff": mb - ma, "ci95": [float(lo), float(hi)], "n": len(rows), "n_clusters": P}
        reps.append(rep)
        means_a.append(ma)
        means_b.append(mb)
    overall = np.mean(reps, axis=0)
    lo, hi = np.percentile(overall, q)
    ma, mb = float(np.mean(means_a)), float(np.mean(means_b))
    return {"a": ma, "b": mb, "diff": mb - ma, "ci95": [float(lo), float(hi)], "per_stratum": per, "n_boot": n_boot,
            "seed": seed, "level": level}


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """``mean(a) - mean(b)`` of two independent samples (e.g. the runs of two model sizes) with Welch's t interval.

    ``half = t_{(1 + level) / 2, df} * sqrt(v_a + v_b)`` with ``v = s^2 / n`` (s with ddof 1) and the
    Welch-Satterthwaite ``df = (v_a + v_b)^2 / (v_a^2 / (n_a - 1) + v_b^2 / (n_b - 1))`` (Welch 1947): unlike the
    pooled t interval it does not assume equal variances. NaN values are dropped, as in ``t_interval``; a side with
    fewer than two values left gives a NaN half-width, and no spread on either side a half-width of 0. Returns
    ``{"mean", "half", "ci": [lo, hi], "n"}`` like ``t_interval``, ``n`` the smaller sample's size.
    """
    from scipy.stats import t as student_t

    a, b = ([v for v in x if math.isfinite(v)] for x in (a, b))
    n = min(len(a), len(b))
    mean = statistics.fmean(a) - statistics.fmean(b) if n else math.nan
    if n < 2:  # no spread to estimate
        return {"mean": mean, "half": math.nan, "ci": [math.nan, math.nan], "n": n}
    va, vb = (statistics.variance(x) / len(x) for x in (a, b))
    if va + vb == 0:
        return {"mean": mean, "half": 0.0, "ci": [mean, mean], "n": n}
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(student_t.ppf((1 + level) / 2, df) * math.sqrt(va + vb))
    return {"mean": mean, "half": half, "ci": [mean - half, mean + half], "n": n}
