"""Distributed faults in 2-process runs (gloo on the CPU): a process killed with SIGKILL in the middle of an iteration,
or in the middle of writing a checkpoint, stops the other at once with one `error:` line; a stalled process stops it
after `dist.timeout_min`; SIGINT to torchrun leaves one consistent checkpoint. The last checkpoint is intact in every
case, and `--resume` under 2 processes reproduces the uninterrupted run's metrics exactly (docs/reliability.md).

The processes are forked from a forkserver that imported slas once, with torchrun's environment, as in the other
distributed tests; the SIGINT test runs torchrun itself. A fault is injected by the victim process on itself at a
fixed point of iteration 2 (so that the test does not race the run): a patched function that records the time and
sends itself SIGKILL or SIGSTOP.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot  # noqa: F401  (preloaded by the forkserver: children fork with these loaded)
import pytest
import torch
from diffusers import UNet2DConditionModel  # noqa: F401
from safetensors.torch import load_file
from transformers import CLIPTextModel  # noqa: F401

from _toyruns import tiny_overrides
from slas.recipe import checkpoint
from slas.recipe.metrics import read_metrics

ITERS = 4
# N = 2 x 2 = 4: 2 samples per process; a checkpoint after every iteration (the SIGINT test: only when interrupted)
EXTRA = {"train.iterations": ITERS, "train.prompts_per_iter": 2, "train.group_size": 2, "sample.batch_size": 2,
         "eval.every": 2, "dist.timeout_min": 1}


def _argv(ckpt, out: Path, **extra) -> list[str]:
    return ["train", "--no-progress", *tiny_overrides(ckpt, out, **(EXTRA | extra))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inject(rank: int, fault: str | None, mark: Path) -> None:
    """In the victim process: the fault at its fixed point of iteration 2 (``mark`` gets the time it struck)."""
    if fault is None:
        return
    victim, where, sig = fault.split(":")
    if int(victim) != rank:
        return

    def strike():
        mark.write_text(repr(time.time()))
        os.kill(os.getpid(), getattr(signal, sig))

    if where == "train":  # inside TRAIN: rollouts done, before the optimizer step's gradient all-reduce
        from slas.recipe import objectives

        update = objectives.Objective.update

        def patched(self, batch):
            if batch.iteration == 2:
                strike()
            return update(self, batch)

        objectives.Objective.update = patched
    else:  # "save": rank 0 writing checkpoint 2, after optim.pt and before model.safetensors
        save_file = checkpoint.save_file

        def patched(tensors, path, *a, **kw):
            if ".tmp_iter_000002" in str(path) and path.endswith(checkpoint.MODEL):
                strike()
            return save_file(tensors, path, *a, **kw)

        checkpoint.save_file = patched


def _worker(rank: int, world: int, port: int, argv: list[str], logs: str, fault: str | None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    for fd, name in ((1, "out"), (2, "err")):  # each process's own log, as torchrun --redirects keeps them
        os.dup2(os.open(f"{logs}/rank{rank}.{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    torch.set_num_threads(1)  # the same kernels in every process and every run
    _inject(rank, fault, Path(logs) / "struck")
    from slas.apps.cli import main

    sys.exit(main(argv))


_CTX = None


class Launch:
    """``slas <argv>`` in 2 processes; ``fault`` = "RANK:WHERE:SIGNAL" (WHERE: train or save)."""

    def __init__(self, argv: list[str], logs: Path, fault: str | None = None):
        global _CTX
        if _CTX is None:
            _CTX = mp.get_context("forkserver")
            _CTX.set_forkserver_preload(["slas.recipe.train", "slas.apps.cli", "slas.toyworld.evaluate",
                                         "slas.toyworld.monitor", __name__])
        logs.mkdir(parents=True, exist_ok=True)
        self.logs, port = logs, _free_port()
        self.procs = [_CTX.Process(target=_worker, args=(r, 2, port, argv, str(logs), fault)) for r in range(2)]
        for p in self.procs:
            p.start()

    def wait(self, rank: int, timeout: float = 240) -> float:
        """Wait for ``rank`` to exit; returns when it did (time.time())."""
        deadline = time.time() + timeout
        while self.procs[rank].is_alive() and time.time() < deadline:
            time.sleep(0.02)
        assert not self.procs[rank].is_alive(), f"rank {rank} still running after {timeout} s: a hang"
        return time.time()

    def struck(self) -> float:
        return float((self.logs / "struck").read_text())

    def err(self, rank: int) -> str:
        return (self.logs / f"rank{rank}.err").read_text()

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
                p.join(10)


def _run(argv: list[str], logs: Path) -> None:
    launch = Launch(argv, logs)
    try:
        for r in range(2):
            launch.wait(r)
        assert [p.exitcode for p in launch.procs] == [0, 0], launch.err(0)[-3000:] + launch.err(1)[-3000:]
    finally:
        launch.kill()


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_metrics(run)]


def _weights(run: Path, it: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"iter_{it:06d}" / checkpoint.MODEL))


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and "leaked semaphore" not in ln and "warnings.warn" not in ln]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def reference(tiny_ckpt, tmp_path_factory):
    """The uninterrupted 2-process run."""
    root = tmp_path_factory.mktemp("rank_ref")
    _run(_argv(tiny_ckpt, root / "run"), root / "logs")
    return root / "run"


@pytest.mark.parametrize("victim,where", [(1, "train"), (0, "save")])
def test_a_killed_rank_stops_the_other_at_once_and_the_run_resumes_exactly(victim, where, reference, tiny_ckpt,
                                                                            tmp_path):
    run, survivor = tmp_path / "run", 1 - victim
    launch = Launch(_argv(tiny_ckpt, run), tmp_path / "logs", fault=f"{victim}:{where}:SIGKILL")
    try:
        ended = launch.wait(survivor)
        launch.wait(victim, timeout=10)
    finally:
        launch.kill()
    seconds = ended - launch.struck()
    print(f"\nrank {victim} killed in {where}: rank {survivor} exited after {seconds:.2f} s")
    assert launch.procs[victim].exitcode == -signal.SIGKILL and launch.procs[survivor].exitcode == 1
    ckpt1 = run / "checkpoints" / "iter_000001"
    line = _error_line(launch.err(survivor))
    assert line.startswith(f"error: rank {survivor} of 2 stopped: a collective failed (Connection "), line
    assert line.endswith("another process died (killed, crashed or out of memory: its own log says which); the last "
                         f"checkpoint, {ckpt1}, is intact: continue with torchrun `slas train --resume {run}`"), line
    assert seconds < 30, seconds  # its connections closed: seen at once, well before dist.timeout_min (1 min)
    # the last checkpoint is intact, and no partial one was promoted (rank 0 died inside checkpoint 2: .tmp_ left)
    assert [p.name for p in checkpoint.all_of(run / "checkpoints")] == ["iter_000001"]
    checkpoint.verify(ckpt1)
    assert (run / "checkpoints" / ".tmp_iter_000002").is_dir() == (where == "save")
    _run(["train", "--no-progress", "--resume", str(run)], tmp_path / "resume_logs")
    assert "resumed" in (tmp_path / "resume_logs" / "rank0.out").read_text()
    assert _rows(run) == _rows(reference)
    assert all(torch.equal(a, b) for a, b in zip(_weights(run, ITERS).values(), _weights(reference, ITERS).values(),
                                                 strict=True))
    assert not (run / "checkpoints" / ".tmp_iter_000002").exists()  # the next save of iteration 2 replaced it


def test_a_stalled_rank_stops_the_other_after_dist_timeout_min(tiny_ckpt, tmp_path):
    """SIGSTOP (a frozen process, or a lost host): no connection closes, so the survivor waits for the process-group
    timeout the recipe set, then stops with one error line that names it."""
    run = tmp_path / "run"
    launch = Launch(_argv(tiny_ckpt, run, **{"dist.timeout_min": 0.25}), tmp_path / "logs", fault="1:train:SIGSTOP")
    try:
        ended = launch.wait(0, timeout=120)
    finally:
        launch.kill()
    seconds = ended - launch.struck()
    print(f"\nrank 1 stopped in train: rank 0 exited after {seconds:.2f} s (dist.timeout_min 0.25)")
    assert launch.procs[0].exitcode == 1 and seconds >= 14, seconds
    line = _error_line(launch.err(0))
    assert line.startswith("error: rank 0 of 2 stopped: a collective failed (Timed out waiting 15000ms"), line
    assert ("another process stalled, or its host was lost, for dist.timeout_min (0.25 min); if rank 0 was evaluating "
            "or saving a checkpoint for that long, raise dist.timeout_min; the last checkpoint, "
            f"{run / 'checkpoints' / 'iter_000001'}, is intact") in line, line


def test_sigint_to_torchrun_leaves_one_consistent_checkpoint_and_the_run_resumes_exactly(reference, tiny_ckpt,
                                                                                         tmp_path):
    """Ctrl-C at torchrun: it forwards SIGINT to every process (each in its own session, so a terminal's Ctrl-C
    reaches torchrun alone); they finish the iteration, rank 0 saves it, and all exit 130."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "slas",
           *_argv(tiny_ckpt, run, **{"run.checkpoint_every": 100})]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while len(read_metrics(run)) < 2 and time.time() < deadline and proc.poll() is None:  # iteration 1 logged
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    saved = checkpoint.all_of(run / "checkpoints")
    assert len(saved) == 1, (saved, out[-3000:])  # one checkpoint: the iteration SIGINT interrupted
    it = int(saved[0].name.removeprefix("iter_"))
    assert 1 <= it < ITERS and checkpoint.verify(saved[0])["iteration"] == it
    assert not list((run / "checkpoints").glob(".tmp_*"))
    assert f"interrupted by SIGINT after iteration {it} of {ITERS}: saved {saved[0]}" in out, out[-3000:]
    assert [json.loads(ln)["iteration"] for ln in (run / "metrics.jsonl").read_text().splitlines()][-1] == it
    _run(["train", "--no-progress", "--resume", str(run)], tmp_path / "resume_logs")
    assert _rows(run) == _rows(reference)


def test_a_slow_evaluation_warns_before_the_timeout_stops_the_others():
    """Rank 0 evaluates alone while the others wait in a collective: an evaluation over half of dist.timeout_min
    says so once (the iteration-0 evaluation is as long as the later ones, so a run learns it at its start)."""
    from types import SimpleNamespace

    from slas.recipe.train import _warn_slow_wait

    lines: list[str] = []
    st = SimpleNamespace(cfg=SimpleNamespace(dist=SimpleNamespace(timeout_min=1.0)), pg=SimpleNamespace(size=2),
                         warned_wait=False)
    _warn_slow_wait(st, 29.0, lines.append)
    assert lines == []
    _warn_slow_wait(st, 31.0, lines.append)
    _warn_slow_wait(st, 45.0, lines.append)
    assert lines == ["warning: this evaluation took 31 s, more than half of dist.timeout_min (1 min): the other "
                     "torchrun processes wait for it in a collective and stop after that long; raise dist.timeout_min"]
    st.pg.size, st.warned_wait = 1, False  # one process: nobody waits
    _warn_slow_wait(st, 100.0, lines.append)
    assert len(lines) == 1
