"""Pretraining's learning-rate schedule (slas.toyworld.pretrain.lr_at)."""

import pytest

from slas.toyworld.pretrain import lr_at


def test_lr_schedule_warms_up_then_holds_or_halves():
    assert lr_at(0, 1e-3) == pytest.approx(1e-3 / 200) and lr_at(199, 1e-3) == lr_at(5000, 1e-3) == 1e-3
    assert lr_at(1999, 1e-3, halve_at=2000) == 1e-3 and lr_at(2000, 1e-3, halve_at=2000) == 5e-4
