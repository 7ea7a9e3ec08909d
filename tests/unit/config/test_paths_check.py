"""The files a config names (slas.config.paths): which keys count, what counts as missing, one message listing every
missing one; and docs/real-models.md gives a fetch command for every file a shipped real-model config names."""

import json
import re
import shlex
from pathlib import Path

import pytest

from slas.config import ConfigError, load_config
from slas.config.paths import check_paths, is_path_option, named_paths, path_problem
from slas.policy.common import diffusers_folder_problem

ROOT = Path(__file__).resolve().parents[3]
REAL = sorted(p for p in (ROOT / "configs").glob("*.yaml") if p.stem.split("_")[0] in ("flux", "sd14", "sd35"))


def test_the_path_options():
    assert [n for n in ("model_path", "tokenizer_path", "processor_path", "head_path", "token_file", "med_config",
                        "device", "dtype", "url", "token_env", "arch") if is_path_option(n)] == [
        "model_path", "tokenizer_path", "processor_path", "head_path", "token_file", "med_config"]


def test_named_paths_of_a_shipped_config():
    cfg = load_config(ROOT / "configs" / "sd35_flowgrpo.yaml")
    assert [(n.key, str(n.path), n.kind) for n in named_paths(cfg)] == [
        ("model.path", "models/stable-diffusion-3.5-medium", "diffusers"),
        ("reward.options.pickscore.model_path", "models/PickScore_v1", "any"),
        ("reward.options.pickscore.processor_path", "models/CLIP-ViT-H-14-laion2B-s32B-b79K", "any"),
        ("data.prompts", "data/flow_grpo/pickscore/train.txt", "file"),
        ("data.eval_prompts", "data/flow_grpo/pickscore/test.txt", "file"),
    ]
    assert named_paths(load_config(None)) == []  # the default names no file: ShapesWorld ships its model


def test_diffusers_folder_problems(tmp_path):
    d = tmp_path / "m"
    assert diffusers_folder_problem(d) == "is not a directory"
    d.mkdir()
    assert diffusers_folder_problem(d) == "holds no model_index.json (the folder is empty)"
    (d / "unet").mkdir()
    assert diffusers_folder_problem(d) == "holds no model_index.json"
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
             "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"], "image_encoder": [None, None]}
    (d / "model_index.json").write_text(json.dumps(index))
    assert diffusers_folder_problem(d) == ("lacks vae/, text_encoder/ (named in its model_index.json; an unfinished "
                                           "download?)")  # the safety checker is never loaded, a null is not on disk
    (d / "vae").mkdir()
    (d / "text_encoder").mkdir()
    assert diffusers_folder_problem(d) is None
    (d / "model_index.json").write_text("{")
    assert diffusers_folder_problem(d).startswith("has an unreadable model_index.json")


def test_every_missing_or_empty_file_in_one_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tok").mkdir()
    (tmp_path / "prompts").mkdir()
    (tmp_path / "hps.pt").write_text("x")
    cfg = load_config(None, ["reward.weights={hps: 1.0}", "reward.options.hps.model_path=hps.pt",
                             "reward.options.hps.tokenizer_path=tok", "data.prompts=prompts",
                             "data.eval_prompts=held_out.txt", "model.path=nowhere"])
    assert [path_problem(n) for n in named_paths(cfg)] == [
        "is not a directory", None, "is an empty folder", "is not a file", "does not exist"]
    with pytest.raises(ConfigError) as e:
        check_paths(cfg, "F")
    assert str(e.value) == (
        "F: 4 of the files the config names are not there: model.path 'nowhere' is not a directory; "
        "reward.options.hps.tokenizer_path 'tok' is an empty folder; data.prompts 'prompts' is not a file; "
        "data.eval_prompts 'held_out.txt' does not exist. Nothing is downloaded at run time: fetch them first "
        "(docs/real-models.md lists the command for each file of a shipped config)")
    (tmp_path / "tok" / "vocab.json").write_text("{}")
    (tmp_path / "held_out.txt").write_text("a photo of a circle\n")
    with pytest.raises(ConfigError, match=r"^2 of the files"):
        check_paths(cfg)
    check_paths(load_config(None))  # nothing named, nothing missing


def _fetched(doc: str) -> dict[str, str]:
    """Local path -> the command that fetches it, from the shell lines of docs/real-models.md."""
    out = {}
    for line in doc.splitlines():
        argv = shlex.split(line, comments=True) if line.startswith(("hf download", "curl")) else []
        if argv[:2] == ["hf", "download"]:
            files, options, i = [], {}, 3  # hf download REPO [FILE ...] [--option VALUE ...]
            while i < len(argv):
                if argv[i].startswith("--"):
                    options[argv[i]], i = argv[i + 1], i + 2
                else:
                    files, i = [*files, argv[i]], i + 1
            for f in files or [""]:
                out[f"{options['--local-dir']}/{f}".rstrip("/")] = line
        elif argv[:1] == ["curl"]:
            out[argv[argv.index("-o") + 1]] = line
    return out


@pytest.mark.parametrize("config", REAL, ids=[p.stem for p in REAL])
def test_real_models_doc_fetches_every_file_a_shipped_config_names(config):
    fetched = _fetched((ROOT / "docs" / "real-models.md").read_text(encoding="utf-8"))
    named = named_paths(load_config(config))
    assert {n.key.split(".")[0] for n in named} == {"model", "reward", "data"}
    for n in named:
        assert str(n.path) in fetched, f"{config.name}: {n.key} {n.path} has no fetch command in docs/real-models.md"
        cmd = fetched[str(n.path)]
        assert "--revision" in cmd or re.search(r"/raw/[0-9a-f]{7,40}/|/raw/main/", cmd), cmd
