"""Every checkpoint layout is checked before it is loaded: a ShapesWorld checkpoint folder (model.safetensors +
config.json, what `slas sample --checkpoint DIR` and `slas eval --model DIR` take), one `checkpoints/iter_*` of a
run, a run directory, and a diffusers pipeline folder (model_index.json + subfolders). A truncated or corrupt
safetensors file, JSON or YAML that does not parse, or a missing file is one `error:` line naming the file and what
is wrong, exit status 2 (docs/reliability.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from _toyruns import tiny_overrides
from slas.apps.cli import main
from slas.toyworld import model as toymodel

PROMPT = "a photo of a red circle"


def _one_error(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, err
    return err


def _sample(path: Path, tmp: Path) -> int:
    return main(["sample", "--checkpoint", str(path), "--prompt", PROMPT, "-n", "1", "--steps", "1",
                 "--out", str(tmp / "grid.png")])


def _half(path: Path) -> int:
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    return size // 2


# ---- a ShapesWorld checkpoint folder: model.safetensors + config.json ----------------------------------------


def _shipped_case(case: str, d: Path) -> str:
    """Damage the ShapesWorld checkpoint folder ``d`` as ``case`` says; returns what the error line must hold."""
    weights, config = d / "model.safetensors", d / "config.json"
    if case == "truncated_weights":
        size = weights.stat().st_size
        return f"{weights}: truncated: {_half(weights):,} bytes, but its header describes {size:,}"
    if case == "corrupt_header":
        data = bytearray(weights.read_bytes())
        data[8:16] = b"\xff" * 8
        weights.write_bytes(bytes(data))
        return f"{weights}: not a safetensors file, or a corrupt one: its header is not JSON"
    if case == "config_not_json":
        config.write_text('{"size": "XS",')
        return f"{config}: not valid JSON (Expecting property name enclosed in double quotes at line 1, column 15)"
    if case == "config_not_a_model":
        config.write_text(json.dumps({"size": "XS"}))
        return f"{config}: not a ShapesWorld model's config: it needs block_out_channels, "
    if case == "weights_of_another_model":
        config.write_text(json.dumps(toymodel.SIZES["S"] | {"size": "S"}))
        return f"{weights} does not fit the model {config} describes: "
    if case == "missing_config":
        config.unlink()
        return f"{config}: missing; a ShapesWorld checkpoint directory holds model.safetensors and config.json"
    raise AssertionError(case)


SHIPPED_CASES = ["truncated_weights", "corrupt_header", "config_not_json", "config_not_a_model",
                 "weights_of_another_model", "missing_config"]


@pytest.mark.parametrize("case", SHIPPED_CASES)
def test_a_damaged_shapesworld_checkpoint_folder_is_one_error_line(case, tiny_ckpt, tmp_path, capsys):
    d = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, d)
    needle = _shipped_case(case, d)
    _one_error(capsys, _sample(d, tmp_path), needle)
    rc = main(["eval", "--suite", "toyworld", "--model", str(d), "--max-prompts", "2", "--out", str(tmp_path / "o")])
    _one_error(capsys, rc, needle)


def test_a_truncated_shipped_model_header_is_named(tiny_ckpt, tmp_path, capsys):
    """The issue's case: a model.safetensors cut inside its header (was: SafetensorError, incomplete metadata)."""
    d = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, d)
    weights = d / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    _one_error(capsys, _sample(d, tmp_path), f"{weights}: truncated: 1,000 bytes, shorter than its own header (")


# ---- a run directory and one of its checkpoints/iter_* --------------------------------------------------------


@pytest.fixture(scope="module")
def run(tiny_ckpt, tmp_path_factory):
    """A finished 2-iteration run that keeps an EMA."""
    out = tmp_path_factory.mktemp("layouts") / "run"
    assert main(["train", "--no-progress", *tiny_overrides(tiny_ckpt, out, **{"train.ema_decay": 0.5})]) == 0
    return out


def test_one_checkpoint_of_a_run_loads_that_checkpoint(run, tmp_path, capsys):
    assert _sample(run / "checkpoints" / "iter_000001", tmp_path) == 0
    assert f"weights: run {run} iter_000001 (EMA weights)" in capsys.readouterr().out
    rc = main(["eval", "--suite", "toyworld", "--model", str(run / "checkpoints" / "iter_000001"), "--no-ema",
               "--max-prompts", "2", "--steps", "1", "--no-images", "--out", str(tmp_path / "o")])
    assert rc == 0
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["model"] == f"run {run} iter_000001 (raw weights)"


@pytest.mark.parametrize("case", ["checkpoint_without_its_run", "checkpoint_without_state", "run_without_config",
                                  "run_config_not_yaml"])
def test_a_damaged_run_or_run_checkpoint_is_one_error_line(case, run, tmp_path, capsys):
    r = tmp_path / "run"
    shutil.copytree(run, r)
    ckpt = r / "checkpoints" / "iter_000001"
    target = ckpt
    if case == "checkpoint_without_its_run":
        (r / "config.yaml").unlink()
        needle = f"{ckpt} is a checkpoint of `slas train`, but {r / 'config.yaml'} is missing"
    elif case == "checkpoint_without_state":
        (ckpt / "state.json").unlink()
        needle = f"{ckpt / 'state.json'}: missing (the checkpoint directory is incomplete)"
    elif case == "run_without_config":
        (r / "config.yaml").unlink()
        target, needle = r, f"{r}: no config.yaml there; is it a run directory of `slas train`?"
    else:
        (r / "config.yaml").write_text("train: [1, 2\n")
        target, needle = r, f"{r / 'config.yaml'} is not valid YAML"
    _one_error(capsys, _sample(target, tmp_path), needle)


# ---- a diffusers pipeline folder ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A tiny StableDiffusionPipeline folder of random components (tests/_tinypipes.py)."""
    from _tinypipes import build_pipeline, tokenizers

    d = tmp_path_factory.mktemp("layouts_pipe") / "sd"
    build_pipeline("sd", *tokenizers(["a photo of a cat", "a red circle on a table"])).save_pretrained(d)
    return d


def _eval(model: Path, tmp: Path) -> int:
    prompts = tmp / "prompts.txt"
    prompts.write_text("a photo of a cat\n")
    return main(["eval", "--suite", "reward", "--reward", "toy_clean", "--model", str(model), "--prompts", str(prompts),
                 "--steps", "1", "--no-images", "--out", str(tmp / "eval")])


PIPELINE_CASES = ["truncated_weights", "index_not_json", "scheduler_config_not_json", "missing_component",
                  "missing_shard", "config_that_does_not_fit"]


@pytest.mark.parametrize("case", PIPELINE_CASES)
def test_a_damaged_diffusers_folder_is_one_error_line(case, pipeline, tmp_path, capsys):
    d = tmp_path / "sd"
    shutil.copytree(pipeline, d)
    unet = d / "unet" / "diffusion_pytorch_model.safetensors"
    if case == "truncated_weights":
        size = unet.stat().st_size
        _half(unet)
        needle = f"{unet}: truncated: {size // 2:,} bytes, but its header describes {size:,}"
    elif case == "index_not_json":
        (d / "model_index.json").write_text("{")
        needle = f"{d / 'model_index.json'}: not valid JSON ("
    elif case == "scheduler_config_not_json":
        (d / "scheduler" / "scheduler_config.json").write_bytes(b"\x00\xff")
        needle = f"{d / 'scheduler' / 'scheduler_config.json'}: not text; the file is corrupt"
    elif case == "missing_component":
        shutil.rmtree(d / "vae")
        needle = f"{d / 'vae'}: missing (model_index.json lists the component 'vae')"
    elif case == "missing_shard":  # sharded weights: an index naming a shard file that is not there
        (d / "unet" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": {"conv_in.weight": "diffusion_pytorch_model-00001-of-00002.safetensors"}}))
        needle = f"{d / 'unet' / 'diffusion_pytorch_model-00001-of-00002.safetensors'}: missing (" \
                 "diffusion_pytorch_model.safetensors.index.json lists it)"
    else:  # valid JSON whose values do not fit the weights: only loading can tell
        cfg = json.loads((d / "unet" / "config.json").read_text())
        (d / "unet" / "config.json").write_text(json.dumps(cfg | {"block_out_channels": [32, 96]}))
        needle = f"{d}: cannot load it as a 'sd' pipeline ("
    _one_error(capsys, _eval(d, tmp_path), needle)


def test_training_from_a_damaged_diffusers_folder_is_one_error_line_and_leaves_nothing(pipeline, tmp_path, capsys):
    d = tmp_path / "sd"
    shutil.copytree(pipeline, d)
    vae = d / "vae" / "diffusion_pytorch_model.safetensors"
    vae.write_bytes(vae.read_bytes()[:3000])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a cat\n")
    rc = main(["train", "--config", "sd14_slas", f"model.path={d}", f"run.out_dir={tmp_path / 'run'}",
               f"data.prompts={prompts}", f"data.eval_prompts={prompts}", "reward.weights={toy_clean: 1.0}",
               "reward.options={}"])
    _one_error(capsys, rc, f"{vae}: truncated: 3,000 bytes, shorter than its own header (")
    assert not (tmp_path / "run").exists()
