"""Pure pieces of the policy objectives (slas.recipe.objectives): the old policy's decay schedule and the pair noise."""

from __future__ import annotations

import pytest
import torch

from slas.config import load_config
from slas.recipe.objectives import old_decay, pair_noise


def test_old_policy_decay_schedule():
    cfg = load_config(None, ["train.objective=nft", "sample.same_noise_in_group=false", "sample.eta=0"])
    assert [old_decay(cfg, s) for s in (0, 100, 500, 4000)] == [0.0, pytest.approx(0.1), 0.5, 0.5]


def test_pair_noise_is_a_function_of_the_key_only():
    a = pair_noise(7, torch.tensor([3, 1, 2]), (2, 2))
    b = pair_noise(7, torch.tensor([2, 3]), (2, 2))
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0]) and not torch.equal(a[0], a[1])
