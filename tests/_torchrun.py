"""Launch ``slas`` as torchrun would, in W processes on the CPU (gloo): the tests of many processes share it.

Processes are forked from a forkserver that imported slas once (a torchrun launch pays ~10 s of imports per process
on 2 cores); each child sets torchrun's environment (MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK) and runs the
CLI, so the env:// rendezvous is the one torchrun uses (``torchrun --nproc_per_node 2 -m slas train ...`` does the
same with two fresh interpreters; docs/distributed.md)."""

from __future__ import annotations

import faulthandler
import multiprocessing as mp
import os
import socket
import sys

import torch

_CTX = None
PRELOAD = ["slas.recipe.train", "slas.apps.cli", "slas.toyworld.evaluate", "slas.toyworld.monitor",
           "torch.distributed.fsdp", "torch.distributed.checkpoint", "matplotlib.pyplot",
           "transformers.models.clip.modeling_clip", "diffusers.models.unets.unet_2d_condition",
           "diffusers.models.transformers.transformer_flux"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, argv: list[str], env: dict[str, str], hang_s: float) -> None:
    # a rank still running after hang_s prints every thread's stack to the test's captured stderr and exits 1, so
    # that a hang reports where it is instead of only "still alive at the timeout"
    faulthandler.dump_traceback_later(hang_s, exit=True)
    os.environ.update(env)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                          WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)  # the same kernels in every process: per-sample results do not depend on the run
    from slas.apps.cli import main

    sys.exit(main(argv))  # the interpreter's own exit, as under torchrun: a hang there fails the test


def launch(world: int, argv: list[str], timeout: float = 300, env: dict[str, str] | None = None) -> None:
    """Run ``slas <argv>`` in ``world`` processes; every one must exit 0 within ``timeout`` seconds."""
    global _CTX
    if _CTX is None:
        _CTX = mp.get_context("forkserver")
        _CTX.set_forkserver_preload(PRELOAD)
    port = free_port()
    procs = [_CTX.Process(target=_worker, args=(r, world, port, argv, env or {}, max(1.0, timeout - 20)))
             for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    codes = [p.exitcode for p in procs]  # negative: killed by that signal (-9: the timeout above)
    assert codes == [0] * world, f"slas {' '.join(argv)} failed in {world} processes: exit codes {codes}"
