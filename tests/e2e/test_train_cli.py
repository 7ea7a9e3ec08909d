"""`slas train` at the command line: plain-text ShapesWorld prompt files, one error line (and no run folder) for
a prompt the rewards cannot judge, the progress bars of `train` and `compare`, and exact resume after SIGKILL."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tqdm as tqdm_module
import yaml

from _toyruns import tiny_overrides
from slas.apps import compare as cmp
from slas.apps.cli import main
from slas.apps.compare import pool
from slas.config import load_config
from slas.recipe.metrics import last_iteration, read_metrics
from slas.recipe.run_dir import RunDir
from slas.recipe.train import train


class RecordingBar(tqdm_module.tqdm):
    """A tqdm that remembers every postfix it was given."""

    postfixes: list[str] = []

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        RecordingBar.postfixes.append(dict(ordered_dict or {}, **kwargs))
        return super().set_postfix(ordered_dict, refresh, **kwargs)

    def set_postfix_str(self, s="", refresh=True):
        RecordingBar.postfixes.append(s)
        return super().set_postfix_str(s, refresh)


@pytest.fixture
def bars(monkeypatch):
    RecordingBar.postfixes = []
    monkeypatch.setattr(tqdm_module, "tqdm", RecordingBar)
    return RecordingBar.postfixes


def _rows(run):
    return read_metrics(run)


def test_train_on_a_plain_text_prompts_file(tiny_ckpt, tmp_path, bars):
    """`slas train data.prompts=fixed.txt` (and data.eval_prompts) with plain ShapesWorld text: parsed on load."""
    fixed = tmp_path / "fixed.txt"
    fixed.write_text("a photo of a red circle\na photo of three triangles\n# held out\n")
    held = tmp_path / "held.txt"
    held.write_text("a photo of a circle left of a square\na photo of a blue square and a white triangle\n")
    out = tmp_path / "run"
    ov = tiny_overrides(tiny_ckpt, out, **{"data.prompts": str(fixed), "data.eval_prompts": str(held), "eval.every": 0,
                                           "reward.weights": "{toy_score: 1.0, toy_geneval: 0.5}"})
    assert main(["train", *ov]) == 0
    rows = _rows(out)
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert all(math.isfinite(r["train/reward_mean"]) for r in rows[1:]) and "eval/reward_mean" in rows[0]
    # between evaluations the bar shows the last evaluation's value, not nan
    train_bars = [p for p in bars if isinstance(p, dict) and "reward" in p]
    assert train_bars[0]["eval"] == f"{rows[0]['eval/reward_mean']:.3f}"
    assert not any("nan" in str(v) for p in train_bars for v in p.values())


def test_progress_bar_shows_the_last_gold_between_evals(tiny_ckpt, tmp_path, bars):
    out = tmp_path / "run"
    assert main(["train", *tiny_overrides(tiny_ckpt, out, **{"eval.every": 0})]) == 0
    rows = _rows(out)
    first = [p for p in bars if isinstance(p, dict) and "reward" in p][0]  # after iteration 1: no evaluation in it
    assert "eval/gold_accuracy" not in rows[1] and first["gold"] == f"{rows[0]['eval/gold_accuracy']:.3f}"


@pytest.mark.parametrize("key", ["data.prompts", "data.eval_prompts"])
def test_an_unknown_word_names_it_and_creates_no_run_folder(tiny_ckpt, tmp_path, capsys, key):
    bad = tmp_path / "bad.txt"
    bad.write_text("a photo of a red circle\n\na photo of a cat\n")
    out = tmp_path / "run"
    assert main(["train", *tiny_overrides(tiny_ckpt, out, **{key: str(bad)})]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert f"{key} {bad}:3" in err and "reward 'toy_score'" in err and "'a photo of a cat'" in err
    assert "unknown word 'cat'" in err
    assert not out.exists()  # nothing written


def test_a_prompt_without_metadata_for_a_reward_that_needs_it(tiny_ckpt, tmp_path, capsys):
    """A non-ShapesWorld prompts file with a toy reward: one error line naming the reward and the prompt."""
    hpd = tmp_path / "hpd.jsonl"
    hpd.write_text(json.dumps({"prompt": "an astronaut riding a horse", "tag": "photo"}) + "\n")
    out = tmp_path / "run"
    assert main(["train", *tiny_overrides(tiny_ckpt, out, **{"data.prompts": str(hpd),
                                                             "reward.weights": "{toy_clean: 0.5, toy_correct: 1.0}"})]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reward 'toy_correct'" in err and "'an astronaut riding a horse'" in err
    assert f"{hpd}:1" in err and not out.exists()


def test_compare_shows_one_bar_with_each_running_runs_iteration(tmp_path, monkeypatch, bars):
    """The runs are stand-ins that write metrics rows: the bar counts finished runs and names each running run's
    latest iteration."""
    specs = cmp.plan(None, ["grpo", "slas"], [0], tmp_path, [], ["train.iterations=3"])
    real_popen = subprocess.Popen

    child = ("import json, sys, time, pathlib\n"
             "log = pathlib.Path(sys.argv[1]); log.parent.mkdir(parents=True, exist_ok=True)\n"
             "for i in range(4):\n"
             "    with log.open('a') as f:\n"
             "        f.write(json.dumps({'iteration': i}) + chr(10))\n"
             "    time.sleep(0.8)\n")

    def fake_popen(cmd, **kw):  # a stand-in `slas train` that logs iterations 0..3
        out = yaml.safe_load(Path(cmd[cmd.index("--config") + 1]).read_text())["run"]["out_dir"]
        return real_popen([sys.executable, "-c", child, str(RunDir(out).metrics)], **kw)

    monkeypatch.setattr(pool.subprocess, "Popen", fake_popen)
    monkeypatch.setattr(pool, "LOG_REFRESH_S", 1.0)  # stderr is captured here, not a terminal
    codes = pool.execute(specs, tmp_path, jobs=2, threads=1, log=lambda *_: None)
    assert codes == {"grpo_s0": 0, "slas_s0": 0}
    texts = [p for p in bars if isinstance(p, str)]
    assert texts and all("grpo_s0 " in t and "slas_s0 " in t for t in texts)
    assert any(("grpo_s0 1/3" in t or "grpo_s0 2/3" in t or "grpo_s0 3/3" in t) for t in texts)
    assert last_iteration(specs[0].cfg.run.out_dir) == 3 and last_iteration(tmp_path / "none") is None


def _strip_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_resume_after_sigkill_is_exact(tiny_ckpt, tmp_path):
    ov = tiny_overrides(tiny_ckpt, tmp_path / "a", **{"train.iterations": 5, "eval.every": 0})
    full = train(load_config(None, ov), progress=False, log=lambda s: None)
    b = tmp_path / "b"
    cmd = [sys.executable, "-m", "slas.apps.cli", "train", "--no-progress"] + tiny_overrides(
        tiny_ckpt, b, **{"train.iterations": 5, "eval.every": 0})
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (b / "checkpoints" / "iter_000002").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rc = subprocess.run([sys.executable, "-m", "slas.apps.cli", "train", "--no-progress", "--resume", str(b)],
                        capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    assert _strip_time(_rows(b)) == _strip_time(_rows(full))
