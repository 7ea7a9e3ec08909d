"""ShapesWorld pretraining (slas.toyworld.pretrain): reproducible, resumed to the same bytes, its state saved on the
clock, and an ETA from this process's rate."""

import json

from slas.toyworld.pretrain import pretrain


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
