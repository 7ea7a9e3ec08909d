"""Advantage estimators: hand-computed tables and the shared edge cases.

Upstream formulas: DanceGRPO train_grpo_flux.py:532-548, Flow-GRPO flow_grpo/stat_tracking.py:25-31.
"""

from __future__ import annotations

import math

import pytest
import torch

from slas.algo.advantages import available, compute, compute_with_stats, finite_mask, validate

F64 = torch.float64

# Example 1: two groups of three. means 2, 5; r - mean_g = [-1, 0, 1, -1, 0, 1].
R1 = torch.tensor([1.0, 2, 3, 4, 5, 6], dtype=F64)
G1 = torch.tensor([0, 0, 0, 1, 1, 1])
STD1_RAW = math.sqrt(17.5 / 6)  # ddof-0 std of 1..6: sum (r - 3.5)^2 = 17.5 -> sqrt(17.5/6) = 1.7078251...

# Example 2, uneven and interleaved, arbitrary ids: group 7 = {0, 1, 5} (mean 2, dev -2, -1, 3),
# group -2 = {4, 8} (mean 6, dev -2, 2).  dev in sample order = [-2, -2, -1, 2, 3].
R2 = torch.tensor([0.0, 4, 1, 8, 5], dtype=F64)
G2 = torch.tensor([7, -2, 7, -2, 7])
# raw rewards: mean 3.6, squares of deviations 12.96 + 0.16 + 6.76 + 19.36 + 1.96 = 41.2 -> var 8.24
STD2_RAW = math.sqrt(8.24)
# centered: sum dev^2 = 4 + 4 + 1 + 4 + 9 = 22 -> var 4.4
VAR2_C = 4.4

ALL_CONFIGS = [
    ("grpo", {}),
    ("grpo_global_std", {}),
    ("drgrpo", {}),
    ("slas", {}),
    ("slas", {"gamma": 0.0}),
    ("slas", {"gamma": 0.5, "batch_std_of": "rewards"}),
    ("slas", {"recenter": True}),
    ("slas", {"normalize": "after"}),
    ("slas", {"normalize": "after", "recenter": True, "gamma": 2.0}),
]
SLAS_MODES = [
    {"normalize": "before", "batch_std_of": "centered"},
    {"normalize": "before", "batch_std_of": "rewards"},
    {"normalize": "after", "batch_std_of": "centered"},
]


def close(a: torch.Tensor, expected: list[float], rtol: float = 1e-6) -> None:
    torch.testing.assert_close(a, torch.tensor(expected, dtype=a.dtype), rtol=rtol, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# Hand-computed tables


def test_grpo_table():
    # example 1: std_g (ddof 1) = sqrt((1 + 0 + 1) / 2) = 1 -> A = dev / (1 + 1e-8)
    close(compute("grpo", R1, G1), [-1, 0, 1, -1, 0, 1])
    # example 2: group 7 std = sqrt(14 / 2) = sqrt 7; group -2 std = sqrt(8 / 1) = sqrt 8
    s7, s8 = math.sqrt(7), math.sqrt(8)
    close(compute("grpo", R2, G2), [-2 / s7, -2 / s8, -1 / s7, 2 / s8, 3 / s7])  # [-0.7559, -0.7071, ...]


def test_grpo_global_std_table():
    # A = dev / (std_B(raw) + 1e-4): eps is part of the expected value (Flow-GRPO stat_tracking.py uses 1e-4)
    d1 = STD1_RAW + 1e-4
    close(compute("grpo_global_std", R1, G1), [-1 / d1, 0, 1 / d1, -1 / d1, 0, 1 / d1], rtol=1e-12)
    d2 = STD2_RAW + 1e-4
    close(compute("grpo_global_std", R2, G2), [-2 / d2, -2 / d2, -1 / d2, 2 / d2, 3 / d2], rtol=1e-12)
    _, stats = compute_with_stats("grpo_global_std", R2, G2)
    assert stats["batch_std"] == pytest.approx(2.870540018881465, rel=1e-12)  # sqrt(8.24)


def test_drgrpo_table():
    close(compute("drgrpo", R1, G1), [-1, 0, 1, -1, 0, 1], rtol=0)
    close(compute("drgrpo", R2, G2), [-2, -2, -1, 2, 3], rtol=0)


def test_slas_default_table():
    # example 1: sigma_B(centered) = sqrt(4/6); d = dev / sigma = +-sqrt(1.5); A = sign(d) d^2 = +-1.5
    close(compute("slas", R1, G1), [-1.5, 0, 1.5, -1.5, 0, 1.5])
    # example 2: sigma^2 = 4.4; A = sign(dev) dev^2 / 4.4 = [-4, -4, -1, 4, 9] / 4.4 = [-10/11, .., -5/22, .., 45/22]
    close(compute("slas", R2, G2), [-10 / 11, -10 / 11, -5 / 22, 10 / 11, 45 / 22])
    _, stats = compute_with_stats("slas", R2, G2)
    assert stats["batch_std"] == pytest.approx(math.sqrt(4.4), rel=1e-12)


def test_slas_batch_std_of_rewards_table():
    # example 1: A = sign(dev) dev^2 / var_raw = +-1 / (35/12) = +-12/35
    close(compute("slas", R1, G1, batch_std_of="rewards"), [-12 / 35, 0, 12 / 35, -12 / 35, 0, 12 / 35])
    # example 2: A = [-4, -4, -1, 4, 9] / 8.24
    close(compute("slas", R2, G2, batch_std_of="rewards"), [-4 / 8.24, -4 / 8.24, -1 / 8.24, 4 / 8.24, 9 / 8.24])


def test_slas_gamma_table():
    # gamma = 0.5: A = sign(dev) |dev|^1.5 / sigma^1.5, sigma^1.5 = 4.4^0.75 = 3.0357...
    s = 4.4**0.75
    close(compute("slas", R2, G2, gamma=0.5), [-(2**1.5) / s, -(2**1.5) / s, -1 / s, 2**1.5 / s, 3**1.5 / s])
    # gamma = 0: linear, A = dev / sqrt(4.4)
    s = math.sqrt(4.4)
    close(compute("slas", R2, G2, gamma=0.0), [-2 / s, -2 / s, -1 / s, 2 / s, 3 / s])
    # gamma = 2: A = sign(dev) |dev|^3 / 4.4^1.5
    s = 4.4**1.5
    close(compute("slas", R2, G2, gamma=2.0, adv_clip=None), [-8 / s, -8 / s, -1 / s, 8 / s, 27 / s])


def test_slas_recenter_table():
    # shaped (before) = [-4, -4, -1, 4, 9] / 4.4. group 7 = {-4, -1, 9}/4.4 has mean (4/3)/4.4
    # -> {-16/3, -7/3, 23/3}/4.4; group -2 = {-4, 4}/4.4 has mean 0 -> unchanged.
    close(compute("slas", R2, G2, recenter=True), [-16 / 3 / 4.4, -4 / 4.4, -7 / 3 / 4.4, 4 / 4.4, 23 / 3 / 4.4])
    # symmetric groups: recentering changes nothing
    close(compute("slas", R1, G1, recenter=True), [-1.5, 0, 1.5, -1.5, 0, 1.5])


def test_slas_recenter_on_binary_groups_is_a_group_weight_on_the_centred_reward():
    # A binary group with success rate p: c = r - mean_g is 1 - p or -p; the power gives (1-p)^2 and -p^2 (over
    # sigma_B^2), whose group mean is p (1-p) (1-2p). Subtracting it leaves c (p^2 + (1-p)^2) / sigma_B^2: the same
    # two values as the linear centred reward, times a group weight w(p) in [1/2, 1] (1/2 for a split group, ~1 for a
    # lopsided one). docs/slas-at-scale.md, "The mechanism".
    successes = [1, 2, 4, 6, 7, 8]
    r = torch.tensor([float(i < k) for k in successes for i in range(8)], dtype=F64)
    g = torch.arange(len(successes)).repeat_interleave(8)
    p = torch.tensor(successes, dtype=F64).repeat_interleave(8) / 8
    c = r - p
    var_b = (c**2).mean()
    close(compute("slas", r, g, recenter=True, adv_clip=None), ((p**2 + (1 - p) ** 2) * c / var_b).tolist())
    # without recenter the 7-of-8 group sums to (7 x 1/64 - 49/64) / sigma_B^2 = -42/64 / sigma_B^2, not 0
    a = compute("slas", r, g, adv_clip=None)
    assert a[g == 4].sum().item() == pytest.approx(-42 / 64 / var_b.item(), rel=1e-6)


def test_slas_after_table():
    # example 1: A' = dev (gamma 1: sign(x) x^2 of +-1 is +-1); std_B(A') = sqrt(4/6) -> A = +-sqrt(1.5)
    s = math.sqrt(1.5)
    close(compute("slas", R1, G1, normalize="after"), [-s, 0, s, -s, 0, s])
    # example 2: A' = [-4, -4, -1, 4, 9], mean 0.8, sum (A' - 0.8)^2 = 23.04*2 + 3.24 + 10.24 + 67.24 = 126.8,
    # std = sqrt(25.36) = 5.03587...
    s = math.sqrt(126.8 / 5)
    close(compute("slas", R2, G2, normalize="after"), [-4 / s, -4 / s, -1 / s, 4 / s, 9 / s])
    # + recenter: [-16/3, -4, -7/3, 4, 23/3], mean 0, sum sq = (256 + 49 + 529)/9 + 32 = 124.667 -> std sqrt(/5)
    s = math.sqrt((834 / 9 + 32) / 5)
    a, stats = compute_with_stats("slas", R2, G2, normalize="after", recenter=True)
    close(a, [-16 / 3 / s, -4 / s, -7 / 3 / s, 4 / s, 23 / 3 / s])
    assert stats["adv_std"] == pytest.approx(1.0, rel=1e-6)  # the after mode returns unit batch std
    assert stats["batch_std"] == pytest.approx(s, rel=1e-12)


def test_slas_gamma0_rewards_equals_grpo_global_std():
    # Flow-GRPO global_std (flow_grpo/stat_tracking.py:25-31) is SLAS with gamma = 0 and a raw-reward batch std (up to eps)
    for r, g in [(R1, G1), (R2, G2), (torch.rand(24, dtype=F64), torch.arange(24) // 4)]:
        a = compute("slas", r, g, gamma=0.0, batch_std_of="rewards")
        b = compute("grpo_global_std", r, g)
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Edge cases


@pytest.mark.parametrize("value", [0.7, 0.3, 0.1, 0.55, 0.0, 1.0])
@pytest.mark.parametrize("name,params", ALL_CONFIGS)
def test_equal_reward_groups_are_exactly_zero_fp32(value, name, params):
    # Groups of 12 identical fp32 values; the fp32 DanceGRPO formula (DanceGRPO train_grpo_flux.py:532-548) can give a large |A|.
    # A second, informative group makes the batch std non-zero, so only the zero-spread rule can give the zeros.
    r = torch.cat([torch.full((12,), value), torch.linspace(0, 1, 12)]).float()
    g = torch.cat([torch.full((12,), 3), torch.full((12,), 9)])
    a, stats = compute_with_stats(name, r, g, **params)
    assert a.dtype == torch.float32
    assert torch.equal(a[:12], torch.zeros(12))
    assert a[12:].abs().sum() > 0
    assert stats["zero_std_groups"] == 0.5


def test_fp32_dancegrpo_formula_is_not_zero_on_equal_rewards():
    # Guard that the test above is meaningful: DanceGRPO's fp32 formula (DanceGRPO train_grpo_flux.py:532-548) is non-zero here.
    r = torch.full((12,), 0.7, dtype=torch.float32)
    naive = (r - r.mean()) / (r.std() + 1e-8)
    assert naive.abs().max() > 0.1
    assert torch.equal(compute("grpo", r, torch.zeros(12, dtype=torch.long)), torch.zeros(12))


@pytest.mark.parametrize("name,params", ALL_CONFIGS)
def test_zero_spread_batch_gives_zeros(name, params):
    for r in [torch.full((8,), 3.0, dtype=F64), torch.zeros(8, dtype=F64)]:
        a, stats = compute_with_stats(name, r, torch.arange(8) // 4, **params)
        assert torch.equal(a, torch.zeros(8, dtype=F64))
        assert stats["zero_std_groups"] == 1.0 and stats["batch_std"] == 0.0 and stats["adv_abs_mean"] == 0.0
    # spread between groups but none within: still no signal
    r = torch.tensor([1.0, 1, 1, 5, 5, 5], dtype=F64)
    assert torch.equal(compute(name, r, G1, **params), torch.zeros(6, dtype=F64))


def test_single_member_group_is_zero_and_not_nan():
    r = torch.tensor([1.0, 2, 3, 10], dtype=F64)
    g = torch.tensor([0, 0, 0, 1])  # group 1 has one member: no spread, grpo's ddof-1 std would be 0/0
    a = compute("grpo", r, g)
    close(a, [-1, 0, 1, 0])
    assert a[3] == 0


@pytest.mark.parametrize("name,params", ALL_CONFIGS)
def test_nonfinite_rewards_are_masked(name, params):
    r = torch.tensor([0.0, float("nan"), 4, 1, float("inf"), 8, 5, float("-inf"), 2], dtype=F64)
    g = torch.tensor([7, 7, -2, 7, -2, -2, 7, 11, 11])  # group 11 = {-inf, 2}: one finite member
    a, stats = compute_with_stats(name, r, g, **params)
    bad = ~torch.isfinite(r)
    assert torch.equal(finite_mask(r), ~bad)
    assert torch.equal(a[bad], torch.zeros(3, dtype=F64))
    assert torch.isfinite(a).all()
    ref = compute(name, r[~bad], g[~bad], **params)
    torch.testing.assert_close(a[~bad], ref, rtol=1e-12, atol=0)
    assert stats["n_nonfinite"] == 3.0
    assert stats["zero_std_groups"] == pytest.approx(1 / 3)  # group 11


def test_nonfinite_group_entirely_masked():
    r = torch.tensor([float("nan"), float("nan"), 1.0, 3.0], dtype=F64)
    a, stats = compute_with_stats("grpo", r, torch.tensor([5, 5, 6, 6]))
    close(a, [0, 0, -1 / math.sqrt(2), 1 / math.sqrt(2)])
    assert stats["n_nonfinite"] == 2.0 and stats["zero_std_groups"] == 0.5


@pytest.mark.parametrize("mode", SLAS_MODES)
@pytest.mark.parametrize("recenter", [False, True])
def test_slas_scale_and_shift_invariance(mode, recenter):
    gen = torch.Generator().manual_seed(0)
    r = torch.rand(24, generator=gen, dtype=F64)
    g = torch.arange(24) // 6
    base = compute("slas", r, g, gamma=1.0, recenter=recenter, adv_clip=None, **mode)
    assert base.abs().sum() > 0
    for c in [1e-3, 7.0, 1e4]:
        torch.testing.assert_close(compute("slas", c * r, g, recenter=recenter, adv_clip=None, **mode), base)
    # a shift of all rewards leaves r - mean_g unchanged
    torch.testing.assert_close(compute("slas", r + 100.0, g, recenter=recenter, adv_clip=None, **mode), base)


def test_group_ids_arbitrary_and_permutation_equivariant():
    gen = torch.Generator().manual_seed(1)
    r = torch.rand(12, generator=gen, dtype=F64)
    g = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    relabel = torch.tensor([40, -3, 1_000_000_007, 5])[g]
    perm = torch.randperm(12, generator=gen)
    for name, params in ALL_CONFIGS:
        a = compute(name, r, g, **params)
        torch.testing.assert_close(compute(name, r, relabel, **params), a, rtol=0, atol=0)
        torch.testing.assert_close(compute(name, r[perm], relabel[perm], **params), a[perm], rtol=1e-12, atol=1e-15)


def test_adv_clip_clamps_and_counts():
    r = torch.tensor([0.0, 20, 0, 4], dtype=F64)
    g = torch.tensor([0, 0, 1, 1])  # drgrpo: dev = [-10, 10, -2, 2]
    a, stats = compute_with_stats("drgrpo", r, g)  # default adv_clip 5
    close(a, [-5, 5, -2, 2], rtol=0)
    assert stats["clip_frac"] == 0.5
    assert stats["adv_abs_mean"] == 3.5 and stats["adv_mean"] == 0.0
    a, stats = compute_with_stats("drgrpo", r, g, adv_clip=1.5)
    close(a, [-1.5, 1.5, -1.5, 1.5], rtol=0)
    assert stats["clip_frac"] == 1.0
    a, stats = compute_with_stats("drgrpo", r, g, adv_clip=None)
    close(a, [-10, 10, -2, 2], rtol=0)
    assert stats["clip_frac"] == 0.0
    assert stats["adv_std"] == pytest.approx(math.sqrt((100 + 100 + 4 + 4) / 4))


def test_stats_vocabulary():
    _, stats = compute_with_stats("slas", R1, G1)
    assert tuple(stats) == ("n_nonfinite", "zero_std_groups", "adv_abs_mean", "adv_mean", "adv_std", "clip_frac",
                           "batch_std", "centered_std", "informative_frac", "adv_abs_mean_informative")
    assert all(isinstance(v, float) for v in stats.values())
    assert stats["n_nonfinite"] == 0.0 and stats["zero_std_groups"] == 0.0 and stats["clip_frac"] == 0.0
    assert stats["adv_abs_mean"] == pytest.approx(1.0)  # |[-1.5, 0, 1.5, -1.5, 0, 1.5]| mean
    assert stats["adv_mean"] == pytest.approx(0.0, abs=1e-12)
    assert stats["adv_std"] == pytest.approx(math.sqrt(1.5))
    assert stats["batch_std"] == pytest.approx(math.sqrt(4 / 6))
    _, stats = compute_with_stats("grpo", R1, G1)
    assert stats["batch_std"] == 0.0


def test_empty_batch():
    a, stats = compute_with_stats("slas", torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert a.shape == (0,) and all(v == 0.0 for v in stats.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name,params", ALL_CONFIGS)
def test_output_dtype_matches_input(dtype, name, params):
    a = compute(name, R2.to(dtype), G2, **params)
    assert a.dtype == dtype and a.shape == R2.shape
    torch.testing.assert_close(a.double(), compute(name, R2, G2, **params), rtol=1e-2, atol=1e-2)


def test_integer_rewards_give_float_advantages():
    a = compute("drgrpo", torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 1]))
    assert a.dtype == torch.get_default_dtype()
    close(a, [-0.5, 0.5, 0, 0])


# ---------------------------------------------------------------------------------------------------------------
# Validation


def test_unknown_name_lists_registered():
    with pytest.raises(ValueError, match="registered: drgrpo, grpo, grpo_global_std, slas"):
        compute("ppo", R1, G1)
    assert set(available()) == {"grpo", "grpo_global_std", "drgrpo", "slas"}


@pytest.mark.parametrize(
    "name,params,match",
    [
        ("slas", {"gama": 1.0}, r"unknown option\(s\) \['gama'\].*gamma=1.0"),
        ("grpo", {"gamma": 1.0}, r"unknown option.*eps=1e-08"),
        ("drgrpo", {"eps": 1e-8}, r"unknown option"),
        ("slas", {"gamma": -0.5}, r"gamma must be a finite float >= 0"),
        ("slas", {"gamma": float("nan")}, r"gamma must be"),
        ("slas", {"gamma": True}, r"gamma must be"),
        ("slas", {"batch_std_of": "group"},
         r"batch_std_of must be one of \('centered', 'rewards', 'informative', 'half_range'\)"),
        ("slas", {"normalize": "during"}, r"normalize must be one of \('before', 'after', 'after_informative'\)"),
        ("slas", {"normalize": "after", "batch_std_of": "rewards"}, r"only applies to normalize='before'"),
        ("slas", {"recenter": 1}, r"recenter must be a bool"),
        ("slas", {"eps": -1e-8}, r"eps must be a finite float >= 0"),
        ("grpo", {"eps": -1.0}, r"eps must be"),
    ],
)
def test_bad_options_raise(name, params, match):
    with pytest.raises(ValueError, match=match):
        validate(name, **params)
    with pytest.raises(ValueError, match=match):
        compute(name, R1, G1, **params)


@pytest.mark.parametrize("clip", [0.0, -1.0, float("inf"), "5"])
def test_bad_adv_clip_raises(clip):
    with pytest.raises(ValueError, match="adv_clip must be"):
        compute("grpo", R1, G1, adv_clip=clip)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="1-D"):
        compute("grpo", R1.reshape(2, 3), G1.reshape(2, 3))
    with pytest.raises(ValueError, match="same shape"):
        compute("grpo", R1, G1[:5])
    with pytest.raises(ValueError, match="integer tensor"):
        compute("grpo", R1, G1.double())


def test_push_diagnostics_count_only_informative_groups():
    # groups: 0 = [0, 1] (centred -0.5, 0.5), 1 = [1, 1] (zero spread), 2 = [1, 1] (zero spread)
    r = torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    g = torch.tensor([0, 0, 1, 1, 2, 2])
    # sigma_B of the centred rewards keeps the zeros: sqrt((0.25 + 0.25) / 6) = sqrt(1/12)
    a, stats = compute_with_stats("slas", r, g)  # d = +-0.5 / sqrt(1/12) = +-sqrt(3); A = +-3
    close(a, [-3, 3, 0, 0, 0, 0])
    assert stats["centered_std"] == pytest.approx(math.sqrt(1 / 12))
    assert stats["informative_frac"] == pytest.approx(2 / 6)
    assert stats["adv_abs_mean_informative"] == pytest.approx(3.0)
    assert stats["adv_abs_mean"] == pytest.approx(1.0)  # the zeros of the zero-spread groups dilute it 3x
    _, stats = compute_with_stats("grpo", r, g)  # +-0.5 / std_g (ddof 1: sqrt(0.5)) = +-0.7071
    assert stats["centered_std"] == pytest.approx(math.sqrt(1 / 12))
    assert stats["adv_abs_mean_informative"] == pytest.approx(0.5 / math.sqrt(0.5))
    _, stats = compute_with_stats("grpo", torch.ones(4, dtype=torch.float64), torch.tensor([0, 0, 1, 1]))
    assert stats["informative_frac"] == 0.0 and stats["adv_abs_mean_informative"] == 0.0
