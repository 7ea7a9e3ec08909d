"""The command line of the shipped model: `slas sample` (images, grids labelled with verdicts, prompt
files, one error line for a bad prompt or checkpoint), `slas toyworld eval`, `python -m slas`, and a diverging
`slas toyworld pretrain`."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib.pyplot  # noqa: F401  (this module is preloaded by the forkserver: children fork with these loaded)
import numpy as np
import pytest
from diffusers import UNet2DConditionModel  # noqa: F401
from PIL import Image
from transformers import CLIPTextModel  # noqa: F401

from _toyruns import GRID_PROMPTS
from slas.apps.cli import main
from slas.recipe.prompts import PromptFileError, load_prompts
from slas.toyworld import parse, verify
from slas.toyworld.evaluate import labelled_grid
from slas.toyworld.pretrain import pretrain


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


def test_sample_writes_a_labelled_grid_and_verdicts(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "g.png"
    assert main(["sample", "--checkpoint", str(tiny_ckpt), "--prompt", GRID_PROMPTS[0], "--prompt", GRID_PROMPTS[1],
                 "-n", "2", "--seed", "3", "--steps", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "strict verifier:" in printed and "(n=4)" in printed
    recs = [json.loads(ln) for ln in (tmp_path / "g" / "verdicts.jsonl").read_text().splitlines()]
    assert [r["image"] for r in recs] == ["0000.png", "0001.png", "0002.png", "0003.png"]
    assert [r["prompt"] for r in recs] == [GRID_PROMPTS[0]] * 2 + [GRID_PROMPTS[1]] * 2
    assert [r["seed"] for r in recs] == [3, 4, 5, 6]
    images = np.stack([np.asarray(Image.open(tmp_path / "g" / r["image"])) for r in recs])
    metas = [parse(r["prompt"]) for r in recs]
    results = [verify(im, m) for im, m in zip(images, metas, strict=True)]
    assert [(r["correct"], r["reasons"]) for r in recs] == [(x.correct, x.reasons) for x in results]
    assert np.array_equal(np.asarray(Image.open(out)), labelled_grid(images, metas, results, ncol=2))


def test_toyworld_eval_grid_is_labelled(tiny_ckpt, tmp_path, capsys):
    g = tmp_path / "grid.png"
    assert main(["toyworld", "eval", "--checkpoint", str(tiny_ckpt), "--max-prompts", "3", "--steps", "2",
                 "--grid", str(g)]) == 0
    assert "95% CI" in capsys.readouterr().out
    assert Image.open(g).height > 96 + 3 * 12  # a row of 3x images and their label lines (the plain grid: 68 px)


def test_sample_reads_the_same_plain_file(tiny_ckpt, tmp_path, capsys):
    fixed = tmp_path / "fixed.txt"
    fixed.write_text("a photo of a red circle\na photo of three triangles\n")
    assert main(["sample", "--checkpoint", str(tiny_ckpt), "--prompts-file", str(fixed), "-n", "1", "--steps", "2",
                 "--out", str(tmp_path / "g.png")]) == 0
    verdicts = [json.loads(x) for x in (tmp_path / "g" / "verdicts.jsonl").read_text().splitlines()]
    assert [v["prompt"] for v in verdicts] == ["a photo of a red circle", "a photo of three triangles"]


def test_python_dash_m_slas_is_the_cli():
    rc = subprocess.run([sys.executable, "-m", "slas", "train", "--help"], capture_output=True, text=True, timeout=60)
    assert rc.returncode == 0 and "--resume" in rc.stdout


def test_sample_cli_suggests_for_the_old_readme_example(capsys):
    assert main(["sample", "--prompt", "a photo of a red circle left of a square", "-n", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'a photo of a circle left of a square'" in err


def test_an_empty_prompts_file_is_reported_as_empty(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(PromptFileError, match="is empty"):
        load_prompts(empty)
    for value, needle in [(str(empty), f"prompt file {empty} is empty"), ("", "the path is empty")]:
        assert main(["sample", "--prompts-file", value]) == 2
        err = capsys.readouterr().err
        assert needle in err and "--prompt TEXT" not in err  # not "give --prompt or --prompts-file"
