"""The shipped model, the CLI and pretraining reproducibility."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slas.apps.cli import main
from slas.toyworld import model as toymodel
from slas.toyworld.pretrain import lr_at, pretrain


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


def test_lr_schedule_warms_up_then_holds_or_halves():
    assert lr_at(0, 1e-3) == pytest.approx(1e-3 / 200) and lr_at(199, 1e-3) == lr_at(5000, 1e-3) == 1e-3
    assert lr_at(1999, 1e-3, halve_at=2000) == 1e-3 and lr_at(2000, 1e-3, halve_at=2000) == 5e-4


def test_quantize_int8_per_row():
    w = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]])
    q, scale = toymodel.quantize_int8(w)
    assert q.dtype == torch.int8 and q.tolist() == [[64, -127, 32], [0, 0, 0]]  # 1 / (2/127) = 63.5 -> 64 (half to even)
    assert scale.tolist() == pytest.approx([2 / 127, 1.0])  # an all-zero row keeps scale 1, not 0/0
    back = toymodel.dequantize_int8({"w": q, "w" + toymodel.INT8_SCALE: scale, "b": torch.ones(2)})
    assert set(back) == {"w", "b"} and (back["w"] - w).abs().max() <= 1 / 127


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


def test_missing_checkpoint_is_one_clear_error(tmp_path, capsys):
    rc = main(["sample", "--prompt", "a photo of a circle", "--checkpoint", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert rc == 2 and "no ShapesWorld checkpoint" in err and "Traceback" not in err


@pytest.mark.parametrize("prompt, needle", [("a photo of a dog", "'dog'"), ("a photo of of a circle", "cannot parse")])
def test_bad_prompt_is_one_clear_error(prompt, needle, capsys):
    rc = main(["sample", "--prompt", prompt])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and err.count("\n") == 1


def test_sample_writes_images_and_grid_deterministically(tmp_path, capsys):
    args = ["sample", "--prompt", "a photo of a red circle", "-n", "4", "--seed", "3", "--steps", "10"]
    assert main(args + ["--out", str(tmp_path / "a.png")]) == 0
    assert main(args + ["--out", str(tmp_path / "b.png")]) == 0
    a, b = np.array(Image.open(tmp_path / "a.png")), np.array(Image.open(tmp_path / "b.png"))
    assert np.array_equal(a, b)
    singles = sorted((tmp_path / "a").glob("*.png"))
    assert len(singles) == 4 and np.array(Image.open(singles[0])).shape == (32, 32, 3)
    assert "strict verifier" in capsys.readouterr().out


def test_sample_reads_a_prompts_file(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("a photo of two squares\n# comment\n\n" + json.dumps({"prompt": "a photo of a triangle"}) + "\n")
    assert main(["sample", "--prompts-file", str(f), "-n", "2", "--steps", "4", "--out", str(tmp_path / "g.png")]) == 0
    assert len(list((tmp_path / "g").glob("*.png"))) == 4


def test_eval_on_shipped_model_meets_the_base_model_contract(tmp_path):
    out = tmp_path / "eval.json"
    assert main(["toyworld", "eval", "--n-per-prompt", "1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert {"overall_strict", "overall_geneval", "exact_count", "per_tag"} <= set(r)
    assert r["n_images"] == 300
    # imperfect but real: recognisable shapes, room for RL
    assert r["exact_count"] >= 0.60
    assert 0.15 <= r["overall_strict"] <= 0.60
    assert all(v["strict"] > 0 for v in r["per_tag"].values())
    assert r["overall_strict"] == pytest.approx(np.mean([v["strict"] for v in r["per_tag"].values()]))


def test_pretrain_is_reproducible_and_resumes_exactly(tmp_path):
    kw = dict(size="S", steps=4, batch=4, log=lambda s: None)
    a = pretrain(tmp_path / "a", **kw)
    b = pretrain(tmp_path / "b", save_every=2, **kw)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    # interrupted after step 2 (state saved), then resumed: same bytes as uninterrupted
    c = tmp_path / "c"
    assert pretrain(c, stop_at=2, **kw) is None
    assert not (c / "model.safetensors").exists()
    pretrain(c, **kw)
    assert (c / "model.safetensors").read_bytes() == (a / "model.safetensors").read_bytes()


def test_pretrain_saves_its_state_on_the_clock(tmp_path, monkeypatch):
    # a slow model (L: 5 s a step) saves its resumable state every SAVE_MINUTES, not only every save_every steps
    steps = []
    monkeypatch.setattr("slas.toyworld.pretrain._save_state", lambda *a: steps.append(a[4]))
    kw = dict(size="S", steps=3, batch=2, save_every=100, log=lambda s: None)
    monkeypatch.setattr("slas.toyworld.pretrain.SAVE_MINUTES", 1e9)
    pretrain(tmp_path / "a", **kw)
    assert steps == [3]  # the final save only
    monkeypatch.setattr("slas.toyworld.pretrain.SAVE_MINUTES", 0.0)
    steps.clear()
    pretrain(tmp_path / "b", **kw)
    assert steps == [1, 2, 3]


def test_resumed_pretrain_eta_uses_this_process_rate(tmp_path):
    # the ETA after a resume must not spread the earlier parts' elapsed time over this process's steps
    out = tmp_path / "a"
    kw = dict(size="S", batch=1, log=lambda s: None)
    assert pretrain(out, steps=2, stop_at=1, **kw) is None
    meta = json.loads((out / "state" / "meta.json").read_text())
    (out / "state" / "meta.json").write_text(json.dumps(meta | {"elapsed_s": 1e6}))  # an earlier 11-day part
    lines = []
    pretrain(out, steps=101, size="S", batch=1, log=lines.append)
    line = next(s for s in lines if s.startswith("step 100/101"))
    elapsed, eta = (float(line.split(k)[1].split()[0]) for k in ("elapsed ", "eta "))
    assert elapsed > 1e6 / 60 and eta < 1.0


def test_pretrain_stops_on_divergence_without_overwriting_its_state(tmp_path, monkeypatch, capsys):
    # DIVERGE_FACTOR 0.5 makes any step whose 2-step mean loss is not half the best count as divergence
    monkeypatch.setattr("slas.toyworld.pretrain.WARMUP", 1)  # checks from step WARMUP + WINDOW + 1 = 4
    monkeypatch.setattr("slas.toyworld.pretrain.WINDOW", 2)
    monkeypatch.setattr("slas.toyworld.pretrain.DIVERGE_FACTOR", 0.5)
    out = tmp_path / "a"
    with pytest.raises(ValueError, match=r"diverged at step 5: .* rerun with a lower --lr"):
        pretrain(out, size="S", steps=8, batch=2, save_every=4, log=lambda s: None)
    meta = json.loads((out / "state" / "meta.json").read_text())
    assert meta["step"] == 4 and meta["best_loss"] > 0  # the last healthy save, not step 5
    monkeypatch.setattr("slas.toyworld.pretrain.DIVERGE_FACTOR", 2.0)
    assert pretrain(out, size="S", steps=8, batch=2, lr=1e-4, log=lambda s: None) == out  # resumes at a lower lr
    # the CLI turns it into one line, not a traceback
    monkeypatch.setattr("slas.toyworld.pretrain.DIVERGE_FACTOR", 0.5)
    assert main(["toyworld", "pretrain", "--size", "S", "--steps", "12", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "diverged" in err and "Traceback" not in err
