"""``slas compare``'s process pool: every unfinished run as one ``slas train`` process (``python -m slas.apps.cli
train``), up to ``jobs`` at once with ``threads`` torch threads each, one progress bar over the runs, and Ctrl-C
or SIGTERM stopping the processes it started (each resumes on the next call)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from slas.apps.compare.planning import CONFIGS, LOGS, RunSpec, status
from slas.recipe.metrics import last_iteration
from slas.recipe.threads import LOAD_CHECKED, usable_cores

DEFAULT_THREADS = 2  # torch threads per training process: the ShapesWorld model scales to about 2 on CPU
LOG_REFRESH_S = 60.0  # the progress bar's refresh when stderr is a file, not a terminal (1 s there)


def default_jobs(threads: int) -> int:
    return max(1, usable_cores() // max(1, threads))


def progress_text(running: list[RunSpec]) -> str:
    """Each running run's latest logged iteration: ``slas_s0 12/120, grpo_s0 -/120`` (``-``: no row yet)."""
    parts = []
    for spec in running:
        it = last_iteration(spec.cfg.run.out_dir)
        parts.append(f"{spec.name} {'-' if it is None else it}/{spec.cfg.train.iterations}")
    return ", ".join(parts)


def execute(specs: list[RunSpec], out: Path, jobs: int, threads: int, log=print, progress: bool = True) -> dict[str, int]:
    """Run the unfinished runs, ``jobs`` processes at a time; returns run name -> exit status of those launched.
    ``progress``: one bar over the runs (stderr), its text each running run's latest iteration."""
    from tqdm import tqdm

    todo = [(s, status(s)) for s in specs]
    todo = [(s, st) for s, st in todo if st != "done"]
    (out / LOGS).mkdir(parents=True, exist_ok=True)
    (out / CONFIGS).mkdir(parents=True, exist_ok=True)
    # the runs' thread count; the load was checked here for all of them (slas.recipe.threads)
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), LOAD_CHECKED: "1"}
    running: dict[str, tuple[subprocess.Popen, float, object]] = {}
    codes: dict[str, int] = {}
    queue = list(todo)

    def _terminated(signum, frame):  # `kill` (SIGTERM) stops the children too, as Ctrl-C does
        raise SystemExit(128 + signum)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    bar = tqdm(total=len(todo), desc="compare", unit="run", file=sys.stderr, dynamic_ncols=True,
               disable=not progress or not todo)
    by_name = {spec.name: spec for spec, _ in todo}
    shown = 0.0
    every = 1.0 if sys.stderr.isatty() else LOG_REFRESH_S
    try:
        while queue or running:
            while queue and len(running) < jobs:
                spec, st = queue.pop(0)
                cfg_path = out / CONFIGS / f"{spec.name}.yaml"
                cfg_path.write_text(yaml.safe_dump(spec.cfg.to_dict(), sort_keys=False))
                cmd = [sys.executable, "-m", "slas.apps.cli", "train", "--no-progress"]
                cmd += ["--resume", spec.cfg.run.out_dir] if st == "resume" else ["--config", str(cfg_path)]
                logf = (out / LOGS / f"{spec.name}.log").open("a")
                running[spec.name] = (subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env),
                                      time.time(), logf)
                log(f"{'resumed' if st == 'resume' else 'started'} {spec.name} "
                    f"({len(codes) + len(running)}/{len(todo)})")
            time.sleep(0.2)
            for name, (proc, t0, logf) in list(running.items()):
                if proc.poll() is None:
                    continue
                logf.close()
                codes[name] = proc.returncode
                del running[name]
                msg = "finished" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see {LOGS}/{name}.log)"
                log(f"{msg} {name} in {(time.time() - t0) / 60:.1f} min")
                bar.update(1)
            if running and time.time() - shown >= every:  # each running run's latest iteration
                bar.set_postfix_str(progress_text([by_name[n] for n in running]), refresh=True)
                shown = time.time()
    finally:  # interrupted: stop the processes this call started (each resumes next time)
        bar.close()
        for proc, _, logf in running.values():
            proc.terminate()
            proc.wait()
            logf.close()
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return codes
