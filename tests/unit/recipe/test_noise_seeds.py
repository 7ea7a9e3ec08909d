"""Training never draws the evaluation's noise: the iteration seeds (slas.recipe.train.iteration_seed) stay outside the
evaluation seeds (slas.policy.generate.seeded_noise)."""

import pytest
import torch

from slas.policy.generate import EVAL_SEED_LIMIT, seeded_noise
from slas.recipe.train import iteration_seed
from slas.toyworld.world import CANVAS


def test_training_noise_never_equals_evaluation_noise():
    shape = (3, CANVAS, CANVAS)
    for seed in range(3):
        for it in range(1, 40):
            s = iteration_seed(seed, it)
            assert s >= EVAL_SEED_LIMIT
            g = torch.Generator().manual_seed(s)
            group0 = torch.randn(1, *shape, generator=g)  # what the recipe draws first for group 0
            for eval_seed in (it, seed * 1_000_003 + it, s % EVAL_SEED_LIMIT):  # before: seed 0 iteration it = eval seed it
                assert not torch.equal(group0, seeded_noise([eval_seed], shape))
    with pytest.raises(ValueError, match="outside"):
        seeded_noise([EVAL_SEED_LIMIT], shape)
