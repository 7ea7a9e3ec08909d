"""One `slas train` per run folder: a second process with the same run.out_dir stops with one error line naming the
folder and the first run's pid, the first one is not disturbed, and the lock dies with its holder."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from _toyruns import tiny_overrides
from slas.config import ConfigError, load_config
from slas.recipe.metrics import read_metrics
from slas.recipe.run_dir import RunDir
from slas.recipe.run_lock import RunLock


def _train(ov: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "slas", "train", "--no-progress", *ov], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_iterations(proc: subprocess.Popen, run, n: int) -> None:
    deadline = time.time() + 120
    while len(read_metrics(run)) < n and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None and len(read_metrics(run)) >= n, proc.stderr.read() if proc.poll() is not None else ""


def test_a_second_run_in_the_same_folder_is_refused_while_the_first_trains(tiny_ckpt, tmp_path):
    run = tmp_path / "run"
    first = _train(tiny_overrides(tiny_ckpt, run, **{"train.iterations": 1000, "eval.every": 0,
                                                     "run.checkpoint_every": 1000}))
    try:
        _wait_for_iterations(first, run, 2)
        holder = json.loads(RunDir(run).lock.read_text())
        assert holder["pid"] == first.pid
        before = read_metrics(run)
        second = subprocess.run([sys.executable, "-m", "slas", "train", "--no-progress",
                                 *tiny_overrides(tiny_ckpt, run, **{"run.seed": 1})],
                                capture_output=True, text=True, timeout=120)
        err = second.stderr.strip()
        assert second.returncode == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(f"error: run.out_dir {run} is in use by another `slas train` (pid {first.pid} on host ")
        assert "choose another run.out_dir" in err and second.stdout == ""
        # the first run goes on, alone: its rows are the ones it wrote, in order, and its config is its own
        _wait_for_iterations(first, run, len(before) + 1)
        its = [r["iteration"] for r in read_metrics(run)]
        assert its == list(range(len(its)))
        assert load_config(RunDir(run).config).run.seed == 0
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 143
    assert not RunDir(run).lock.exists()  # a clean exit removes the lock file


def test_the_lock_dies_with_its_holder(tiny_ckpt, tmp_path):
    """SIGKILL leaves the lock file behind, but not the lock: the kernel releases an flock with its process."""
    run = tmp_path / "run"
    first = _train(tiny_overrides(tiny_ckpt, run, **{"train.iterations": 1000, "eval.every": 0,
                                                     "run.checkpoint_every": 1000}))
    try:
        _wait_for_iterations(first, run, 2)
        with pytest.raises(ConfigError, match=f"pid {first.pid}"):
            RunLock(RunDir(run), main=True).acquire()
    finally:
        first.kill()
        first.communicate(timeout=60)
    assert RunDir(run).lock.exists()
    with RunLock(RunDir(run), main=True) as lock:
        assert json.loads(RunDir(run).lock.read_text())["pid"] == os.getpid() and lock.fd is not None
    assert not RunDir(run).lock.exists()
    # and `slas train` starts afresh in the killed run's folder (it saved no checkpoint)
    again = subprocess.run([sys.executable, "-m", "slas", "train", "--no-progress", *tiny_overrides(tiny_ckpt, run)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert [r["iteration"] for r in read_metrics(run)] == [0, 1, 2] and not RunDir(run).lock.exists()


def test_only_rank_0_takes_the_lock(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    monkeypatch.setenv("RANK", "1")
    with RunLock(run) as other:  # torchrun's rank 1: nothing made, nothing held
        assert other.fd is None and not run.root.exists()
    monkeypatch.setenv("RANK", "0")
    with RunLock(run), pytest.raises(ConfigError, match="is in use by another `slas train`"):
        RunLock(run).acquire()  # a second open file description: flock refuses it even in the same process


def test_a_failed_start_removes_the_folders_the_lock_made(tmp_path):
    run = RunDir(tmp_path / "a" / "b" / "run")
    with pytest.raises(RuntimeError), RunLock(run, main=True):
        assert run.lock.exists()
        raise RuntimeError("setup failed")
    assert not (tmp_path / "a").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError), RunLock(RunDir(tmp_path / "kept"), main=True):
        raise RuntimeError("setup failed")
    assert (tmp_path / "kept").is_dir()  # a folder that was there before stays
