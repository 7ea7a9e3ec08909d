"""Wilson intervals and the "resolved" rule behind every printed accuracy, the t intervals over training seeds, the
(cluster-robust) mean interval and the paired bootstrap of `slas eval` (slas.evals.stats)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slas.evals.stats import MIN_N, format_proportion, mean_ci, paired_bootstrap, resolved, welch, wilson


@pytest.mark.parametrize("k, n, lo, hi", [
    (0, 4, 0.0, 0.4899),      # never [0, 0] at k = 0
    (4, 4, 0.5101, 1.0),
    (5, 10, 0.2366, 0.7634),
    (1, 10, 0.0179, 0.4042),
    (30, 72, 0.3099, 0.5319),
    (50, 100, 0.4038, 0.5962),
])
def test_wilson_matches_known_values(k, n, lo, hi):
    assert wilson(k, n) == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_edges():
    assert all(math.isnan(x) for x in wilson(0, 0))
    with pytest.raises(ValueError):
        wilson(5, 4)
    assert wilson(2.5, 10) == pytest.approx(wilson(25, 100, z=1.959963984540054 * math.sqrt(10)), abs=1e-12)
    assert format_proportion(30 / 72, 72) == "41.7% [31.0%, 53.2%] (n=72)"
    assert format_proportion(0.5, 10, ", iteration 4") == "50.0% [23.7%, 76.3%] (n=10, iteration 4)"


def test_resolved_needs_min_n_and_separated_intervals():
    assert MIN_N == 100
    assert not resolved(0.317, 72, 0.417, 72)  # the 31.7% -> 41.7% on 72 images
    assert not resolved(0.1, 50, 0.9, 50)  # disjoint intervals, but below the minimum n
    assert resolved(0.3, 144, 0.6, 144)
    assert not resolved(0.40, 300, 0.45, 300)  # overlapping Wilson intervals
    # a paired interval decides when there is one: pairing can resolve what overlapping intervals cannot
    assert resolved(0.40, 300, 0.45, 300, paired_ci=[0.01, 0.09])
    assert not resolved(0.3, 144, 0.6, 144, paired_ci=[-0.01, 0.5])


def test_paired_bootstrap_is_paired_and_degenerate_at_tiny_n():
    """The property that makes a per-tag interval at n = 4 useless: identical pairs give [0, 0]."""
    r = paired_bootstrap([0, 0, 0, 0], [0, 0, 0, 0], clusters=[0, 1, 2, 3], n_boot=200)
    assert r["ci95"] == [0.0, 0.0]
    a = [0, 1] * 100
    b = [1, 1] * 100  # B fixes every A failure
    r = paired_bootstrap(a, b, clusters=list(range(200)), n_boot=500)
    assert r["diff"] == pytest.approx(0.5) and 0.4 < r["ci95"][0] < 0.5 < r["ci95"][1] < 0.6


def test_welch_matches_hand_computed_intervals():
    # means 2 and 1; v = s^2 / n = 2 / 2 = 1 on each side; df = (1 + 1)^2 / (1 / 1 + 1 / 1) = 2; t_{0.975, 2} = 4.3027
    w = welch([1.0, 3.0], [0.0, 2.0])
    assert w["mean"] == 1.0 and w["n"] == 2
    assert w["half"] == pytest.approx(4.3027 * math.sqrt(2), abs=1e-3)
    assert w["ci"] == pytest.approx([1.0 - w["half"], 1.0 + w["half"]])
    # no spread in b: v_b = 0 and df = n_a - 1 = 4; v_a = 2.5 / 5 = 0.5; t_{0.975, 4} = 2.7764
    w = welch([1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.0, 0.0])
    assert w["mean"] == 3.0 and w["n"] == 3 and w["half"] == pytest.approx(2.7764 * math.sqrt(0.5), abs=1e-3)
    # unequal spreads: v = 1/3 and 1/9, df = (4/9)^2 / ((1/3)^2 / 2 + (1/9)^2 / 2) = 3.2, t_{0.975, 3.2} = 3.0728
    w = welch([1.0, 2.0, 3.0], [0.0, 0.0, 1.0])
    assert w["mean"] == pytest.approx(5 / 3) and w["half"] == pytest.approx(3.0728 * 2 / 3, abs=1e-3)


def test_welch_edges():
    assert welch([1.0, 3.0, math.nan], [0.0, 2.0]) == welch([1.0, 3.0], [0.0, 2.0])  # NaN dropped, as t_interval
    one = welch([1.0], [0.0, 1.0])  # one run: no spread, no interval (not an error)
    assert one["mean"] == 0.5 and one["n"] == 1 and math.isnan(one["half"])
    none = welch([math.nan], [0.0, 1.0])
    assert none["n"] == 0 and math.isnan(none["mean"]) and math.isnan(none["half"])
    flat = welch([1.0, 1.0], [0.0, 0.0])  # no spread on either side: a zero-width interval
    assert flat == {"mean": 1.0, "half": 0.0, "ci": [1.0, 1.0], "n": 2}


def test_mean_ci_is_the_usual_interval_and_cluster_robust():
    rng = np.random.default_rng(0)
    y = rng.normal(size=40)
    r = mean_ci(y)
    se = y.std(ddof=1) / math.sqrt(40)
    assert r["se"] == pytest.approx(se) and r["ci95"] == pytest.approx([y.mean() - 1.959964 * se, y.mean() + 1.959964 * se])
    clusters = np.repeat(np.arange(10), 4)  # 10 prompts x 4 images: SE of the mean = sd(prompt means) / sqrt(10)
    means = y.reshape(10, 4).mean(1)
    assert mean_ci(y, clusters)["se"] == pytest.approx(means.std(ddof=1) / math.sqrt(10))
    assert math.isnan(mean_ci([1.0, 2.0], ["p", "p"])["se"])
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([1.0, float("nan")])


def test_paired_bootstrap_known_cases():
    a, b = [0, 1, 0, 1, 1, 0], [0, 1, 0, 1, 1, 0]
    same = paired_bootstrap(a, b, clusters=range(6), n_boot=200)
    assert same["diff"] == 0 and same["ci95"] == [0.0, 0.0]  # paired: identical results have no spread
    up = paired_bootstrap([0] * 6, [1] * 6, clusters=range(6), n_boot=200)
    assert up["diff"] == 1 and up["ci95"] == [1.0, 1.0]
    # two strata weigh equally whatever their sizes: (1/4 + 1) / 2
    r = paired_bootstrap([0, 0, 0, 0, 0], [1, 0, 0, 0, 1], clusters=range(5), strata=["x", "x", "x", "x", "y"],
                         n_boot=2000, seed=1)
    assert r["diff"] == pytest.approx(0.625) and r["per_stratum"]["x"]["diff"] == pytest.approx(0.25)
    # y is fixed at 1; x's replicate is k/4 with k ~ Binomial(4, 1/4) draws of its one success: P(k = 0) = 32% and
    # P(k >= 3) = 5.1% > 2.5% > P(k = 4) = 0.4%, so the interval is [(0 + 1) / 2, (3/4 + 1) / 2]
    assert r["ci95"] == pytest.approx([0.5, 0.875])
    assert r == paired_bootstrap([0, 0, 0, 0, 0], [1, 0, 0, 0, 1], clusters=range(5),
                                 strata=["x", "x", "x", "x", "y"], n_boot=2000, seed=1)  # seeded: reproducible
    # images of one prompt move together: one prompt with two images is one draw
    c = paired_bootstrap([0, 0, 0], [1, 1, 0], clusters=["p", "p", "q"], n_boot=2000)
    assert c["diff"] == pytest.approx(2 / 3) and c["ci95"] == pytest.approx([0.0, 1.0])
