"""slas.recipe.parallel without processes: how the global batch and the micro-batches are shared over ranks."""

from __future__ import annotations

import matplotlib.pyplot  # noqa: F401  (this module is preloaded by the forkserver: children fork with these loaded)
import pytest
import torch
from diffusers import UNet2DConditionModel  # noqa: F401
from transformers import CLIPTextModel  # noqa: F401

from slas.config import ConfigError
from slas.recipe.parallel import ProcessGroup


def test_share_divides_the_global_batch_or_says_why():
    assert [ProcessGroup(rank=r, size=3).share(12, "N") for r in range(3)] == [slice(0, 4), slice(4, 8), slice(8, 12)]
    with pytest.raises(ConfigError, match=r"N = 6 must divide evenly over the 4 torchrun processes"):
        ProcessGroup(rank=1, size=4).share(6, "N")


def test_micro_batches_cover_every_pair_once_with_the_same_count_per_rank():
    g = torch.Generator().manual_seed(0)
    n_idx, t_idx = torch.randint(0, 8, (13,), generator=g), torch.randint(0, 5, (13,), generator=g)
    one = ProcessGroup().micro_batches(n_idx, t_idx, slice(0, 8), 4)
    assert [mb.pairs for mb in one] == [4, 4, 4, 1]
    assert torch.equal(torch.cat([mb.n for mb in one]), n_idx) and torch.equal(torch.cat([mb.ts for mb in one]), t_idx)
    plans = [ProcessGroup(rank=r, size=2).micro_batches(n_idx, t_idx, slice(4 * r, 4 * r + 4), 2) for r in range(2)]
    assert len(plans[0]) == len(plans[1])  # the same number of forward/backward calls on every rank
    seen = sorted((int(n) + 4 * r, int(t)) for r, plan in enumerate(plans) for mb in plan if mb.pairs
                  for n, t in zip(mb.n, mb.ts, strict=True))
    assert seen == sorted(zip(n_idx.tolist(), t_idx.tolist(), strict=True))
    assert all(mb.pairs == len(mb.n) or (mb.pairs == 0 and len(mb.n) == 1) for plan in plans for mb in plan)
