"""Training the toy_pref preference model (slas.toyworld.pref_train): deterministic, and its checkpoint scores."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from slas import rewards
from slas.toyworld import model as toymodel
from slas.toyworld import pref_train, render, split

METAS = [m for m in split("test")[:12]]


def test_train_pref_runs_and_is_deterministic(tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "xs"
    toymodel.save(toymodel.build("XS"), ckpt)
    small = dict(groups_per_prompt=2, group=2, sample_steps=2, epochs=1, max_prompts=6)
    info = pref_train.train_pref(tmp_path / "a", checkpoint=str(ckpt), log=lambda s: None, **small)
    pref_train.train_pref(tmp_path / "b", checkpoint=str(ckpt), log=lambda s: None, **small)
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert info["train"]["pairs"] == 12 and info["norm"]["std"] > 0  # 6 prompts x 2 groups x C(2, 2)
    fn = rewards.build({"toy_pref": 1.0}, options={"toy_pref": {"checkpoint": str(tmp_path / "a")}})
    imgs = np.stack([render(m, 0) for m in METAS[:3]])
    assert fn(imgs, [m["prompt"] for m in METAS[:3]], METAS[:3])["toy_pref"].shape == (3,)
    with pytest.raises(ValueError, match="unknown train_pref option"):
        pref_train.train_pref(tmp_path / "c", checkpoint=str(ckpt), epoch=3)
