"""Issue 19, items 6-8: every printed or plotted accuracy carries its n and a 95% interval (and small samples are
"not resolved", never a gain); ShapesWorld grids label each image with its prompt and strict verdict; a ShapesWorld
run exports to stock diffusers / transformers folders."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from _toyruns import tiny_overrides
from slas.apps.cli import main
from slas.apps.eval import format_summary
from slas.apps.report import write_report
from slas.config import load_config
from slas.recipe.evaluation import change_lines
from slas.recipe.metrics import metrics_figure, read_metrics
from slas.recipe.run_dir import load_run
from slas.recipe.train import train
from slas.toyworld import parse, render, verify
from slas.toyworld.evaluate import FAIL_COLOUR, PASS_COLOUR, format_table, labelled_grid

GRID_PROMPTS = ["a photo of a red circle", "a photo of two squares"]


@pytest.fixture(scope="module")
def run(tiny_ckpt, tmp_path_factory):
    """A 1-iteration run of the XS model (evaluations at iterations 0 and 1) and the lines it logged."""
    out = tmp_path_factory.mktemp("unc") / "run"
    ov = tiny_overrides(tiny_ckpt, out, **{"train.iterations": 1, "eval.grid_prompts": f"[{', '.join(GRID_PROMPTS)}]"})
    logged: list[str] = []
    train(load_config(None, ov), progress=False, log=logged.append)
    return out, logged


# ---------------------------------------------------------------------------
# 6. n and intervals; "not resolved" below the minimum n
# ---------------------------------------------------------------------------


def test_training_final_lines_carry_n_and_wilson_and_say_not_resolved(run):
    out, logged = run
    rows = read_metrics(out)
    n = rows[-1]["eval/n_images"]
    gold = [ln for ln in logged if ln.startswith("held-out strict gold:")]
    assert len(gold) == 1, logged
    line = gold[0]
    assert line.count(f"(n={n}, iteration ") == 2 and line.count("%, ") == 2  # two "p% [lo%, hi%]"
    assert line.endswith("not resolved (n < 100 images)"), line
    assert any(ln.startswith("in-domain strict gold:") and f"(n={rows[-1]['eval/id/n_images']}, " in ln for ln in logged)
    base = next(ln for ln in logged if ln.startswith("iteration 0 (base model)"))
    assert f"] (n={rows[0]['eval/n_images']})" in base


def test_change_lines_resolve_only_large_separated_changes():
    first = {"iteration": 0, "eval/gold_accuracy": 0.317, "eval/n_images": 72,
             "eval/id/gold_accuracy": 0.30, "eval/id/n_images": 300, "eval/exact_count": 0.40}
    final = {"iteration": 4, "eval/gold_accuracy": 0.417, "eval/n_images": 72,
             "eval/id/gold_accuracy": 0.45, "eval/id/n_images": 300, "eval/exact_count": 0.42}
    held, ind, exact = change_lines(first, final)
    assert held == ("held-out strict gold: 31.7% [22.1%, 43.1%] (n=72, iteration 0) -> 41.7% [31.0%, 53.2%] "
                    "(n=72, iteration 4): not resolved (n < 100 images)")
    assert ind.endswith(": +15.0 points (95% intervals disjoint)"), ind
    assert exact.startswith("held-out exact count:") and exact.endswith("not resolved (n < 100 images)")
    no_n = change_lines({"iteration": 0, "eval/gold_accuracy": 0.2}, {"iteration": 4, "eval/gold_accuracy": 0.9})
    assert no_n == ["held-out strict gold: 20.0% (iteration 0) -> 90.0% (iteration 4): n unknown, not resolved"]
    final["eval/id/gold_accuracy"] = 0.35
    assert change_lines(first, final)[1].endswith("not resolved (the 95% intervals overlap)")


def test_curves_use_a_fixed_axis_and_wilson_bands(run):
    out, _ = run
    assert (out / "curves.png").is_file()
    fig = metrics_figure(read_metrics(out))
    axes = {ax.get_title(): ax for ax in fig.axes}
    gold = next(ax for t, ax in axes.items() if t.startswith("strict gold accuracy"))
    assert gold.get_ylim() == (0.0, 1.0)  # never auto-zoomed
    assert len(gold.collections) == 2  # a Wilson band per line: held-out (eval/n_images), in-domain (eval/id/n_images)
    assert "95% Wilson band" in gold.get_title()
    reward = axes["train reward"]
    assert reward.get_ylim() != (0.0, 1.0) and not reward.collections


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


def test_toyworld_table_shows_n_and_wilson_per_tag_and_overall():
    summary = {"per_tag": {"counting": {"strict": 0.0, "geneval": 0.25, "exact_count": 0.5, "n": 4},
                           "colors": {"strict": 0.5, "geneval": 0.5, "exact_count": 0.5, "n": 10}},
               "overall_strict": 0.25, "overall_geneval": 0.375, "exact_count": 0.5, "n_images": 14}
    table = format_table(summary).splitlines()
    assert "95% CI" in table[0] and table[0].rstrip().endswith("n")
    assert "[0.0%, 49.0%]" in table[1] and table[1].rstrip().endswith(" 4")
    assert "[23.7%, 76.3%]" in table[2]
    assert table[3].startswith("overall") and "[9.6%, 51.2%]" in table[3] and table[3].rstrip().endswith("14")
    geneval = format_summary({"suite": "geneval", "per_tag": {"position": 0.0}, "per_tag_counts": {"position": [0, 4]},
                              "overall": 0.0, "n_images": 4, "image_accuracy": 0.0, "prompt_accuracy": 0.0,
                              "detector": "x"}).splitlines()
    assert "[0.0%, 49.0%]" in geneval[1] and "[0.0%, 49.0%]" in geneval[2]  # `slas eval --suite geneval` too


# ---------------------------------------------------------------------------
# 7. labelled grids, verdicts.jsonl, the report's hover
# ---------------------------------------------------------------------------


def test_labelled_grid_marks_pass_and_fail():
    metas = [parse("a photo of a red circle"), parse("a photo of two squares")]
    images = np.stack([render(metas[0], 0), np.full_like(render(metas[1], 0), 128)])  # the second: an empty canvas
    results = [verify(im, m) for im, m in zip(images, metas, strict=True)]
    assert [r.correct for r in results] == [True, False]
    g = labelled_grid(images, metas, results, ncol=2, scale=3, pad=6)
    cell_w = 32 * 3 + 6
    assert tuple(g[5, 5]) == PASS_COLOUR and tuple(g[5, 5 + cell_w]) == FAIL_COLOUR  # the frames
    below = g[6 + 96 + 2 : 6 + 96 + 26]  # the two prompt lines under the images
    assert (below[:, 6 : 6 + 96] < 80).any() and (below[:, 6 + cell_w : 6 + cell_w + 96] < 80).any()
    assert g.shape[0] > 6 + 96 + 30  # room for the labels; policy.generate.grid has none
    with pytest.raises(ValueError):
        labelled_grid(images, metas[:1], results)


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


def test_training_grids_are_labelled_with_verdicts_and_the_report_shows_them(run, tmp_path):
    out, _ = run
    recs = [json.loads(ln) for ln in (out / "samples" / "iter_000001.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in recs] == [p for p in GRID_PROMPTS for _ in range(4)]
    assert all(isinstance(r["correct"], bool) and isinstance(r["reasons"], list) for r in recs)
    assert Image.open(out / "samples" / "iter_000001.png").width == 6 + 8 * (96 + 6)  # labelled_grid's layout
    html = write_report([out], tmp_path / "report.html").read_text()
    n_pass = sum(r["correct"] for r in recs)
    assert f"strict verifier: {n_pass}/8 pass" in html
    failing = next((r for r in recs if not r["correct"]), None)
    if failing is not None:
        assert failing["reasons"][0].replace("'", "&#x27;") in html


# ---------------------------------------------------------------------------
# 8. export of a ShapesWorld run
# ---------------------------------------------------------------------------


def _same_outputs(unet_a, unet_b, te_a, te_b, model):
    tok = model.tokenize(GRID_PROMPTS)
    with torch.no_grad():
        h_a, h_b = te_a(**tok).last_hidden_state, te_b(**tok).last_hidden_state
        z = torch.randn(2, unet_a.config.in_channels, 16, 16, generator=torch.Generator().manual_seed(0))
        t = torch.tensor([250.0, 800.0])
        v_a = unet_a(z, t, encoder_hidden_states=h_b, encoder_attention_mask=tok["attention_mask"]).sample
        v_b = unet_b(z, t, encoder_hidden_states=h_b, encoder_attention_mask=tok["attention_mask"]).sample
    assert torch.allclose(h_a, h_b, atol=1e-6)
    assert torch.allclose(v_a, v_b, atol=1e-5), (v_a - v_b).abs().max()


def test_export_a_shapesworld_run_reloads_in_stock_classes(run, tmp_path, capsys):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, PreTrainedTokenizerFast

    out_run, _ = run
    dest = tmp_path / "export"
    assert main(["export", str(out_run), "--out", str(dest)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {dest / 'unet'}" in printed and f"wrote {dest / 'text_encoder'}" in printed
    info = json.loads((dest / "slas_export.json").read_text())
    assert info["backbone"] == "toy" and info["iteration"] == 1 and info["toy_config"]["patch"] == 2
    unet = UNet2DConditionModel.from_pretrained(dest / "unet").eval()
    te = CLIPTextModel.from_pretrained(dest / "text_encoder").eval()
    tok = PreTrainedTokenizerFast.from_pretrained(dest / "tokenizer")
    model = load_run(out_run, ema=False).backbone.model.eval()
    ids = tok(GRID_PROMPTS, padding="max_length", max_length=info["toy_config"]["max_tokens"], return_tensors="pt")
    assert torch.equal(ids["input_ids"], model.tokenize(GRID_PROMPTS)["input_ids"])
    _same_outputs(unet, model.unet, te, model.text_encoder, model)


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
    _same_outputs(unet, bb.model.unet.eval(), bb.model.text_encoder, bb.model.text_encoder, bb.model)
