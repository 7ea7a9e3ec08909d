"""`slas eval` (slas.apps.eval) at the command line: the geneval suite against `slas toyworld eval`, GenEval's
image folders scored with the ShapesWorld detector or Mask2Former + CLIP, a diffusers pipeline as the model, run
directories, the reward suite, `--compare`, and one error line for each bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from slas.apps.cli import main
from slas.apps.eval import load_model
from slas.evals import geneval
from slas.evals.stats import mean_ci
from slas.policy.generate import generate
from slas.recipe import checkpoint
from slas.toyworld import model as toymodel
from slas.toyworld import verify


def lines(path: Path) -> list[dict]:
    return [json.loads(s) for s in path.read_text().splitlines()]


# ---------------------------------------------------------------------------
# GenEval with detector (b), Mask2Former + CLIP (tiny random models, tests/conftest.py)
# ---------------------------------------------------------------------------


def test_mask2former_scores_an_image_folder_from_the_cli(tiny_detector_dirs, tmp_path, capsys):
    m2f, clip = tiny_detector_dirs
    folder = tmp_path / "imgs" / "00000"
    (folder / "samples").mkdir(parents=True)
    (folder / "metadata.jsonl").write_text(json.dumps({"tag": "single_object", "include": [{"class": "cup", "count": 1}],
                                                       "prompt": "a photo of a cup"}))
    for k in range(2):
        Image.fromarray(np.random.default_rng(k).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
            folder / "samples" / f"{k:04d}.png")
    args = ["eval", "--suite", "geneval", "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "o")]
    rc = main(args)
    assert rc == 2 and "needs --detector-path" in capsys.readouterr().err
    assert main(args + ["--detector-path", str(m2f), "--clip-path", str(clip)]) == 0
    recs = lines(tmp_path / "o" / "results.jsonl")
    assert len(recs) == 2 and [r["sample"] for r in recs] == [0, 1]
    assert set(recs[0]) >= {"filename", "tag", "prompt", "correct", "reason", "metadata", "details"}
    assert isinstance(json.loads(recs[0]["details"]), dict)  # upstream writes details as a JSON string
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["detector"] == "mask2former"


@pytest.fixture(scope="module")
def tiny_sd_pipeline(tmp_path_factory):
    """A stock StableDiffusionPipeline of tiny random components, saved as a local folder."""
    from transformers import CLIPTokenizer

    from _tinypipes import build_pipeline

    words = [f"a photo of a {c} {o}" for c in geneval.COLORS for o in ("cup", "dog", "bench")]
    pipe = build_pipeline("sd", CLIPTokenizer(model_max_length=77).train_new_from_iterator(words * 5, vocab_size=400))
    path = tmp_path_factory.mktemp("pipe") / "sd"
    pipe.save_pretrained(path)
    return path


def test_geneval_on_a_diffusers_pipeline_with_mask2former(tiny_sd_pipeline, tiny_detector_dirs, tmp_path):
    """PIPELINE_DIR -> its slas.policy adapter -> deterministic DDIM -> Mask2Former + CLIP -> GenEval results."""
    m2f, clip = tiny_detector_dirs
    prompts = tmp_path / "meta.jsonl"
    prompts.write_text("".join(json.dumps(m) + "\n" for m in [
        {"tag": "single_object", "include": [{"class": "cup", "count": 1}], "prompt": "a photo of a cup"},
        {"tag": "colors", "include": [{"class": "dog", "count": 1, "color": "red"}], "prompt": "a photo of a red dog"},
    ]))
    args = ["eval", "--suite", "geneval", "--model", str(tiny_sd_pipeline), "--prompts", str(prompts), "--steps", "2",
            "--n-per-prompt", "2", "--device", "cpu", "--detector-path", str(m2f), "--clip-path", str(clip)]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s["detector"] == "mask2former" and s["sampler"] == "DDIM, eta 0" and s["n_images"] == 4
    assert "StableDiffusionPipeline" in s["model"]
    recs = lines(tmp_path / "a" / "results.jsonl")
    assert [(r["prompt"], r["sample"]) for r in recs] == [("a photo of a cup", 0), ("a photo of a cup", 1),
                                                          ("a photo of a red dog", 0), ("a photo of a red dog", 1)]
    images = [np.asarray(Image.open(tmp_path / "a" / r["filename"])) for r in recs]
    assert images[0].shape == (64, 64, 3) and not np.array_equal(images[0], images[1])  # two seeds
    assert main(args + ["--out", str(tmp_path / "b"), "--no-images"]) == 0  # deterministic: the same verdicts
    assert [r["details"] for r in lines(tmp_path / "b" / "results.jsonl")] == [r["details"] for r in recs]


# ---------------------------------------------------------------------------
# slas eval on ShapesWorld models
# ---------------------------------------------------------------------------

FEW = ["--max-prompts", "12", "--steps", "6"]


@pytest.fixture(scope="module")
def base_geneval(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "geneval"
    assert main(["eval", "--suite", "geneval", "--model", "base", "--out", str(out)] + FEW) == 0
    return out


def test_geneval_suite_equals_toyworld_eval(base_geneval, tmp_path):
    assert main(["toyworld", "eval", "--json", str(tmp_path / "tw.json")] + FEW) == 0
    tw = json.loads((tmp_path / "tw.json").read_text())
    ge = json.loads((base_geneval / "summary.json").read_text())
    assert ge["n_images"] == tw["n_images"] == 12
    assert ge["overall"] == pytest.approx(tw["overall_geneval"], abs=1e-12)
    assert {t: v["geneval"] for t, v in tw["per_tag"].items()} == pytest.approx(ge["per_tag"], abs=1e-12)
    assert 0 < ge["overall"] < 1  # a non-trivial check
    # image by image: the toyworld suite's geneval_correct is the geneval suite's correct
    assert main(["eval", "--suite", "toyworld", "--model", "base", "--no-images", "--out", str(tmp_path / "t")] + FEW) == 0
    toy = lines(tmp_path / "t" / "results.jsonl")
    gen = lines(base_geneval / "results.jsonl")
    assert [(r["prompt"], r["seed"], r["geneval_correct"]) for r in toy] == [(r["prompt"], r["seed"], r["correct"]) for r in gen]
    assert all(r["filename"] is None for r in toy)
    assert json.loads((tmp_path / "t" / "summary.json").read_text())["overall_strict"] == tw["overall_strict"]


def test_geneval_results_follow_upstream_format_and_rescore_from_images(base_geneval, tmp_path):
    recs = lines(base_geneval / "results.jsonl")
    first = recs[0]
    assert list(first)[:7] == ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"]
    meta = json.loads(first["metadata"])
    img = np.asarray(Image.open(base_geneval / first["filename"]))
    assert first["correct"] == verify(img, meta).geneval_correct
    folder_meta = json.loads((base_geneval / "images" / "00000" / "metadata.jsonl").read_text())
    assert folder_meta == meta  # GenEval's generation layout
    assert main(["eval", "--suite", "geneval", "--images", str(base_geneval / "images"), "--detector", "shapesworld",
                 "--out", str(tmp_path / "re")]) == 0
    again = lines(tmp_path / "re" / "results.jsonl")
    assert [(r["metadata"], r["sample"], r["correct"], r["details"]) for r in again] == \
           [(r["metadata"], r["sample"], r["correct"], r["details"]) for r in recs]


@pytest.fixture(scope="module")
def xs_run(tmp_path_factory):
    """A run directory as `slas train` leaves it (config.yaml + checkpoints/iter_*), with an EMA, on an XS model."""
    from slas.config import load_config
    from slas.recipe.builders import build_backbone

    root = tmp_path_factory.mktemp("xsrun")
    torch.manual_seed(0)
    toymodel.save(toymodel.build("XS"), root / "xs")
    run = root / "run"
    cfg = load_config(None, [f"model.checkpoint={root / 'xs'}", f"run.out_dir={run}", "eval.steps=3",
                             "train.ema_decay=0.9"])
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    module = build_backbone(cfg).module
    opt = torch.optim.AdamW(module.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ema = {}
    with torch.no_grad():
        for k, p in module.named_parameters():
            if p.requires_grad:
                ema[k] = p.detach() + 0.05  # what an EMA would hold: something else
        checkpoint.save(run / "checkpoints", 1, module, opt, sched, ema, {})
        for p in module.parameters():
            p.mul_(1.1)  # the "trained" weights of the later checkpoint
        checkpoint.save(run / "checkpoints", 2, module, opt, sched, ema, {})
    return run, {k: v.clone() for k, v in module.state_dict().items()}, ema


def test_run_dir_loads_the_latest_checkpoint_and_its_ema(xs_run, tmp_path):
    run, trained, ema = xs_run
    raw, with_ema = load_model(str(run), ema=False), load_model(str(run))
    assert "iter_000002" in raw.description and "raw" in raw.description and "EMA" in with_ema.description
    assert raw.steps == 3 and raw.shapesworld
    assert all(torch.equal(raw.backbone.module.state_dict()[k], v) for k, v in trained.items())
    assert all(torch.equal(with_ema.backbone.module.state_dict()[k], v) for k, v in ema.items())
    # `slas sample` and `slas toyworld eval` read a run through the same loader: the same weights, named the same
    sample = load_model(str(run), shapesworld_only="sample")
    assert sample.from_run and raw.from_run and sample.description == with_ema.description
    assert all(torch.equal(sample.backbone.module.state_dict()[k], v) for k, v in ema.items())
    assert not load_model(None, shapesworld_only="sample").from_run  # the shipped model: no run to name
    # the CLI samples what the loaded weights generate, with the run's eval.steps and plan()'s seeds
    assert main(["eval", "--suite", "toyworld", "--model", str(run), "--no-ema", "--max-prompts", "3",
                 "--out", str(tmp_path / "o")]) == 0
    recs = lines(tmp_path / "o" / "results.jsonl")
    want = generate(raw.backbone, [r["prompt"] for r in recs], [r["seed"] for r in recs], steps=3)
    got = np.stack([np.asarray(Image.open(tmp_path / "o" / r["filename"])) for r in recs])
    assert np.array_equal(got, want)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["steps"] == 3 and "raw weights" in summary["model"]


def test_reward_suite_reports_mean_and_ci(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a photo of a red circle\n# comment\n" + json.dumps({"prompt": "a photo of two squares"}) + "\n")
    out = tmp_path / "r"
    assert main(["eval", "--suite", "reward", "--reward", "toy_score", "--model", "base", "--prompts", str(prompts),
                 "--n-per-prompt", "3", "--steps", "4", "--no-images", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    recs = lines(out / "results.jsonl")
    values = [r["reward"] for r in recs]
    assert len(recs) == 6 and s["n_clusters"] == 2 and s["reward"] == "toy_score"
    assert s["mean"] == pytest.approx(np.mean(values))
    assert s["ci95"] == pytest.approx(mean_ci(values, [r["prompt"] for r in recs])["ci95"])
    img_meta = [json.loads(r["metadata"]) for r in recs]
    assert all(m["tag"] in ("colors", "counting") for m in img_meta)  # parsed ShapesWorld metadata reached the reward


def test_compare_two_result_dirs(base_geneval, xs_run, tmp_path, capsys):
    run = xs_run[0]
    b = tmp_path / "b"
    assert main(["eval", "--suite", "geneval", "--model", str(run), "--no-images", "--out", str(b)] + FEW) == 0
    capsys.readouterr()
    assert main(["eval", "--compare", str(base_geneval), str(b), "--n-boot", "500", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "overall" in out and "95% CI" in out
    cmp = json.loads((tmp_path / "c" / "compare.json").read_text())
    a_s, b_s = (json.loads((d / "summary.json").read_text()) for d in (base_geneval, b))
    r = cmp["metrics"]["correct"]
    assert r["a"] == pytest.approx(a_s["overall"]) and r["b"] == pytest.approx(b_s["overall"])
    assert r["ci95"][0] <= r["diff"] <= r["ci95"][1]
    # not paired: other prompts
    c = tmp_path / "other"
    assert main(["eval", "--suite", "geneval", "--model", str(run), "--no-images", "--out", str(c),
                 "--max-prompts", "6", "--steps", "2"]) == 0
    capsys.readouterr()
    assert main(["eval", "--compare", str(base_geneval), str(c)]) == 2
    err = capsys.readouterr().err
    assert "not paired" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------
# Errors: one line, exit status 2
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, needle",
    [
        (["eval", "--suite", "geneval", "--model", "base"], "--out"),
        (["eval", "--suite", "reward", "--model", "base", "--out", "{tmp}/o"], "needs --reward NAME"),
        (["eval", "--suite", "reward", "--reward", "nope", "--model", "base", "--out", "{tmp}/o"], "unknown reward"),
        (["eval", "--suite", "geneval", "--model", "{tmp}/missing", "--out", "{tmp}/o"], "not a directory"),
        (["eval", "--suite", "geneval", "--model", "{tmp}/pipe", "--out", "{tmp}/o"],
         "PixArtAlphaPipeline pipelines are not supported by `slas eval` yet"),
        (["eval", "--suite", "geneval", "--model", "{tmp}/emptyrun", "--out", "{tmp}/o"], "no checkpoint"),
        (["eval", "--suite", "unigenbench", "--model", "base", "--out", "{tmp}/o"], "no judge configured"),
        (["eval", "--suite", "toyworld", "--images", "{tmp}", "--out", "{tmp}/o"], "--images"),
        (["eval", "--suite", "geneval", "--model", "base", "--detector", "mask2former", "--out", "{tmp}/o"],
         "COCO detector"),
        (["eval", "--suite", "geneval", "--model", "base", "--max-prompts", "-1", "--out", "{tmp}/o"],
         "--max-prompts must be >= 0"),
        (["eval", "--suite", "geneval", "--model", "base", "--prompts", "{tmp}/bad.txt", "--out", "{tmp}/o"], "'dog'"),
        (["eval", "--compare", "{tmp}", "{tmp}"], "not a `slas eval` output directory"),
    ],
)
def test_errors_are_one_line(args, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SLAS_JUDGE_BASE_URL", raising=False)
    monkeypatch.delenv("SLAS_JUDGE_MODEL", raising=False)
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps({"_class_name": "PixArtAlphaPipeline"}))
    (tmp_path / "emptyrun").mkdir()
    (tmp_path / "emptyrun" / "config.yaml").write_text("run:\n  seed: 0\n")
    (tmp_path / "bad.txt").write_text("a photo of a dog\n")
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in args])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_unigenbench_needs_natural_language_models(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SLAS_JUDGE_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("SLAS_JUDGE_MODEL", "judge")
    assert main(["eval", "--suite", "unigenbench", "--model", "base", "--out", str(tmp_path / "o")]) == 2
    assert "reads only its own grammar" in capsys.readouterr().err


def _result_dir(path, correct_by_tag: dict[str, list[int]], model: str):
    path.mkdir()
    (path / "summary.json").write_text(json.dumps({"suite": "geneval", "model": model}))
    recs = [{"prompt": f"{tag} {i}", "metadata": f"{tag} {i}", "sample": 0, "seed": i, "tag": tag, "correct": c}
            for tag, cs in correct_by_tag.items() for i, c in enumerate(cs)]
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_compare_prints_no_degenerate_interval_at_tiny_n(tmp_path, capsys):
    rng = np.random.default_rng(0)
    many_a = (rng.random(200) < 0.3).astype(int).tolist()
    many_b = [max(c, int(rng.random() < 0.4)) for c in many_a]  # B fixes some of A's failures
    a = _result_dir(tmp_path / "a", {"position": [0, 0, 0, 0], "colors": many_a}, "A")
    b = _result_dir(tmp_path / "b", {"position": [0, 0, 0, 0], "colors": many_b}, "B")
    assert main(["eval", "--compare", str(a), str(b), "--n-boot", "300", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "[0.0%, 0.0%]" not in out
    pos = next(ln for ln in out.splitlines() if ln.startswith("position"))
    assert pos.split()[1] == "4" and pos.count("[0.0%, 49.0%]") == 2  # each side: Wilson, not a point
    assert "n too small" in pos and "not resolved" in pos
    colors = next(ln for ln in out.splitlines() if ln.startswith("colors"))
    assert colors.split()[1] == "200" and colors.rstrip().endswith("*")  # a real gain over 200 paired images
    cmp = json.loads((tmp_path / "c" / "compare.json").read_text())
    per = cmp["metrics"]["correct"]["per_stratum"]
    assert per["position"]["wilson_a"] == pytest.approx([0.0, 0.4899], abs=1e-4) and not per["position"]["resolved"]
    assert per["colors"]["resolved"]


def test_eval_out_refuses_an_existing_result_unless_overwrite(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "ev"
    out.mkdir()
    (out / "summary.json").write_text('{"suite": "toyworld"}\n')
    args = ["eval", "--suite", "toyworld", "--model", str(tiny_ckpt), "--max-prompts", "2", "--steps", "1",
            "--no-images", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds" in err and "--overwrite" in err
    assert (out / "summary.json").read_text() == '{"suite": "toyworld"}\n'  # untouched
    assert main([*args, "--overwrite"]) == 0
    assert json.loads((out / "summary.json").read_text())["n_images"] > 0
