"""nft / awm options that follow upstream: DiffusionNFT's adv_mode binary (r_map), AWM's t**2 and huber
weightings and its stratified levels (time_type discrete_wo_init); hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from slas.algo.losses import awm_weighted_error, nft_optimality
from slas.algo.samplers.schedule import stratified_bounds, stratified_steps

F64 = torch.float64
A = torch.tensor([-7.0, -5.0, -1.0, 0.0, 2.5, 9.0])


def test_r_map_binary_is_diffusionnft_adv_mode_binary():
    # DiffusionNFT train_nft_sd3.py:924-929: sign(clamp(A, -5, 5)) / 5 / 2 + 1/2 -> r in {0.4, 0.5, 0.6}
    torch.testing.assert_close(nft_optimality(A, 5.0, "binary"), torch.tensor([0.4, 0.4, 0.4, 0.5, 0.6, 0.6]))
    # at scale 1 it is the hard sign; at scale 1/2 the clamp to [0, 1] binds
    torch.testing.assert_close(nft_optimality(A, 1.0, "binary"), nft_optimality(A, 5.0, "hard_sign"))
    torch.testing.assert_close(nft_optimality(A, 0.5, "binary"), torch.tensor([0.0, 0.0, 0.0, 0.5, 1.0, 1.0]))


def test_r_map_hard_sign_and_the_renamed_sign():
    torch.testing.assert_close(nft_optimality(A, 5.0, "hard_sign"), torch.tensor([0.0, 0.0, 0.0, 0.5, 1.0, 1.0]))
    with pytest.raises(ValueError, match="'hard_sign' is r in .0, 1/2, 1.*'binary' is DiffusionNFT's adv_mode binary"):
        nft_optimality(A, 5.0, "sign")
    with pytest.raises(ValueError, match=r"expected one of \('linear', 'binary', 'hard_sign'\)"):
        nft_optimality(A, 5.0, "softmax")


def test_awm_t2_and_huber_weightings_hand_computed():
    # AWM train_sd3_awm.py:240-249. err = mean((2, 0)^2) = 2 at t = 1/2 and mean((0.6, 0.8)^2) = 0.5 at t = 0.9
    v = torch.tensor([[2.0, 0.0], [0.6, 0.8]], dtype=F64)
    target = torch.zeros_like(v)
    t = torch.tensor([0.5, 0.9], dtype=F64)
    assert awm_weighted_error(v, target, t, "t2").tolist() == pytest.approx([0.25 * 2, 0.81 * 0.5], rel=1e-15)
    huber = [0.5 * (math.sqrt(2 + 1e-10) - 1e-5), 0.9 * (math.sqrt(0.5 + 1e-10) - 1e-5)]  # t (sqrt(err + 1e-10) - 1e-5)
    assert awm_weighted_error(v, target, t, "huber").tolist() == pytest.approx(huber, rel=1e-15)
    # huber is half the generalised Huber at p = 1/2 (sqrt(1e-10) = 1e-5)
    torch.testing.assert_close(awm_weighted_error(v, target, t, "huber"),
                               0.5 * awm_weighted_error(v, target, t, "ghuber", 0.5), rtol=1e-12, atol=0)
    # gradients: d(t^2 err)/dv = t^2 2 (v - target) / D; d huber / d err = t / (2 sqrt(err + 1e-10))
    vg = v.clone().requires_grad_()
    awm_weighted_error(vg, target, t, "t2").sum().backward()
    torch.testing.assert_close(vg.grad, torch.tensor([[0.25 * 2.0, 0.0], [0.81 * 0.6, 0.81 * 0.8]], dtype=F64))


def test_stratified_bounds_are_awms():
    # AWM's GenEval config: 14 steps, timestep_fraction 0.9 -> [1, 12), 6 levels: linspace(1, 12, 7) = 1, 2.83, 4.67,
    # 6.5, 8.33, 10.17, 12 truncated
    assert stratified_bounds(14, 6, 0.9) == [(1, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 12)]
    assert stratified_bounds(10, 2, 0.9) == [(1, 5), (5, 9)]  # the ShapesWorld schedule: [1, 9)
    assert stratified_bounds(10, 1, 1.0) == [(1, 10)]
    # upstream's float32 linspace, not exact arithmetic: 26 strata of [1, 29) cut at 14.99999 -> 14, not 15
    assert stratified_bounds(29, 26, 1.0)[13] == (14, 16)
    for steps, k, frac in [(10, 9, 0.9), (3, 2, 0.9), (2, 1, 0.5)]:
        with pytest.raises(ValueError, match="would leave one empty"):
            stratified_bounds(steps, k, frac)


def test_stratified_steps_draw_one_level_per_stratum():
    bounds = stratified_bounds(14, 6, 0.9)
    g = torch.Generator().manual_seed(3)
    steps = stratified_steps(4000, bounds, g)  # [4000, 6]
    lo, hi = torch.tensor(bounds).T
    assert steps.shape == (4000, 6) and steps.dtype == torch.long
    assert ((steps >= lo) & (steps < hi)).all()
    # each index of a stratum of width 2 about half the time; never index 0 (sigma = 1) or 12, 13
    assert 0.45 < (steps[:, 1] == 2).double().mean() < 0.55
    assert not ((steps == 0) | (steps >= 12)).any()
    # lo + floor(u (hi - lo)) with u the generator's float32 rands, row-major [n, K]
    u = torch.rand(4000, 6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(steps, lo + (u * (hi - lo)).long())
