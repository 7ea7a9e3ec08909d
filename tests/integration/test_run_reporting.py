"""What a run reports: its final lines carry n and a 95% interval (small samples are "not resolved", never a
gain), its curves a fixed axis and Wilson bands, and its grids each image's prompt and strict verdict, which
`slas report` shows."""

import json

from PIL import Image

from _toyruns import GRID_PROMPTS
from slas.apps.report import write_report
from slas.recipe.metrics import metrics_figure, read_metrics


def test_training_final_lines_carry_n_and_wilson_and_say_not_resolved(labelled_run):
    out, logged = labelled_run
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


def test_curves_use_a_fixed_axis_and_wilson_bands(labelled_run):
    out, _ = labelled_run
    assert (out / "curves.png").is_file()
    fig = metrics_figure(read_metrics(out))
    axes = {ax.get_title(): ax for ax in fig.axes}
    gold = next(ax for t, ax in axes.items() if t.startswith("strict gold accuracy"))
    assert gold.get_ylim() == (0.0, 1.0)  # never auto-zoomed
    assert len(gold.collections) == 2  # a Wilson band per line: held-out (eval/n_images), in-domain (eval/id/n_images)
    assert "95% Wilson band" in gold.get_title()
    reward = axes["train reward"]
    assert reward.get_ylim() != (0.0, 1.0) and not reward.collections


def test_training_grids_are_labelled_with_verdicts_and_the_report_shows_them(labelled_run, tmp_path):
    out, _ = labelled_run
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


