"""SLAS's options that bound the push as groups saturate (batch_std_of informative / half_range, normalize
after_informative, sigma_decay): hand-computed tables, the estimator state, and the options' config messages."""

from __future__ import annotations

import math

import pytest
import torch

from slas.algo.advantages import compute, compute_with_state, compute_with_stats, options, validate

F64 = torch.float64

# Three groups of four: a split group, a saturated one (zero spread) and a 3-of-4 group.
#   r - mean_g = [-1/2, -1/2, 1/2, 1/2 | 0, 0, 0, 0 | -3/4, 1/4, 1/4, 1/4];  sum of squares 1 + 9/16 + 3/16 = 7/4
R3 = torch.tensor([0.0, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1], dtype=F64)
G3 = torch.arange(3).repeat_interleave(4)
INF3 = torch.tensor([True] * 4 + [False] * 4 + [True] * 4)
# sign(c) c^2 in sixteenths: [-4, -4, 4, 4 | 0 x 4 | -9, 1, 1, 1]
SQ16 = [-4.0, -4, 4, 4, 0, 0, 0, 0, -9, 1, 1, 1]


def close(a: torch.Tensor, expected: list[float], rtol: float = 1e-6) -> None:  # eps 1e-8 (relative) enters
    torch.testing.assert_close(a, torch.tensor(expected, dtype=a.dtype), rtol=rtol, atol=1e-12)


def test_centered_default_counts_the_saturated_groups_zeros():
    # sigma_B^2 = (7/4) / 12 = 7/48 -> A = sign(c) c^2 x 48/7
    close(compute("slas", R3, G3), [x / 16 * 48 / 7 for x in SQ16])


def test_batch_std_of_informative_table():
    # the 8 informative samples only: sigma^2 = (7/4) / 8 = 7/32 -> A = sign(c) c^2 x 32/7 = [-8/7, .., -18/7, 2/7, ..]
    a, stats = compute_with_stats("slas", R3, G3, batch_std_of="informative")
    close(a, [x / 16 * 32 / 7 for x in SQ16])
    assert stats["batch_std"] == pytest.approx(math.sqrt(7 / 32), rel=1e-12)
    # a saturated group changes nothing: drop it and the advantages of the others are the same
    keep = ~(G3 == 1)
    close(compute("slas", R3[keep], G3[keep], batch_std_of="informative"), [x / 16 * 32 / 7 for x in SQ16 if x])
    # with every group informative it is the default
    close(compute("slas", R3[keep], G3[keep], batch_std_of="informative"),
          compute("slas", R3[keep], G3[keep]).tolist())


def test_batch_std_of_half_range_table():
    # range 1 -> sigma 1/2 -> A = sign(c) c^2 / (1/4) = 4 sign(c) c^2 = [-1, -1, 1, 1 | 0 | -9/4, 1/4, 1/4, 1/4]
    a, stats = compute_with_stats("slas", R3, G3, batch_std_of="half_range")
    close(a, [x / 4 for x in SQ16])
    assert stats["batch_std"] == 0.5
    # scale and shift invariant, and bounded by 2^(1 + gamma) whatever the batch (|c| <= range = 2 sigma)
    close(compute("slas", 3 * R3 - 7, G3, batch_std_of="half_range"), [x / 4 for x in SQ16])
    r = torch.tensor([0.0, 1, 1, 1, 1, 1, 1, 1], dtype=F64)  # one failure among 8: c = -7/8 -> A = -4 x 49/64
    g = torch.zeros(8, dtype=torch.long)
    close(compute("slas", r, g, batch_std_of="half_range", gamma=2.0, adv_clip=None),
          [-8 * (7 / 8) ** 3] + [8 * (1 / 8) ** 3] * 7)
    assert compute("slas", r, g, batch_std_of="half_range", adv_clip=None).abs().max() <= 4


def test_normalize_after_informative_table():
    # shaped values A' = sign(c) c^2 = SQ16 / 16. Over the 8 informative samples (in sixteenths): mean -6/8 = -3/4,
    # mean square 148/8 = 37/2, var 37/2 - 9/16 = 287/16 -> std sqrt(287) / 4 (sixteenths)
    s_inf = math.sqrt(287) / 4
    a, stats = compute_with_stats("slas", R3, G3, normalize="after_informative")
    close(a, [x / s_inf for x in SQ16])
    assert stats["batch_std"] == pytest.approx(s_inf / 16, rel=1e-12)
    assert a[INF3].std(correction=0).item() == pytest.approx(1.0, rel=1e-12)  # unit std where it trains
    # "after" counts the four zeros: mean -6/12, mean square 148/12, var 148/12 - 1/4 = 145/12
    s_all = math.sqrt(145 / 12)
    close(compute("slas", R3, G3, normalize="after"), [x / s_all for x in SQ16])
    assert s_all < s_inf  # the zeros shrink "after"'s std, so its informative advantages are larger


def test_sigma_decay_is_a_decaying_running_max():
    sigma1 = math.sqrt(7 / 48)
    # iteration 1: no history, plain SLAS; the state is the sigma it divided by
    a, stats, state = compute_with_state("slas", R3, G3, {}, sigma_decay=0.9)
    close(a, compute("slas", R3, G3).tolist())
    assert state == {"sigma": pytest.approx(sigma1, rel=1e-15)} and stats["batch_std"] == state["sigma"]
    # iteration 2: the split group saturates too, sigma_B = sqrt((3/4) / 12) = 1/4 < 0.9 sigma1 = 0.3437: the floor
    # holds, sigma^2 = 0.81 x 7/48 = 0.118125 -> A = [-9/16, 1/16 x 3] / 0.118125 = [-100/21, 100/189 x 3]
    r2 = torch.tensor([1.0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1], dtype=F64)
    a, _, state = compute_with_state("slas", r2, G3, state, sigma_decay=0.9, adv_clip=None)
    close(a, [0.0] * 8 + [-100 / 21] + [100 / 189] * 3)
    assert state["sigma"] == pytest.approx(0.9 * sigma1, rel=1e-15)
    assert compute("slas", r2, G3, adv_clip=None)[8].item() == pytest.approx(-9.0)  # without it: sigma 1/4, A = -9
    # iteration 3: the batch's sigma is back above the decayed floor (0.81 sigma1): it is used as is
    a, _, state = compute_with_state("slas", R3, G3, state, sigma_decay=0.9)
    close(a, compute("slas", R3, G3).tolist())
    assert state["sigma"] == pytest.approx(sigma1, rel=1e-15)


def test_sigma_decay_floors_the_chosen_batch_std_and_zero_spread_keeps_the_state():
    # with batch_std_of informative the floor is on sigma_inf: sqrt(7/32) at iteration 1, 0.5 x that after
    _, _, state = compute_with_state("slas", R3, G3, {}, sigma_decay=0.5, batch_std_of="informative")
    assert state["sigma"] == pytest.approx(math.sqrt(7 / 32))
    flat = torch.ones(12, dtype=F64)  # every group saturated: A = 0, the sigma decays
    a, _, state = compute_with_state("slas", flat, G3, state, sigma_decay=0.5, batch_std_of="informative")
    assert torch.equal(a, torch.zeros(12, dtype=F64)) and state["sigma"] == pytest.approx(0.5 * math.sqrt(7 / 32))


def test_stateless_estimators_and_options_return_an_empty_state():
    for name, params in [("grpo", {}), ("drgrpo", {}), ("grpo_global_std", {}), ("slas", {}),
                         ("slas", {"batch_std_of": "half_range"})]:
        a, _, state = compute_with_state(name, R3, G3, {"sigma": 123.0}, **params)
        assert state == {}
        close(a, compute(name, R3, G3, **params).tolist())  # and the state they were given changes nothing
    with pytest.raises(ValueError, match="state must be a dict"):
        compute_with_state("slas", R3, G3, None)


def test_options_list_the_new_ones_with_their_defaults():
    assert options("slas") == {"gamma": 1.0, "batch_std_of": "centered", "normalize": "before", "recenter": False,
                               "eps": 1e-8, "sigma_decay": 0.0}


@pytest.mark.parametrize("params", [{"batch_std_of": "informative"}, {"batch_std_of": "half_range"},
                                    {"normalize": "after_informative"}, {"normalize": "after_informative",
                                                                         "recenter": True}, {"sigma_decay": 0.9}])
@pytest.mark.parametrize("value", [0.0, 0.3, 1.0])
def test_equal_reward_groups_stay_exactly_zero_fp32(params, value):
    r = torch.cat([torch.full((12,), value), torch.linspace(0, 1, 12)]).float()
    g = torch.cat([torch.full((12,), 3), torch.full((12,), 9)])
    a = compute("slas", r, g, **params)
    assert torch.equal(a[:12], torch.zeros(12)) and a[12:].abs().sum() > 0 and a.dtype == torch.float32


@pytest.mark.parametrize("params, needle", [
    ({"batch_std_of": "median"}, "batch_std_of must be one of .*informative.*half_range"),
    ({"normalize": "later"}, "normalize must be one of .*after_informative"),
    ({"normalize": "after_informative", "batch_std_of": "informative"}, "only applies to normalize='before'"),
    ({"normalize": "after", "batch_std_of": "half_range"}, "only applies to normalize='before'"),
    ({"sigma_decay": 1.0}, r"sigma_decay must be a float in \[0, 1\)"),
    ({"sigma_decay": -0.1}, r"sigma_decay must be a float in \[0, 1\)"),
    ({"sigma_decay": "0.9"}, r"sigma_decay must be a float in \[0, 1\)"),
    ({"sigma_decay": 0.9, "normalize": "after_informative"}, "sigma_decay applies to normalize='before'"),
])
def test_bad_values_say_what_is_allowed(params, needle):
    with pytest.raises(ValueError, match=needle):
        validate("slas", **params)


def test_net_push_of_a_mostly_successful_group_is_negative_and_recenter_removes_it():
    # the 3-of-4 group shapes to [-9, 1, 1, 1]/16: the power breaks the group's zero sum, so the batch's signed mean is
    # (-6/16 x 48/7) / 12 = -3/14 (a net push away from the policy's own samples); grpo and recenter keep it at 0
    _, stats = compute_with_stats("slas", R3, G3)
    assert stats["adv_mean"] == pytest.approx(-3 / 14, rel=1e-6)
    _, stats = compute_with_stats("slas", R3, G3, recenter=True)
    assert stats["adv_mean"] == pytest.approx(0.0, abs=1e-12)
    _, stats = compute_with_stats("grpo", R3, G3)
    assert stats["adv_mean"] == pytest.approx(0.0, abs=1e-12)
    # mirrored rewards (1-of-4 successes) push the other way: a net pull
    _, stats = compute_with_stats("slas", 1 - R3, G3)
    assert stats["adv_mean"] == pytest.approx(3 / 14, rel=1e-6)
