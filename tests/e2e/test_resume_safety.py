"""Corrupt checkpoints and configs, Ctrl-C / SIGTERM, and `--resume`.

Every case is one `error:` line naming the file and what is wrong (exit 2), or one line saying what `--resume` did;
an interrupted run saves its last completed iteration and resumes to the uninterrupted run's metrics."""

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from _toyruns import tiny_overrides
from slas.apps.cli import main
from slas.config import load_config
from slas.recipe import checkpoint, metrics
from slas.recipe.metrics import read_metrics

ITERS = 4
EXTRA = {"train.iterations": ITERS, "eval.every": 2}


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_metrics(run)]


def _ckpt(run: Path, it: int) -> Path:
    return run / "checkpoints" / f"iter_{it:06d}"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _one_error(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def full(tiny_ckpt, tmp_path_factory):
    """An uninterrupted 4-iteration run with a checkpoint after every iteration: the reference."""
    out = tmp_path_factory.mktemp("full") / "run"
    assert main(["train", "--no-progress", *tiny_overrides(tiny_ckpt, out, **EXTRA)]) == 0
    return out


def _copy(full: Path, dst: Path, keep_upto: int = ITERS) -> Path:
    """A copy of the reference run as if it had stopped after checkpoint ``keep_upto``."""
    shutil.copytree(full, dst)
    for it in range(keep_upto + 1, ITERS + 1):
        shutil.rmtree(_ckpt(dst, it))
    cfg = (dst / "config.yaml").read_text().replace(str(full), str(dst))
    (dst / "config.yaml").write_text(cfg)
    return dst


# ---- corrupt or truncated files --------------------------------------------------------------------------


def test_checkpoint_records_size_and_sha256_of_each_file(full):
    state = json.loads((_ckpt(full, ITERS) / "state.json").read_text())
    files = {p.name for p in _ckpt(full, ITERS).iterdir()} - {"state.json"}
    assert set(state["checksums"]) == files >= {"model.safetensors", "optim.pt", "rng.safetensors"}
    assert all(v["size"] == (_ckpt(full, ITERS) / k).stat().st_size and len(v["sha256"]) == 64
               for k, v in state["checksums"].items())


def test_truncated_or_corrupt_model_under_sample_and_eval_is_one_error_line(full, tmp_path, capsys):
    run = _copy(full, tmp_path / "run")
    model = _ckpt(run, ITERS) / "model.safetensors"
    size = model.stat().st_size
    data = bytearray(model.read_bytes())
    data[-100:] = bytes(100)  # same size, other weights: loaded silently before the checksums
    model.write_bytes(bytes(data))
    rc = main(["eval", "--suite", "toyworld", "--model", str(run), "--max-prompts", "3", "--out", str(tmp_path / "o")])
    _one_error(capsys, rc, f"{model}: corrupt: its sha256 differs from the one recorded in state.json at save time")
    _truncate(model)
    rc = main(["sample", "--checkpoint", str(run), "--prompt", "a photo of a red circle", "-n", "1",
               "--out", str(tmp_path / "g.png")])
    _one_error(capsys, rc, f"{model}: truncated: {size // 2:,} bytes, but {size:,} were written at save time")


def test_broken_state_json_names_the_file(full, tmp_path, capsys):
    run = _copy(full, tmp_path / "run")
    state = _ckpt(run, ITERS) / "state.json"
    state.write_text('{"iteration": 4,')
    rc = main(["sample", "--checkpoint", str(run), "--prompt", "a photo of a red circle", "-n", "1",
               "--out", str(tmp_path / "g.png")])
    _one_error(capsys, rc, f"{state}: not valid JSON (", "the file is truncated or corrupt")


def test_broken_yaml_config_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    _one_error(capsys, main(["train", "--config", str(bad), f"run.out_dir={tmp_path / 'r'}"]), f"{bad} is not valid YAML")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", ["model.safetensors", "optim.pt", "state.json"])
def test_resume_falls_back_to_the_previous_intact_checkpoint(name, full, tmp_path, capsys):
    run = _copy(full, tmp_path / "run", keep_upto=3)  # stopped after iteration 3, whose checkpoint is damaged
    _truncate(_ckpt(run, 3) / name)
    assert main(["train", "--no-progress", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"warning: skipping checkpoint iter_000003: {_ckpt(run, 3) / name}: " in out
    assert f"resumed {run} from {_ckpt(run, 2)} (iteration 2 of {ITERS})" in out
    assert _rows(run) == _rows(full)


def test_resume_with_no_intact_checkpoint_is_one_error_line(full, tmp_path, capsys):
    run = _copy(full, tmp_path / "run", keep_upto=1)
    _truncate(_ckpt(run, 1) / "optim.pt")
    rc = main(["train", "--no-progress", "--resume", str(run)])
    _one_error(capsys, rc, f"error: no intact checkpoint in {run / 'checkpoints'}: {_ckpt(run, 1) / 'optim.pt'}: "
                           "truncated: ")


def test_checkpoint_without_checksums_is_refused_by_name(full, tmp_path, capsys):
    run = _copy(full, tmp_path / "run", keep_upto=3)
    for ckpt in checkpoint.all_of(run / "checkpoints"):  # as slas wrote them before it recorded checksums
        path = ckpt / "state.json"
        path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "checksums"}))
    rc = main(["train", "--no-progress", "--resume", str(run)])
    out, err = capsys.readouterr()
    assert "warning: skipping checkpoint iter_000003: " in out and "records no checksums" in out
    assert rc == 2 and err.count("error:") == 1 and "checkpoints written before slas recorded them are not supported" in err


# ---- Ctrl-C / SIGTERM and what --resume says -----------------------------------------------------------


def _signal_at(monkeypatch, iteration: int, times: int = 1, sig=signal.SIGINT) -> None:
    """Send ``sig`` to this (the main) thread ``times`` times once the metrics row of ``iteration`` is written."""
    write = metrics.MetricsLog.write

    def patched(self, row):
        write(self, row)
        if row["iteration"] == iteration:
            for _ in range(times):  # to this thread: its handler runs before the next one is sent
                signal.pthread_kill(threading.get_ident(), sig)

    monkeypatch.setattr(metrics.MetricsLog, "write", patched)


def test_sigint_saves_the_last_completed_iteration_and_resume_matches(full, tiny_ckpt, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _signal_at(monkeypatch, 2)
    ov = tiny_overrides(tiny_ckpt, run, **EXTRA, **{"run.checkpoint_every": 10})
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    assert main(["train", "--no-progress", *ov]) == 130
    assert signal.getsignal(signal.SIGINT) is before  # the previous handler is back
    out = capsys.readouterr().out
    assert (f"interrupted by SIGINT after iteration 2 of {ITERS}: saved {_ckpt(run, 2)}; continue with "
            f"`slas train --resume {run}`") in out
    assert [p.name for p in checkpoint.all_of(run / "checkpoints")] == ["iter_000002"]
    assert read_metrics(run)[-1]["iteration"] == 2
    monkeypatch.undo()
    assert main(["train", "--no-progress", "--resume", str(run)]) == 0
    assert f"resumed {run} from {_ckpt(run, 2)} (iteration 2 of {ITERS})" in capsys.readouterr().out
    assert _rows(run) == _rows(full)


def test_second_sigint_aborts_at_once(tiny_ckpt, tmp_path, monkeypatch, capfd):
    run = tmp_path / "run"
    _signal_at(monkeypatch, 1, times=2)
    ov = tiny_overrides(tiny_ckpt, run, **EXTRA, **{"run.checkpoint_every": 10})
    before = signal.getsignal(signal.SIGINT)
    assert main(["train", "--no-progress", *ov]) == 130
    err = capfd.readouterr().err
    assert "SIGINT: finishing iteration 1, then saving a checkpoint of it (press Ctrl-C again to abort without saving)" in err
    assert err.rstrip().endswith("interrupted")
    assert checkpoint.all_of(run / "checkpoints") == [] and signal.getsignal(signal.SIGINT) is before


def test_sigterm_to_slas_train_saves_and_exits_143(tiny_ckpt, tmp_path):
    run = tmp_path / "run"
    ov = tiny_overrides(tiny_ckpt, run, **{"train.iterations": 1000, "eval.every": 0, "run.checkpoint_every": 1000})
    proc = subprocess.Popen([sys.executable, "-m", "slas", "train", "--no-progress", *ov], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(read_metrics(run)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    last = read_metrics(run)[-1]["iteration"]
    assert [p.name for p in checkpoint.all_of(run / "checkpoints")] == [f"iter_{last:06d}"]
    assert f"interrupted by SIGTERM after iteration {last} of 1000: saved {_ckpt(run, last)}" in out


def test_resume_of_a_folder_without_checkpoints_says_it_starts_afresh(full, tmp_path, capsys):
    run = _copy(full, tmp_path / "run", keep_upto=0)
    (run / "metrics.jsonl").unlink()
    assert main(["train", "--no-progress", "--resume", str(run)]) == 0
    assert (f"nothing to resume in {run}: it holds no checkpoint (it stopped before saving one); training it from "
            "iteration 0") in capsys.readouterr().out
    assert _rows(run) == _rows(full)


def test_resume_of_a_finished_run_says_so_and_extends_with_train_iterations(full, tmp_path, capsys):
    run = _copy(full, tmp_path / "run")
    assert main(["train", "--no-progress", "--resume", str(run)]) == 0
    out = capsys.readouterr().out.strip()
    assert out == (f"{run} is finished: its last checkpoint iter_000004 is at iteration 4 of train.iterations 4; to train "
                   f"it further: slas train --resume {run} train.iterations=N (N > 4)")
    _one_error(capsys, main(["train", "--resume", str(run), "train.lr=1"]),
               "the one override it takes is train.iterations=N (to extend the run): drop train.lr=1")
    _one_error(capsys, main(["train", "--resume", str(run), "train.iterations=3"]),
               "train.iterations=3 with --resume must be larger than the run's own 4")
    assert main(["train", "--no-progress", "--resume", str(run), "train.iterations=5"]) == 0
    out = capsys.readouterr().out
    assert f"extending {run} from 4 to 5 iterations\n" in out and f"resumed {run} from {_ckpt(run, 4)}" in out
    assert read_metrics(run)[-1]["iteration"] == 5 and _ckpt(run, 5).is_dir()
    assert load_config(run / "config.yaml").train.iterations == 5
    assert _rows(run)[:-1] == _rows(full)  # iteration 4's row keeps its final evaluation


def test_failed_start_leaves_no_run_folder(tiny_ckpt, tmp_path, capsys):
    for i, bad in enumerate([{"data.prompts": str(tmp_path / "missing.txt")},
                             {"model.checkpoint": str(tmp_path / "no_model")}]):
        run = tmp_path / f"run{i}"
        _one_error(capsys, main(["train", "--no-progress", *tiny_overrides(tiny_ckpt, run, **bad)]))
        assert not run.exists()
