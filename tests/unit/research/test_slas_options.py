"""research/slas_options.py: the option table's quantities on hand-made reward batches (no rollout)."""

import pytest
import torch

from _scripts import load_script

so = load_script("research/slas_options.py")


def test_option_rows_scale_clip_zero_and_agreement():
    g = torch.arange(3).repeat_interleave(4)  # 3 groups x 4
    r = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.2, 0.4, 0.6, 0.8, 0.5, 0.5, 0.5, 0.5], dtype=torch.float64)  # a flat group
    opts = {"ref": ("slas", {"gamma": 0.0, "batch_std_of": "rewards"}), "linear": ("grpo_global_std", {}),
            "double": ("slas", {"gamma": 1.0}), "tight": ("grpo_global_std", {})}
    rows = {x["option"]: x for x in so.option_rows([(r, g)], adv_clip=5.0, options=opts)}
    # SLAS at gamma 0 with the raw rewards' std is grpo_global_std (up to its Flow-GRPO eps, std + 1e-4)
    assert rows["linear"]["ratio"] == pytest.approx(0.31623 / (0.31623 + 1e-4), rel=1e-5)
    assert rows["linear"]["corr"] == pytest.approx(1.0)
    assert rows["ref"]["zero_frac"] == pytest.approx(4 / 12)  # the flat group
    # nft's r = A / 10 + 1/2: mean |r - 1/2| is mean |A| / 10
    assert rows["ref"]["push"] == pytest.approx(rows["ref"]["abs_mean"] / 10)
    # a clip at 0.5: grpo_global_std's |A| = |r - mean_g| / std(r), std(r) = 0.3162: the 0/1 group (|A| 1.58) and
    # the outer two of the 0.2..0.8 group (|A| 0.95; the inner two 0.32) bind
    tight = {x["option"]: x for x in so.option_rows([(r, g)], adv_clip=0.5, options=opts)}["tight"]
    assert tight["clip_frac"] == pytest.approx(6 / 12) and tight["abs_mean"] <= 0.5
    assert so.table(list(rows.values()))[2].startswith("| ref | ")
