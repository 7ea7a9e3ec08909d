"""The ShapesWorld model (slas.toyworld.model): the shipped checkpoints load offline by name; int8 quantisation per row."""

import json
from pathlib import Path

import pytest
import torch

from slas.toyworld import model as toymodel


@pytest.mark.parametrize("name, size", [("toy_S", "S"), ("toy_M", "M"), ("toy_L", "L")])
def test_shipped_checkpoints_load_offline_by_name(name, size, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a shipped name means the package's copy from any working directory
    path = toymodel.resolve_checkpoint(name)
    assert path.parent == toymodel.default_checkpoint().parent and toymodel.resolve_checkpoint(None).name == "toy_M"
    assert (path / "model.safetensors").stat().st_size < 10_000_000
    m = toymodel.load(name)
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["size"] == size and cfg["pretrain"]["steps"] > 0
    assert toymodel.count_parameters(m) == cfg["n_params"]
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in m.parameters())  # fp32 on load
    (tmp_path / name).mkdir()  # an existing directory of that name wins over the shipped copy
    assert toymodel.resolve_checkpoint(name) == Path(name)


def test_quantize_int8_per_row():
    w = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]])
    q, scale = toymodel.quantize_int8(w)
    assert q.dtype == torch.int8 and q.tolist() == [[64, -127, 32], [0, 0, 0]]  # 1 / (2/127) = 63.5 -> 64 (half to even)
    assert scale.tolist() == pytest.approx([2 / 127, 1.0])  # an all-zero row keeps scale 1, not 0/0
    back = toymodel.dequantize_int8({"w": q, "w" + toymodel.INT8_SCALE: scale, "b": torch.ones(2)})
    assert set(back) == {"w", "b"} and (back["w"] - w).abs().max() <= 1 / 127
