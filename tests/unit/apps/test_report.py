"""`slas report`'s page (slas.apps.report.write_report): one self-contained HTML page from run directories
written by hand; one run or several overlaid, missing or partial files as notes, NaN values reported."""

from __future__ import annotations

import base64
import re

from _fakeruns import make_run
from slas.apps.report import write_report


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_one_run_report_holds_config_curves_grids_and_evals(tmp_path):
    run = make_run(tmp_path, "slas_a", 3e-4, [0.1, 0.2, 0.4, 0.5], {0: 0.25, 3: 0.75})
    page = write_report([run], tmp_path / "report.html").read_text()
    # config values, flattened
    assert "train.lr" in page and "0.0003" in page and "advantage.estimator" in page and ">slas<" in page
    # one SVG per metric (iteration excluded), nothing fetched from elsewhere
    metrics = ["train/reward_mean", "train/lr", "eval/gold_accuracy", "eval/strict/counting"]
    for m in metrics:
        assert f'<figure data-metric="{m}"><svg' in page
    assert page.count("<svg") == len(metrics)
    assert not re.search(r'(src|href)="https?:', page) and "<link" not in page
    # the grids, embedded byte for byte, in iteration order
    pngs = embedded_pngs(page)
    assert pngs == [(run / "samples" / f"iter_{i:06d}.png").read_bytes() for i in (0, 3)]
    assert page.index("iteration 0</th>") < page.index("iteration 3</th>")
    assert "a photo of three circles" in page
    # the last eval, with its change since the first
    assert "0.75" in page and "+0.5 since iteration 0" in page
    # one run: no legend
    assert 'class="legend"' not in page


def test_two_runs_are_overlaid_with_a_legend(tmp_path):
    a = make_run(tmp_path, "slas_a", 3e-4, [0.1, 0.2, 0.4], {0: 0.25, 2: 0.5})
    b = make_run(tmp_path, "dance_b", 1e-4, [0.1, 0.15, 0.2, 0.3], {0: 0.25, 3: 0.375}, estimator="dance")
    page = write_report([a, b], tmp_path / "cmp.html").read_text()
    charts = re.findall(r'<figure data-metric="([^"]+)"><svg.*?</svg>', page, re.DOTALL)
    assert len(charts) == 4
    for svg in re.findall(r"<svg.*?</svg>", page, re.DOTALL):
        assert svg.count("<polyline") == 2  # one line per run
        legend = re.findall(r'<g class="legend">.*?<text[^>]*>([^<]+)</text></g>', svg)
        assert legend == ["slas_a", "dance_b"]
    # the differing config values, side by side and marked
    assert re.search(r"<tr class=differs><th>advantage.estimator</th><td>slas</td><td>dance</td></tr>", page)
    assert len(embedded_pngs(page)) == 4
    assert "iteration 2" in page and "iteration 3" in page  # both runs' last evals


def test_missing_and_partial_files_become_notes(tmp_path):
    run = make_run(tmp_path, "partial", 1e-4, [0.1, 0.2], {})
    (run / "config.yaml").unlink()
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"iteration": 2, "train/rew')  # killed mid-write
    page = write_report([run], tmp_path / "r.html").read_text()
    assert "config.yaml is missing" in page
    assert "1 unreadable line(s) skipped (line 3)" in page
    assert "No sample grids" in page and "No evaluation in any run" in page
    (run / "samples" / "iter_000001.png").write_bytes(b"\x89PNG\r\n")  # a grid still being written
    page = write_report([run], tmp_path / "r.html").read_text()
    assert "iter_000001.png is not a PNG file" in page
    assert 'data-metric="train/reward_mean"' in page  # what is there is still drawn


def test_nan_values_are_reported_not_drawn(tmp_path):
    run = make_run(tmp_path, "nan", 1e-4, [0.1, float("nan"), 0.3], {})
    page = write_report([run], tmp_path / "r.html").read_text()
    assert "1 NaN/inf value(s) not drawn" in page
