"""``slas report``: one self-contained HTML page from fake run directories, and a headless-Chromium render of it."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from slas.apps.cli import main
from slas.apps.report import NotARunDirError, write_report

CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def make_run(root: Path, name: str, lr: float, rewards: list[float], evals: dict[int, float],
             estimator: str = "slas") -> Path:
    """A run directory as ``slas train`` writes it: config.yaml, metrics.jsonl, samples/iter_*.png."""
    run = root / name
    (run / "samples").mkdir(parents=True)
    cfg = {"advantage": {"estimator": estimator}, "train": {"lr": lr, "group_size": 8},
           "eval": {"grid_prompts": ["a photo of three circles", "a photo of a white circle"]}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    rows = []
    for it, r in enumerate(rewards):
        row = {"iteration": it, "train/reward_mean": r, "train/lr": lr}
        if it in evals:
            row |= {"eval/gold_accuracy": evals[it], "eval/strict/counting": evals[it] / 2}
        rows.append(json.dumps(row))
    (run / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    rng = np.random.default_rng(len(name))
    for it in evals:  # a different grid per evaluation, as training changes the samples
        img = rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)
        Image.fromarray(img).save(run / "samples" / f"iter_{it:06d}.png")
    return run


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


def test_not_a_run_dir_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotARunDirError, match="neither config.yaml nor metrics.jsonl"):
        write_report([tmp_path / "empty"], tmp_path / "r.html")
    with pytest.raises(NotARunDirError, match="does not exist"):
        write_report([tmp_path / "nope"], tmp_path / "r.html")
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is it a run directory" in err and err.count("\n") == 1


def test_cli_default_out_paths(tmp_path, monkeypatch, capsys):
    a = make_run(tmp_path, "a", 1e-4, [0.1, 0.2], {1: 0.5})
    b = make_run(tmp_path, "b", 1e-4, [0.1, 0.3], {1: 0.5})
    assert main(["report", str(a)]) == 0 and (a / "report.html").is_file()
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(a), str(b)]) == 0 and (tmp_path / "report.html").is_file()
    assert main(["report", str(a), "--out", str(tmp_path / "x" / "r.html")]) == 0
    assert (tmp_path / "x" / "r.html").is_file() and "wrote" in capsys.readouterr().out


def test_report_renders_in_headless_chromium(tmp_path):
    if CHROMIUM is None:
        pytest.skip("Chromium not installed: no chromium, chromium-browser or google-chrome on PATH "
                    "(Debian: apt-get install -y --no-install-recommends chromium)")
    a = make_run(tmp_path, "slas_a", 3e-4, [0.1, 0.2, 0.4, 0.5], {0: 0.25, 3: 0.75})
    b = make_run(tmp_path, "dance_b", 1e-4, [0.1, 0.15, 0.2, 0.3], {0: 0.25, 3: 0.375})
    page = write_report([a, b], tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    # --user-data-dir: a fresh profile, so a browser already running (or a parallel test) cannot lock this one out
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={shot}", "--window-size=1200,900", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert shot.is_file(), f"no screenshot; chromium exited {proc.returncode}: {proc.stderr[-2000:]}"
    img = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB"))
    assert img.shape == (900, 1200, 3)
    # a rendered page, not a blank one: many colours (text, chart lines in both run colours) and real variance
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50 and img.std() > 10
    blue, red = np.array([0x1F, 0x77, 0xB4]), np.array([0xD6, 0x27, 0x28])  # the first two run colours
    assert (np.abs(img.astype(int) - blue).sum(-1) < 30).sum() > 50 and (np.abs(img.astype(int) - red).sum(-1) < 30).sum() > 50
