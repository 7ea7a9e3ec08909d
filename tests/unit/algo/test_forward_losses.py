"""The forward-process objectives' losses (DiffusionNFT, AWM): hand-computed values, the flow-matching limits, the
direction of one SGD step, exactly zero gradient at zero advantage, masking."""

from __future__ import annotations

import pytest
import torch

from slas.algo.losses import (
    AWM_STATS,
    NFT_STATS,
    awm_loss,
    awm_weighted_error,
    nft_loss,
    nft_optimality,
    velocity_kl,
)

F64 = torch.float64


def _pairs(m=6, d=(3, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(m, *d, generator=g, dtype=F64)
    return v, torch.randn(m, *d, generator=g, dtype=F64), torch.rand(m, generator=g, dtype=F64) * 0.9 + 0.05


# ---- NFT -------------------------------------------------------------------------------------------------------


def test_nft_hand_computed():
    # pair 0: r 1, v+ = v = 1, e+ = 0.5 (1 - 0) = 0.5 -> 0.25 (adaptive: 0.25 / 0.5 = 0.5)
    # pair 1: r 0, v- = 2 v_old - v = 0, e- = 1 (0 - 1) = -1 -> 1 (adaptive: 1 / 1 = 1)
    v = torch.tensor([[1.0], [0.0]], dtype=F64, requires_grad=True)
    v_old = torch.tensor([[0.5], [0.0]], dtype=F64)
    target = torch.tensor([[0.0], [1.0]], dtype=F64)
    t, r = torch.tensor([0.5, 1.0], dtype=F64), torch.tensor([1.0, 0.0], dtype=F64)
    loss, stats = nft_loss(v, v_old, target, t, r, 1.0, adaptive_weight=False)
    assert loss.item() == pytest.approx((0.25 + 1.0) / 2, abs=1e-15)
    loss.backward()
    # d/dv0 of 0.5 t^2 (v - target)^2 = 0.25; d/dv1 of 0.5 t^2 (2 v_old - v - target)^2 = 1
    torch.testing.assert_close(v.grad, torch.tensor([[0.25], [1.0]], dtype=F64), rtol=0, atol=1e-15)
    assert tuple(stats) == NFT_STATS
    assert stats["r_mean"] == 0.5 and stats["fm_err"] == pytest.approx((1 + 1) / 2)
    assert stats["old_dev"] == pytest.approx(0.25 / 2)
    adaptive, _ = nft_loss(v.detach(), v_old, target, t, r, 1.0, adaptive_weight=True, loss_scale=5.0)
    assert adaptive.item() == pytest.approx(5.0 * (0.5 + 1.0) / 2, abs=1e-14)


def test_nft_with_r_one_and_beta_one_is_flow_matching_on_v():
    v, target, t = _pairs()
    v_old = v.detach() + 0.3  # v_old drops out at beta 1
    v = v.requires_grad_()
    loss, _ = nft_loss(v, v_old, target, t, torch.ones_like(t), 1.0, adaptive_weight=False)
    fm = (t.view(-1, 1, 1, 1) ** 2 * (v - target) ** 2).mean(dim=(1, 2, 3)).mean()  # x0-space flow matching
    assert loss.item() == pytest.approx(fm.item(), rel=1e-13)
    g_nft = torch.autograd.grad(loss, v)[0]
    g_fm = torch.autograd.grad(fm, v)[0]
    torch.testing.assert_close(g_nft, g_fm, rtol=1e-12, atol=0)


def test_nft_zero_advantage_gives_exactly_zero_gradient_on_policy():
    v, target, t = _pairs()
    r = nft_optimality(torch.zeros(len(t), dtype=F64), 5.0)
    assert torch.equal(r, torch.full_like(r, 0.5))
    v = v.requires_grad_()
    loss, _ = nft_loss(v, v.detach().clone(), target, t, r, 1.0)
    (g,) = torch.autograd.grad(loss, v)
    assert torch.count_nonzero(g) == 0
    # away from v_old, r = 1/2 pulls v back towards it (the implicit trust region)
    v2 = (v.detach() + 0.1).requires_grad_()
    loss2, _ = nft_loss(v2, v.detach(), target, t, r, 1.0, adaptive_weight=False)
    (g2,) = torch.autograd.grad(loss2, v2)
    assert (g2 * 0.1 > 0).all()  # the gradient points away from v_old, so a descent step moves back towards it


def test_nft_optimality_mappings():
    a = torch.tensor([-7.0, -5.0, -1.0, 0.0, 2.5, 9.0])
    torch.testing.assert_close(nft_optimality(a, 5.0), torch.tensor([0.0, 0.0, 0.4, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(nft_optimality(a, 5.0, "hard_sign"), torch.tensor([0.0, 0.0, 0.0, 0.5, 1.0, 1.0]))
    with pytest.raises(ValueError, match="r mapping"):
        nft_optimality(a, 5.0, "softmax")
    with pytest.raises(ValueError, match="scale"):
        nft_optimality(a, 0.0)


# ---- AWM -------------------------------------------------------------------------------------------------------


def test_awm_with_unit_advantages_is_the_flow_matching_loss():
    v, target, t = _pairs()
    v = v.requires_grad_()
    err = awm_weighted_error(v, target, t, "uniform")
    loss, stats = awm_loss(err, torch.ones_like(t))
    fm = ((v - target) ** 2).mean(dim=(1, 2, 3)).mean()
    assert loss.item() == pytest.approx(fm.item(), rel=1e-13)
    torch.testing.assert_close(torch.autograd.grad(loss, v)[0], torch.autograd.grad(fm, v)[0], rtol=1e-12, atol=0)
    assert tuple(stats) == AWM_STATS and stats["ratio_mean"] == 1.0 and stats["clipfrac"] == 0.0


def test_awm_weightings_hand_computed():
    v = torch.tensor([[2.0, 0.0]], dtype=F64)  # err = mean((2, 0)^2) = 2
    target = torch.zeros_like(v)
    t = torch.tensor([0.5], dtype=F64)
    assert awm_weighted_error(v, target, t, "uniform").item() == pytest.approx(2.0)
    assert awm_weighted_error(v, target, t, "t").item() == pytest.approx(1.0)
    ghuber = 0.5 * ((2 + 1e-10) ** 0.25 - 1e-10**0.25) / 0.25
    assert awm_weighted_error(v, target, t, "ghuber", 0.25).item() == pytest.approx(ghuber, rel=1e-12)


def test_awm_ratio_clip_hand_computed():
    # rho = exp(old - err): pair 0 rho e^0.5 > 1 + 0.2 with A > 0 -> clipped (no gradient); pair 1 rho e^-0.1, A < 0:
    # inside [0.8, 1.2] -> A rho err; pair 2 rho e^-0.5 < 0.8 with A < 0 -> clipped; pair 3 A > 0, rho < 1 -> kept
    err = torch.tensor([1.0, 2.0, 3.0, 1.5], dtype=F64, requires_grad=True)
    old = torch.tensor([1.5, 1.9, 2.5, 1.0], dtype=F64)
    adv = torch.tensor([1.0, -1.0, -2.0, 0.5], dtype=F64)
    loss, stats = awm_loss(err, adv, old_err=old, clip_range=0.2)
    rho = (old - err.detach()).exp()
    kept = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=F64)
    assert loss.item() == pytest.approx((adv * rho * err.detach() * kept).sum().item() / 4, rel=1e-13)
    loss.backward()
    torch.testing.assert_close(err.grad, adv * rho * kept / 4, rtol=1e-13, atol=0)
    assert stats["clipfrac"] == 0.5


def test_awm_zero_advantage_gives_exactly_zero_gradient():
    v, target, t = _pairs()
    v = v.requires_grad_()
    loss, _ = awm_loss(awm_weighted_error(v, target, t), torch.zeros_like(t))
    (g,) = torch.autograd.grad(loss, v)
    assert torch.count_nonzero(g) == 0 and loss.item() == 0.0


# ---- one SGD step on a linear velocity model -------------------------------------------------------------------


def _fm_after_one_step(objective: str, advantage: float) -> tuple[float, float]:
    """Flow-matching error of one sample before and after one SGD step of a linear velocity model v = W x_t."""
    g = torch.Generator().manual_seed(1)
    d = 8
    w = (torch.randn(d, d, generator=g, dtype=F64) * 0.3).requires_grad_()
    x0, eps = torch.randn(4, d, generator=g, dtype=F64), torch.randn(4, d, generator=g, dtype=F64)
    t = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=F64)  # the same sample at 4 noise levels
    x_t = (1 - t[:, None]) * x0 + t[:, None] * eps
    target = eps - x0
    adv = torch.full((4,), advantage, dtype=F64)

    def fm() -> float:
        return float(((x_t @ w.T - target) ** 2).mean())

    before = fm()
    v = x_t @ w.T
    if objective == "nft":
        loss, _ = nft_loss(v, v.detach(), target, t, nft_optimality(adv, 5.0), 1.0)
    else:
        loss, _ = awm_loss(awm_weighted_error(v, target, t, "uniform"), adv)
    loss.backward()
    with torch.no_grad():
        w -= 0.05 * w.grad
    return before, fm()


@pytest.mark.parametrize("objective", ["nft", "awm"])
def test_one_sgd_step_lowers_the_error_for_a_positive_advantage_and_raises_it_for_a_negative(objective):
    before, up = _fm_after_one_step(objective, 2.0)
    assert up < before
    before, down = _fm_after_one_step(objective, -2.0)
    assert down > before


# ---- masking, shapes ---------------------------------------------------------------------------------------------


def test_masked_pairs_never_leak_nan():
    v, target, t = _pairs(m=4)
    adv = torch.tensor([1.0, float("nan"), -1.0, float("inf")], dtype=F64)
    w = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=F64)
    for kind in ("nft", "awm"):
        vv = v.clone().requires_grad_()
        if kind == "nft":
            loss, stats = nft_loss(vv, v + 0.1, target, t, nft_optimality(adv, 5.0), 1.0, weight=w)
        else:
            loss, stats = awm_loss(awm_weighted_error(vv, target, t), adv, weight=w)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(vv.grad).all()
        assert vv.grad[1].abs().sum() == 0 and vv.grad[3].abs().sum() == 0
        assert all(torch.isfinite(torch.tensor(x)) for x in stats.values())
        ref, _ = (nft_loss(v[[0, 2]], v[[0, 2]] + 0.1, target[[0, 2]], t[[0, 2]],
                           nft_optimality(adv[[0, 2]], 5.0), 1.0) if kind == "nft"
                  else awm_loss(awm_weighted_error(v[[0, 2]], target[[0, 2]], t[[0, 2]]), adv[[0, 2]]))
        assert loss.item() == pytest.approx(ref.item(), rel=1e-12)  # the mean over the unmasked pairs


def test_shape_and_argument_errors():
    v, target, t = _pairs(m=3)
    with pytest.raises(ValueError, match="same shape"):
        nft_loss(v, v, target[:, :2], t, t, 1.0)
    with pytest.raises(ValueError, match=r"\[M\]"):
        nft_loss(v, v, target, t[:2], t, 1.0)
    with pytest.raises(ValueError, match="beta"):
        nft_loss(v, v, target, t, t, 0.0)
    with pytest.raises(ValueError, match="weighting"):
        awm_weighted_error(v, target, t, "huberish")
    with pytest.raises(ValueError, match="clip_range"):
        awm_loss(t, t, clip_range=0.0)
    assert velocity_kl(v, v).abs().sum() == 0 and velocity_kl(v, v + 1).tolist() == pytest.approx([1.0] * 3)
