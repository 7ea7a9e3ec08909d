"""`slas compare`: a real 2-seed run of tiny training processes, its outputs, resume, and SIGTERM."""

import csv
import shutil

import pytest
from PIL import Image

from _toyruns import tiny_overrides
from slas.apps import compare as cmp
from slas.apps.cli import main
from slas.apps.compare import figures, pool
from slas.config import ConfigError
from slas.recipe import checkpoint
from slas.recipe.run_dir import RunDir


def tiny(ckpt, **extra):
    """Overrides of a 2-iteration run of a random XS model, evaluated at iterations 0 and 2 with a 2 x 2 monitor
    set (`slas compare` sets each run's directory)."""
    return tiny_overrides(ckpt, None, **{"eval.every": 0, "eval.grid_prompts": "[a photo of a red circle]",
                                         "monitor.prompts": 2, "monitor.group": 2, "run.keep_checkpoints": 5}
                          | extra)


def test_seed_and_sweep_parsing():
    assert cmp.parse_seeds("3") == [0, 1, 2] and cmp.parse_seeds("4,7") == [4, 7]
    assert cmp.parse_seeds("3,") == [3] and cmp.parse_seeds("0,") == [0]  # one seed: a trailing comma
    with pytest.raises(ConfigError, match="--seeds 0,"):
        cmp.parse_seeds("0")  # a count of none, not seed 0
    with pytest.raises(ConfigError):
        cmp.parse_seeds(",")
    assert cmp.parse_sweep("advantage.params.gamma=0.25,1") == ("advantage.params.gamma", [0.25, 1])
    with pytest.raises(ConfigError):
        cmp.parse_seeds("two")
    with pytest.raises(ConfigError):
        cmp.parse_sweep("advantage.params.gamma")
    assert main(["compare", "--methods", "nope", "--out", "/tmp/never_written_slas_cmp"]) == 2


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_compare_runs_writes_every_output_and_resumes_without_training(tiny_ckpt, tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    kw = dict(config=None, methods=["slas"], seeds=[0, 1], out=out, overrides=tiny(tiny_ckpt), jobs=2, threads=1,
              log=lambda s: None)
    res = cmp.compare(**kw)
    names = ["slas_s0", "slas_s1"]
    assert sorted(res.launched) == names and set(res.launched.values()) == {0} and not res.failed
    for f in ["results.csv", "summary.md", "compare.json", "configs/slas_s0.yaml", "logs/slas_s1.log",
              "plots/proxy.png", "plots/gold.png", "plots/hacking_gap.png", "plots/diversity.png",
              "grids/iter_000000.png", "grids/iter_000002.png"]:
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    rows = _read_csv(out / "results.csv")
    assert [r["run"] for r in rows] == names and all(r["status"] == "finished" and r["iterations"] == "2" for r in rows)
    for r in rows:
        for k in ["final_gold_id", "best_gold_ood", "final_gold_heldout", "final_proxy_id", "peak_hacking_gap",
                  "final_div_pixel", "final_div_detect"]:
            float(r[k])  # present and numeric
    summary = (out / "summary.md").read_text()
    assert "| slas | 2 |" in summary and "How each estimator was configured" in summary
    assert "gamma=1.0" in summary  # slas's defaults are stated

    # resume: everything finished, so nothing trains and no metrics file is touched
    stamps = {n: RunDir(out / "runs" / n).metrics.stat().st_mtime_ns for n in names}
    again = cmp.compare(**kw)
    assert again.launched == {}
    assert stamps == {n: RunDir(out / "runs" / n).metrics.stat().st_mtime_ns for n in names}
    assert _read_csv(out / "results.csv") == rows

    # an interrupted run (its last checkpoint and metrics line lost) is continued with `slas train --resume`, a new
    # one starts from its config, the finished one is left alone (the launch is recorded, not run)
    run = out / "runs" / "slas_s1"
    shutil.rmtree(RunDir(run).checkpoints / checkpoint.name(2))
    lines = RunDir(run).metrics.read_text().splitlines()
    RunDir(run).metrics.write_text("\n".join(lines[:-1]) + "\n")
    launched = []

    class FakeProcess:
        returncode = 0

        def __init__(self, cmd, **kw):
            launched.append(cmd)

        def poll(self):
            return 0

    monkeypatch.setattr(pool.subprocess, "Popen", FakeProcess)
    specs = cmp.plan(None, ["slas", "drgrpo"], [0, 1], out, [], tiny(tiny_ckpt))
    assert sorted(pool.execute(specs, out, jobs=2, threads=1, log=lambda s: None)) == ["drgrpo_s0", "drgrpo_s1",
                                                                                      "slas_s1"]
    by_run = {c[c.index("--resume") + 1] if "--resume" in c else c[c.index("--config") + 1]: c for c in launched}
    assert set(by_run) == {str(run), str(out / "configs" / "drgrpo_s0.yaml"), str(out / "configs" / "drgrpo_s1.yaml")}
    assert all(c[1:4] == ["-m", "slas.apps.cli", "train"] for c in launched)

    # two methods side by side (drgrpo's specs pointed at the finished slas runs: the drawing, not the training)
    for s in specs:
        s.cfg.run.out_dir = str(out / "runs" / f"slas_s{s.seed}")
    assert len(figures.plot_curves(tmp_path / "plots2", specs)) == 4
    [grid0, _] = figures.sample_grids(tmp_path / "grids2", specs)
    one, two = Image.open(out / "grids" / "iter_000000.png"), Image.open(grid0)
    assert two.width > 2 * one.width - 20 and two.height == one.height

    # the same output directory with another config is refused, not silently reused
    with pytest.raises(ConfigError, match="another config"):
        cmp.compare(**(kw | {"overrides": tiny(tiny_ckpt, **{"train.lr": 5e-4})}))


def test_sigterm_stops_the_runs_it_started(tmp_path, monkeypatch):
    """`kill` on `slas compare` must not leave its training processes running (they resume next time)."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    started = []
    real_popen = subprocess.Popen

    def fake_popen(cmd, **kw):  # a child that would outlive the parent: sleeps instead of training
        p = real_popen([sys.executable, "-c", "import time; time.sleep(60)"], **kw)
        started.append(p)
        return p

    monkeypatch.setattr(pool.subprocess, "Popen", fake_popen)
    specs = cmp.plan(None, ["grpo", "slas"], [0], tmp_path, [], [f"run.out_dir={tmp_path}/unused"])
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    with pytest.raises(SystemExit) as exc:
        pool.execute(specs, tmp_path, jobs=2, threads=1, log=lambda *_: None)
    assert exc.value.code == 128 + signal.SIGTERM
    assert len(started) == 2 and all(p.poll() is not None for p in started)  # both children were stopped
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is restored
