"""Wilson intervals and the "resolved" rule behind every printed accuracy, and the t intervals over training seeds
(slas.evals.stats)."""

import math

import pytest

from slas.evals.stats import MIN_N, format_proportion, paired_bootstrap, resolved, welch, wilson


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
