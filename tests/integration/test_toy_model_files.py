"""ShapesWorld model files: the int8 checkpoint round trip, and a LoRA model exported as a plain diffusers UNet."""

import json

import torch

from _toyruns import same_outputs
from slas.toyworld import model as toymodel


def test_export_merges_lora_into_a_plain_unet(tmp_path):
    from diffusers import UNet2DConditionModel

    from slas.toyworld import model as toymodel
    from slas.toyworld.backbone import ToyBackbone

    torch.manual_seed(0)
    bb = ToyBackbone(toymodel.build("XS"), lora={"rank": 2, "alpha": 4, "targets": ["to_q", "to_v"]})
    with torch.no_grad():
        for name, p in bb.model.unet.named_parameters():
            if "lora_B" in name:
                p.normal_()  # B starts at 0: make the adapter matter
    bb.export(tmp_path / "x", {"note": "test"})
    unet = UNet2DConditionModel.from_pretrained(tmp_path / "x" / "unet").eval()
    assert not any("lora" in k for k in unet.state_dict())
    same_outputs(unet, bb.model.unet.eval(), bb.model.text_encoder, bb.model.text_encoder, bb.model)


def test_int8_checkpoint_round_trips_within_half_a_step(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setattr(toymodel, "INT8_MIN_NUMEL", 256)  # XS's tensors are all small; the rule itself is below
    torch.manual_seed(0)
    m = toymodel.build("XS")
    toymodel.save(m, tmp_path / "q", dtype=torch.int8)
    toymodel.save(m, tmp_path / "h", dtype=torch.float16)
    raw = load_file(str(tmp_path / "q" / "model.safetensors"))
    q = toymodel.load(tmp_path / "q")
    assert json.loads((tmp_path / "q" / "config.json").read_text())["weights_dtype"] == "int8"
    n_int8, loaded = 0, q.state_dict()
    for k, a in m.state_dict().items():
        b = loaded[k]
        assert b.dtype == a.dtype and b.shape == a.shape
        if k + toymodel.INT8_SCALE in raw:
            n_int8 += 1
            assert raw[k].dtype == torch.int8 and a.dim() >= 2 and a.numel() >= 256
            half_step = raw[k + toymodel.INT8_SCALE].view(-1, *[1] * (a.dim() - 1)) / 2
            assert ((a - b).abs() <= half_step * (1 + 1e-5)).all()
        elif a.is_floating_point():
            assert raw[k].dtype == torch.float16 and torch.allclose(a, b, atol=1e-3, rtol=1e-3)
            assert a.dim() < 2 or a.numel() < 256 or k.startswith(toymodel.INT8_KEEP)
    assert n_int8 >= 10 and not any(k.startswith(toymodel.INT8_KEEP) and raw[k].dtype == torch.int8 for k in raw)
    sizes = [(tmp_path / d / "model.safetensors").stat().st_size for d in ("q", "h")]
    assert sizes[0] < 0.75 * sizes[1]
