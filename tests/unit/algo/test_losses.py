"""PPO-clip and KL losses: hand-computed values, masking, gradients (DanceGRPO train_grpo_flux.py:571-608, Flow-GRPO
train_sd3.py:873-904)."""

from __future__ import annotations

import math

import pytest
import torch

from slas.algo.losses import KL_STATS, PPO_STATS, gaussian_kl, kl_loss, ppo_clip_loss

F64 = torch.float64


def test_ratio_one_gives_minus_mean_advantage():
    gen = torch.Generator().manual_seed(0)
    lp = torch.randn(16, generator=gen, dtype=F64)
    adv = torch.randn(16, generator=gen, dtype=F64)
    loss, stats = ppo_clip_loss(lp.clone().requires_grad_(), lp, adv, 1e-4)
    assert loss.item() == pytest.approx(-adv.mean().item(), abs=1e-15)
    assert tuple(stats) == PPO_STATS and all(isinstance(v, float) for v in stats.values())
    assert stats["clipfrac"] == 0.0 and stats["ratio_mean"] == 1.0 and stats["ratio_max_dev"] == 0.0
    assert stats["approx_kl"] == 0.0
    assert stats["adv_mean"] == pytest.approx(adv.mean().item())
    assert stats["policy_loss"] == pytest.approx(loss.item())


# Hand-computed example, clip 0.2. Per entry: rho, A, -A rho, -A clamp(rho), max, which branch is active.
#   0: rho 1.0, A  1: -1.0, -1.0 -> -1.0  (inside)
#   1: rho 1.5, A  1: -1.5, -1.2 -> -1.2  (clipped, constant: no gradient)
#   2: rho 0.5, A  1: -0.5, -0.8 -> -0.5  (outside the range but the unclipped, pessimistic branch wins)
#   3: rho 1.1, A -1:  1.1,  1.1 ->  1.1  (inside)
#   4: rho 0.7, A -1:  0.7,  0.8 ->  0.8  (clipped, constant)
#   5: rho 1.3, A -2:  2.6,  2.4 ->  2.6  (unclipped wins)
# loss = (-1 - 1.2 - 0.5 + 1.1 + 0.8 + 2.6) / 6 = 1.8 / 6 = 0.3;  clipfrac: |rho-1| > 0.2 for entries 1, 2, 4, 5 = 4/6
RHO = [1.0, 1.5, 0.5, 1.1, 0.7, 1.3]
ADV = [1.0, 1.0, 1.0, -1.0, -1.0, -2.0]
# d loss / d log_prob_i = (1/6) d max_i / d log_prob_i = -A_i rho_i / 6 on the unclipped branch, 0 on the clipped one
GRAD = [-1.0 / 6, 0.0, -0.5 / 6, 1.1 / 6, 0.0, 2.6 / 6]


def _example(dtype=F64):
    old = torch.tensor([-3.0, 0.5, 2.0, -1.0, 0.0, 4.0], dtype=dtype)
    lp = (old + torch.tensor(RHO, dtype=dtype).log()).requires_grad_()
    return lp, old, torch.tensor(ADV, dtype=dtype)


def test_hand_computed_clipping():
    lp, old, adv = _example()
    loss, stats = ppo_clip_loss(lp, old, adv, 0.2)
    assert loss.item() == pytest.approx(0.3, abs=1e-12)
    assert stats["clipfrac"] == pytest.approx(4 / 6, abs=1e-15)
    assert stats["ratio_mean"] == pytest.approx(sum(RHO) / 6, abs=1e-12)  # 6.1 / 6
    assert stats["ratio_max_dev"] == pytest.approx(0.5, abs=1e-12)
    # 0.5 mean(log(rho)^2)
    assert stats["approx_kl"] == pytest.approx(0.5 * sum(math.log(r) ** 2 for r in RHO) / 6, rel=1e-12)
    assert stats["adv_mean"] == pytest.approx(-1 / 6, abs=1e-15)
    loss.backward()
    torch.testing.assert_close(lp.grad, torch.tensor(GRAD, dtype=F64), rtol=1e-12, atol=0)
    assert lp.grad[1] == 0 and lp.grad[4] == 0  # active clipped branch: exactly no gradient


def test_old_log_prob_and_advantages_are_constants():
    lp, old, adv = _example()
    old.requires_grad_()
    adv.requires_grad_()
    loss, _ = ppo_clip_loss(lp, old, adv, 0.2)
    loss.backward()
    assert old.grad is None and adv.grad is None


def test_weight_masks_entries_and_denominator():
    lp, old, adv = _example()
    w = torch.tensor([1.0, 1, 1, 0, 0, 0], dtype=F64)
    loss, stats = ppo_clip_loss(lp, old, adv, 0.2, weight=w)
    assert loss.item() == pytest.approx((-1 - 1.2 - 0.5) / 3, abs=1e-12)  # only entries 0..2, denominator 3
    assert stats["clipfrac"] == pytest.approx(2 / 3)  # entries 1 and 2
    assert stats["ratio_max_dev"] == pytest.approx(0.5)
    assert stats["adv_mean"] == 1.0
    loss.backward()
    torch.testing.assert_close(lp.grad, torch.tensor([-1 / 3, 0, -0.5 / 3, 0, 0, 0], dtype=F64), rtol=1e-12, atol=0)
    # bool masks and float weights: weight 2 counts twice
    loss_b, _ = ppo_clip_loss(lp, old, adv, 0.2, weight=w.bool())
    assert loss_b.item() == pytest.approx(loss.item())
    loss_f, _ = ppo_clip_loss(lp, old, adv, 0.2, weight=torch.tensor([2.0, 1, 1, 0, 0, 0], dtype=F64))
    assert loss_f.item() == pytest.approx((-2 - 1.2 - 0.5) / 4, abs=1e-12)


def test_masked_nan_cannot_leak():
    lp, old, adv = _example()
    adv[4] = float("nan")  # e.g. the advantage of a sample whose reward was NaN
    old = old.clone()
    old[5] = float("inf")  # and a garbage old log-prob
    w = torch.tensor([1.0, 1, 1, 1, 0, 0], dtype=F64)
    loss, stats = ppo_clip_loss(lp, old, adv, 0.2, weight=w)
    assert loss.item() == pytest.approx((-1 - 1.2 - 0.5 + 1.1) / 4, abs=1e-12)
    assert all(math.isfinite(v) for v in stats.values())
    loss.backward()
    assert torch.isfinite(lp.grad).all()
    assert lp.grad[4] == 0 and lp.grad[5] == 0


def test_zero_weight_sum_gives_zero_loss_with_graph():
    lp, old, adv = _example()
    adv[0] = float("nan")
    loss, stats = ppo_clip_loss(lp, old, adv, 0.2, weight=torch.zeros(6, dtype=F64))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(lp.grad, torch.zeros(6, dtype=F64))
    assert all(v == 0.0 for v in stats.values())


def test_low_precision_log_probs_are_upcast():
    lp, old, adv = _example()
    loss, _ = ppo_clip_loss(lp.detach().bfloat16(), old.bfloat16(), adv.bfloat16(), 0.2)
    assert loss.dtype == torch.float32


@pytest.mark.parametrize("clip", [0.0, -0.1, float("nan"), float("inf"), True])
def test_bad_clip_range_raises(clip):
    lp, old, adv = _example()
    with pytest.raises(ValueError, match="clip_range must be"):
        ppo_clip_loss(lp, old, adv, clip)


def test_shape_mismatch_raises():
    lp, old, adv = _example()
    with pytest.raises(ValueError, match="same shape"):
        ppo_clip_loss(lp, old, adv[:, None], 0.2)
    with pytest.raises(ValueError, match="weight must have the shape"):
        ppo_clip_loss(lp, old, adv, 0.2, weight=torch.ones(5))


# ---------------------------------------------------------------------------------------------------------------
# KL


def _kl_inputs():
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 4, 5, generator=gen, dtype=F64)  # M = 3, D = 20
    ref = torch.randn(3, 4, 5, generator=gen, dtype=F64)
    return mean, ref


def test_gaussian_kl_analytic_hand_value():
    mean = torch.tensor([[1.0, 3.0], [0.0, 0.0]], dtype=F64)
    ref = torch.tensor([[0.0, 1.0], [0.0, 2.0]], dtype=F64)
    # std 2: per-element (diff^2) / 8 -> [[1/8, 4/8], [0, 4/8]]; mean -> [5/16, 1/4]; sum -> [5/8, 1/2]
    torch.testing.assert_close(gaussian_kl(mean, ref, 2.0), torch.tensor([5 / 16, 1 / 4], dtype=F64))
    torch.testing.assert_close(gaussian_kl(mean, ref, 2.0, reduce="sum"), torch.tensor([5 / 8, 1 / 2], dtype=F64))
    # per-sample std [1, 2]: sample 0 -> (1 + 4) / 2 / 2 = 5/4; sample 1 -> (0 + 4) / 8 / 2 = 1/4
    std = torch.tensor([1.0, 2.0], dtype=F64)
    torch.testing.assert_close(gaussian_kl(mean, ref, std), torch.tensor([5 / 4, 1 / 4], dtype=F64))


def test_gaussian_kl_flow_grpo_is_abs_dt_times_analytic():
    mean, ref = _kl_inputs()
    std = torch.tensor([0.3, 0.1, 0.7], dtype=F64)
    dt = torch.tensor([-0.1, -0.05, -0.2], dtype=F64)  # per-sample sigma_next - sigma (negative)
    analytic = gaussian_kl(mean, ref, std)
    fg = gaussian_kl(mean, ref, std, form="flow_grpo", dt=dt)
    torch.testing.assert_close(fg, dt.abs() * analytic, rtol=1e-12, atol=0)
    # Flow-GRPO's own expression: mean_D((mu - mu_ref)^2) / (2 g^2), std = g sqrt(|dt|)  (Flow-GRPO train_sd3.py:894-897)
    g = std / dt.abs().sqrt()
    fg_code = (mean - ref).square().mean(dim=(1, 2)) / (2 * g**2)
    torch.testing.assert_close(fg, fg_code, rtol=1e-12, atol=0)


def test_gaussian_kl_sum_is_d_times_mean():
    mean, ref = _kl_inputs()
    for form, dt in [("analytic", None), ("flow_grpo", -0.1)]:
        m = gaussian_kl(mean, ref, 0.4, form=form, dt=dt)
        s = gaussian_kl(mean, ref, 0.4, form=form, dt=dt, reduce="sum")
        torch.testing.assert_close(s, 20 * m, rtol=1e-12, atol=0)  # D = 4 * 5


def test_gaussian_kl_gradient_and_zero_at_reference():
    mean, ref = _kl_inputs()
    assert torch.equal(gaussian_kl(ref.clone(), ref, 0.5), torch.zeros(3, dtype=F64))
    mean.requires_grad_()
    gaussian_kl(mean, ref, 0.5).sum().backward()
    # d/dmean of mean_D(diff^2 / (2 std^2)) = diff / (std^2 D)
    torch.testing.assert_close(mean.grad, (mean - ref).detach() / (0.25 * 20), rtol=1e-12, atol=0)


def test_gaussian_kl_validation():
    mean, ref = _kl_inputs()
    with pytest.raises(ValueError, match="needs dt"):
        gaussian_kl(mean, ref, 0.5, form="flow_grpo")
    with pytest.raises(ValueError, match="does not use dt"):
        gaussian_kl(mean, ref, 0.5, dt=-0.1)
    with pytest.raises(ValueError, match="form must be one of"):
        gaussian_kl(mean, ref, 0.5, form="exact")
    with pytest.raises(ValueError, match="reduce must be one of"):
        gaussian_kl(mean, ref, 0.5, reduce="max")
    with pytest.raises(ValueError, match="same shape"):
        gaussian_kl(mean, ref[:2], 0.5)


def test_kl_loss():
    kl = torch.tensor([1.0, 2.0, 6.0], dtype=F64, requires_grad=True)
    loss, stats = kl_loss(kl, 0.04)
    assert tuple(stats) == KL_STATS
    assert loss.item() == pytest.approx(0.04 * 3.0) and stats["kl_mean"] == pytest.approx(3.0)
    # masked NaN does not leak; denominator counts only weighted entries
    kl2 = torch.tensor([1.0, 2.0, float("nan")], dtype=F64, requires_grad=True)
    loss, stats = kl_loss(kl2, 0.5, weight=torch.tensor([1.0, 1.0, 0.0], dtype=F64))
    assert loss.item() == pytest.approx(0.5 * 1.5) and stats["kl_mean"] == pytest.approx(1.5)
    loss.backward()
    torch.testing.assert_close(kl2.grad, torch.tensor([0.25, 0.25, 0.0], dtype=F64))
    with pytest.raises(ValueError, match="beta must be"):
        kl_loss(kl, -1.0)
