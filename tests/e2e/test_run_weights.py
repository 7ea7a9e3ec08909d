"""Sampling a trained run: `slas sample` / `slas toyworld eval --checkpoint RUN_DIR` and the one loader behind them
(slas.recipe.run_dir.load_run), which `slas eval --model RUN` and `slas export` share."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

from _toyruns import tiny_overrides
from slas.apps.cli import main
from slas.recipe import checkpoint
from slas.recipe.run_dir import RunError, load_run


def _rehash(ckpt) -> None:
    """Record the checkpoint's current files in its state.json, as if the writer had saved them."""
    state = json.loads((ckpt / "state.json").read_text())
    state["checksums"] = {p.name: checkpoint._digest(p) for p in sorted(ckpt.iterdir())
                          if p.is_file() and p.name != "state.json"}
    (ckpt / "state.json").write_text(json.dumps(state))


PROMPTS = ["a photo of a red circle", "a photo of two squares", "a photo of a blue triangle"]


@pytest.fixture(scope="module")
def runs(tiny_ckpt, tmp_path_factory):
    """A 1-iteration run of the XS model with a high lr (the weights surely move) that keeps an EMA, and the same run
    as a run without one leaves it (train.ema_decay 0: no ema.safetensors), without training it again."""
    root = tmp_path_factory.mktemp("runs")
    ov = tiny_overrides(tiny_ckpt, root / "ema", **{
        "train.iterations": 1, "train.lr": 1e-2, "train.ema_decay": 0.5, "eval.every": 0, "eval.max_prompts": 3,
        "eval.images_per_tag": 0, "eval.grid_prompts": "[a photo of a red circle]"})
    assert main(["train", "--no-progress", *ov]) == 0
    shutil.copytree(root / "ema", root / "raw")
    (root / "raw" / "checkpoints" / "iter_000001" / "ema.safetensors").unlink()
    cfg = yaml.safe_load((root / "raw" / "config.yaml").read_text())
    cfg["train"]["ema_decay"], cfg["run"]["out_dir"] = 0.0, str(root / "raw")
    (root / "raw" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    f = root / "prompts.txt"
    f.write_text("\n".join(PROMPTS) + "\n")
    return root / "ema", root / "raw", f


def _sample(tmp_path, name, checkpoint, prompts_file, *extra) -> np.ndarray:
    out = tmp_path / f"{name}.png"
    assert main(["sample", "--checkpoint", str(checkpoint), "--prompts-file", str(prompts_file), "-n", "1",
                 "--seed", "0", "--steps", "4", "--out", str(out), *extra]) == 0
    files = sorted((tmp_path / name).glob("*.png"))
    assert len(files) == len(PROMPTS)  # one image per prompt
    return np.stack([np.asarray(Image.open(p)) for p in files])


def test_sample_a_run_uses_its_trained_weights(runs, tiny_ckpt, tmp_path, capsys):
    ema_run, raw_run, prompts = runs
    base = _sample(tmp_path, "base", tiny_ckpt, prompts)
    trained = _sample(tmp_path, "trained", raw_run, prompts)
    out = capsys.readouterr().out
    assert f"weights: run {raw_run} iter_000001 (raw weights)" in out
    assert trained.shape == base.shape == (len(PROMPTS), 32, 32, 3)
    assert not np.array_equal(trained, base)  # the trained weights, not the base model's
    assert np.array_equal(_sample(tmp_path, "again", raw_run, prompts), trained)  # deterministic in the seed


def test_run_with_an_ema_samples_the_ema_weights(runs, tmp_path, capsys):
    ema_run, _, prompts = runs
    ckpt = ema_run / "checkpoints" / "iter_000001"
    ema, policy = load_file(str(ckpt / "ema.safetensors")), load_file(str(ckpt / "model.safetensors"))
    assert any(not torch.equal(ema[k], policy[k]) for k in ema)  # the EMA lags the policy

    run = load_run(ema_run)
    assert run.ema and run.iteration == 1 and run.checkpoint == ckpt
    assert run.description == f"run {ema_run} iter_000001 (EMA weights)"
    state = run.backbone.module.state_dict()
    assert all(torch.equal(state[k], v) for k, v in ema.items())
    assert all(torch.equal(state[k], v) for k, v in policy.items() if k not in ema)  # buffers, frozen weights
    raw = load_run(ema_run, ema=False)
    assert not raw.ema and all(torch.equal(raw.backbone.module.state_dict()[k], v) for k, v in policy.items())

    with_ema = _sample(tmp_path, "ema", ema_run, prompts)
    assert "(EMA weights)" in capsys.readouterr().out
    no_ema = _sample(tmp_path, "noema", ema_run, prompts, "--no-ema")
    assert "(raw weights)" in capsys.readouterr().out
    assert not np.array_equal(with_ema, no_ema)


def test_toyworld_eval_and_slas_eval_read_the_same_weights(runs, tmp_path, capsys):
    ema_run, _, _ = runs
    j = tmp_path / "tw.json"
    assert main(["toyworld", "eval", "--checkpoint", str(ema_run), "--max-prompts", "3", "--steps", "4",
                 "--json", str(j)]) == 0
    assert f"weights: run {ema_run} iter_000001 (EMA weights)" in capsys.readouterr().out
    assert main(["eval", "--suite", "toyworld", "--model", str(ema_run), "--max-prompts", "3", "--steps", "4",
                 "--no-images", "--out", str(tmp_path / "ev")]) == 0
    tw = json.loads(j.read_text())
    ev = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert "EMA weights" in ev["model"]
    assert tw["n_images"] == 3 and tw["overall_strict"] == pytest.approx(ev["overall_strict"])


def test_load_run_errors(runs, tmp_path):
    ema_run, raw_run, _ = runs
    with pytest.raises(RunError, match="no config.yaml there"):
        load_run(tmp_path)
    with pytest.raises(RunError, match="holds no EMA weights"):
        load_run(raw_run, ema=True)
    assert not load_run(raw_run).ema  # the default falls back to the policy's weights


def _one_error_line(capsys, argv, needle):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_sample_errors_are_one_line(runs, tmp_path, capsys):
    ema_run, _, prompts = runs
    sample = ["sample", "--prompts-file", str(prompts), "-n", "1", "--out", str(tmp_path / "g.png"), "--checkpoint"]
    # a run that has not saved a checkpoint yet
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(ema_run / "config.yaml", empty / "config.yaml")
    _one_error_line(capsys, [*sample, str(empty)], "holds no checkpoint yet")
    _one_error_line(capsys, ["toyworld", "eval", "--checkpoint", str(empty)], "holds no checkpoint yet")
    # an EMA file naming parameters the model lacks
    bad = tmp_path / "bad"
    shutil.copytree(ema_run, bad)
    ckpt = bad / "checkpoints" / "iter_000001"
    # files rewritten below with their checksums updated, as a bug in the writer would leave them (any other
    # rewrite is "corrupt": tests/e2e/test_resume_safety.py)
    ema = load_file(str(ckpt / "ema.safetensors"))
    save_file(ema | {"nope.weight": torch.zeros(2)}, str(ckpt / "ema.safetensors"))
    _rehash(ckpt)
    _one_error_line(capsys, [*sample, str(bad)], "names 1 parameter(s) the model lacks, e.g. ['nope.weight']")
    # weights that do not fit the config's model
    save_file({"nope.weight": torch.zeros(2)}, str(ckpt / "model.safetensors"))
    _rehash(ckpt)
    _one_error_line(capsys, [*sample, str(bad), "--no-ema"], "does not fit the model built from")
    # a run of another backbone: `slas sample` draws ShapesWorld models only (refused before building it)
    other = tmp_path / "sd3run"
    shutil.copytree(ema_run, other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["model"] |= {"backbone": "sd3", "path": str(tmp_path / "no_such_pipeline"), "checkpoint": None}
    cfg["data"] |= {"prompts": str(prompts), "eval_prompts": str(prompts)}
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    _one_error_line(capsys, [*sample, str(other)], "samples ShapesWorld (model.backbone toy) models only")
    # export (a ShapesWorld run exports: tests/e2e/test_export_cli.py): --ema on a run without an EMA
    _one_error_line(capsys, ["export", str(runs[1]), "--ema", "--out", str(tmp_path / "x")], "holds no EMA weights")
    _one_error_line(capsys, ["export", str(empty), "--out", str(tmp_path / "x")], "holds no checkpoint yet")
