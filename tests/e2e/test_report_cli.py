"""`slas report` at the command line: a folder that is not a run, the default output paths, and a headless-Chromium
render of the page."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from _fakeruns import make_run
from slas.apps.cli import main
from slas.apps.report import NotARunDirError, write_report

CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


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
