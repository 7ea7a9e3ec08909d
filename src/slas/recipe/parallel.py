"""Many processes for the GRPO recipe: ``torchrun --nproc_per_node K -m slas train ...`` with DDP or FSDP2.

The config fixes the *global* batch: P prompts x G samples = N per iteration, whatever the number of processes W
(docs/distributed.md). Rank r owns the contiguous rows ``[r N/W, (r+1) N/W)`` of it; a group may span ranks.
Every random draw of an iteration (initial noise, step noise, trained steps, pair order) is made for the whole
global batch from the iteration's generator on every rank, exactly as the one-process run makes it, and each rank
keeps its rows. A W-process run therefore rolls out the same samples as the one-process run, and its metrics and
weights differ from it only by the order of floating-point sums (tests/integration/test_distributed.py).

What crosses ranks in an iteration:

- rewards (every component), prompt ids and group ids: ``ProcessGroup.gather``; advantages, and SLAS's batch std, are
  computed over the global batch on every rank (docs/distributed.md) and each rank takes its slice;
- gradients: DDP all-reduces them once per optimizer step (``no_sync`` on every micro-batch but the last); FSDP2
  reduce-scatters every micro-batch's, so they stay sharded (``ParallelDenoiser.accumulate``; DanceGRPO reduces
  after every (sample, timestep) backward, DanceGRPO train_grpo_flux.py:605-613);
- the loss diagnostics: one all-reduce of a few numbers per iteration (no host sync per micro-batch).

Only rank 0 writes metrics and sample grids; under FSDP every rank writes its checkpoint shards. Evaluation of
``data.eval_prompts`` on a sharded model runs on every rank, each its share of the prompts, one block unsharded at a
time; otherwise rank 0 evaluates alone (the others wait in the next collective; ``dist.timeout_min`` bounds the
wait), under FSDP after every rank joined the all-gather of the full weights (``ParallelDenoiser.gathered``).

One process (no torchrun) with ``dist.strategy: ddp`` has no process group and no wrapper: the recipe is the plain
single-process loop, bit for bit. ``fsdp`` in one process makes a one-member group so that ``fully_shard`` and the
sharded checkpoints work the same way.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from slas.config import ConfigError

STRATEGIES = ("ddp", "fsdp")


# ----------------------------------------------------------------------------
# The process group
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MicroBatch:
    """Part of one optimizer step's (sample, step) pairs that one rank trains in one forward/backward."""

    n: Tensor  # [M] this rank's sample index (row of its rollout)
    ts: Tensor  # [M] step index of each pair
    pairs: int  # real pairs in it; 0 = padding (one pair with weight 0, see ProcessGroup.micro_batches)


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the torchrun processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # where collectives run: cuda for NCCL, cpu for gloo
    owns_group: bool = False  # init() created the process group (shutdown() destroys it)

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that writes files and evaluates."""
        return self.rank == 0

    @property
    def grouped(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    def share(self, n: int, what: str) -> slice:
        """This rank's rows of a global batch of ``n``: a contiguous block of n / W. ConfigError when W does not
        divide n (the global batch is what the config fixes; a share that differs by rank would change the math)."""
        if n % self.size:
            raise ConfigError(f"{what} = {n} must divide evenly over the {self.size} torchrun processes: every rank "
                              f"rolls out and trains the same share of the global batch; choose a multiple of "
                              f"{self.size} or another --nproc_per_node")
        k = n // self.size
        return slice(self.rank * k, (self.rank + 1) * k)

    def gather(self, x: Tensor) -> Tensor:
        """All ranks' ``x`` [n, ...] (the same shape on every rank) concatenated along dim 0 in rank order."""
        if self.size == 1:
            return x
        src = x.to(self.device).contiguous()
        parts = [torch.empty_like(src) for _ in range(self.size)]
        dist.all_gather(parts, src)
        return torch.cat(parts).to(x.device)

    def gather_arrays(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{name: [n]}`` from every rank -> ``{name: [N]}`` in rank order (one collective for all of them)."""
        if self.size == 1:
            return arrays
        names = list(arrays)
        full = self.gather(torch.from_numpy(np.stack([np.asarray(arrays[k], dtype=np.float64) for k in names], 1)))
        return {k: full[:, i].numpy() for i, k in enumerate(names)}  # [N] each

    def all_reduce(self, x: Tensor, op: str = "sum") -> Tensor:
        """Element-wise sum (or max) of ``x`` over ranks, returned on x's device."""
        if self.size == 1:
            return x
        y = x.to(self.device).clone()
        dist.all_reduce(y, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
        return y.to(x.device)

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` (picklable) on every rank."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_object(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.grouped:
            dist.barrier()

    def shutdown(self) -> None:
        """Wait for every rank (rank 0 may still be writing the last checkpoint), then leave the group init() made."""
        if self.owns_group and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def micro_batches(self, n_idx: Tensor, t_idx: Tensor, rows: slice, micro_batch: int) -> list[MicroBatch]:
        """This rank's micro-batches for one optimizer step of the (sample, step) pairs ``n_idx``, ``t_idx`` [U]
        (global sample ids, in the order the one-process run trains them).

        A rank trains the pairs whose sample it rolled out (``rows``), in that order, ``micro_batch`` at a time. How
        many that is differs by rank (the pair order is a global random permutation), but every rank must make the
        same number of forward/backward calls (FSDP's all-gathers, DDP's one reduce); a rank with fewer pads with
        one-pair micro-batches of weight 0, whose loss is an exact 0 that still reaches every parameter. With one
        process this is ``micro_batch``-sized chunks of the pairs.
        """
        per_rank = rows.stop - rows.start
        owner = torch.div(n_idx, per_rank, rounding_mode="floor")  # [U] rank of each pair's sample
        counts = torch.bincount(owner, minlength=self.size).tolist()  # the same on every rank: no communication
        n_batches = max(1, max(-(-c // micro_batch) for c in counts))
        mine = owner == self.rank
        n_own, t_own = n_idx[mine] - rows.start, t_idx[mine]  # [c]
        out = [MicroBatch(n_own[lo : lo + micro_batch], t_own[lo : lo + micro_batch],
                          min(micro_batch, len(n_own) - lo)) for lo in range(0, len(n_own), micro_batch)]
        pad = MicroBatch(torch.zeros(1, dtype=torch.long), t_idx[:1], 0)
        return out + [pad] * (n_batches - len(out))


def init(strategy: str = "ddp", timeout_min: float = 60.0) -> ProcessGroup:
    """Join the process group that torchrun describes in the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT``, env:// rendezvous), or return the one-process world.

    NCCL when CUDA is available (each rank on ``cuda:LOCAL_RANK``, made the current device so that the backbone's
    ``cuda`` means it), gloo on the CPU."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"dist.strategy must be one of {STRATEGIES}, got {strategy!r}")
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1 and strategy != "fsdp":
        return ProcessGroup()
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    owns = False
    if not dist.is_initialized():
        timeout = datetime.timedelta(minutes=timeout_min)
        backend = "nccl" if cuda else "gloo"
        if "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend, timeout=timeout)
        else:  # FSDP in a plain one-process run: a one-member group, no rendezvous
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
        owns = True
    return ProcessGroup(dist.get_rank(), dist.get_world_size(), local_rank, device, owns)


# ----------------------------------------------------------------------------
# The trained network over ranks
# ----------------------------------------------------------------------------


class _Forward(nn.Module):
    """``backbone.predict`` as an nn.Module over ``backbone.module``: what DDP wraps, so that the adapter's own
    forward (conditioning, CFG, autocast) runs inside DDP and the checkpointed module keeps its parameter names."""

    def __init__(self, backbone):
        super().__init__()
        self.net = backbone.module
        self.predict = backbone.predict  # a bound method, not a submodule

    def forward(self, x: Tensor, t: Tensor, cond: dict[str, Tensor]) -> Tensor:
        return self.predict(x, t, cond)


def _fsdp_modules(module: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in module.modules() if isinstance(m, FSDPModule)]


def _shard(denoiser: nn.Module, compute_dtype: torch.dtype) -> None:
    """FSDP2 units: every block of the denoiser's top-level ModuleLists, then the denoiser (the root)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    low = compute_dtype != torch.float32
    block_mp = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32) if low else MixedPrecisionPolicy()
    # the root hands fp32 outputs to the sampler, which steps in fp32
    root_mp = (MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32, output_dtype=torch.float32)
               if low else MixedPrecisionPolicy())
    for child in denoiser.children():
        if isinstance(child, nn.ModuleList):
            for block in child:
                fully_shard(block, mp_policy=block_mp)
    fully_shard(denoiser, mp_policy=root_mp)


def load_shards_from_safetensors(denoiser: nn.Module, folder, device: torch.device) -> None:
    """Materialise an FSDP2-sharded denoiser built on the meta device: allocate this rank's shards on ``device``
    and read only their rows from the safetensors files of ``folder`` (a diffusers model folder, e.g.
    ``FLUX.1-dev/transformer``) with torch.distributed.checkpoint's HuggingFaceStorageReader, converting to the
    parameters' dtype (fp32 master weights from bf16 files). No process holds the whole model."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    names = set(denoiser.state_dict())
    transient = [n for n, _ in denoiser.named_buffers() if n not in names]
    if transient:  # to_empty leaves them uninitialised and no file holds them
        raise ValueError(f"{type(denoiser).__name__} has non-persistent buffers ({transient[:3]}), which loading "
                         "from the meta device cannot restore; load it whole (dist.strategy ddp)")
    denoiser.to_empty(device=device)
    state = get_model_state_dict(denoiser)  # this rank's shards (DTensors), keyed as the files are
    dcp.load(state, storage_reader=HuggingFaceStorageReader(str(folder)))  # in place


def _denoiser(backbone) -> nn.Module:
    """The network ``predict`` runs (the toy adapter's ``module`` also holds its text encoder)."""
    return getattr(backbone, "denoiser", backbone.module)


class ParallelDenoiser:
    """The trained network as the recipe's TRAIN phase calls it: ``policy(x, t, cond)`` runs the adapter's
    ``predict`` through DDP (W > 1), through FSDP2-sharded modules (``dist.strategy: fsdp``) or as is (one process).

    - ``accumulate(sync)``: DDP synchronises gradients on the last micro-batch of an optimizer step; FSDP2
      reduce-scatters each micro-batch's, so gradients stay sharded;
    - ``gathered()``: the full weights for many no-grad forwards: FSDP all-gathers once instead of before every
      block's forward, at the cost of one full copy of the weights per process meanwhile; a no-op otherwise. Rollouts
      use it only with ``gather_rollout`` (``dist.gather_rollout``, for models that fit); by default a sharded
      rollout unshards one block at a time, as DanceGRPO's FSDP1 does (train_grpo_flux.py:326-367);
    - ``clip_grad_norm_``: the global norm (a sharded norm is reduced over ranks by torch).

    FSDP2 follows torchtitan (torchtitan/models/llama3/infra/parallelize.py ``apply_fsdp``): each block of the
    denoiser's top-level ``nn.ModuleList``s (diffusers: ``down_blocks``, ``up_blocks``, ``transformer_blocks``, ...)
    is a unit, then the denoiser itself; with a low-precision ``compute_dtype`` a ``MixedPrecisionPolicy``
    all-gathers the weights in that dtype and reduce-scatters gradients in fp32 over fp32 sharded master weights, so
    no autocast cache of whole unsharded weights exists. A backbone built on the meta device (``denoiser_weights``:
    its safetensors folder) is materialised shard by shard (``load_shards_from_safetensors``). Modules outside the
    denoiser (the toy model's frozen text encoder) stay replicated. ``compile`` applies ``torch.compile`` to the
    denoiser (rollout, training and evaluation forwards alike).
    """

    def __init__(self, backbone, pg: ProcessGroup, strategy: str = "ddp", compile: bool = False,
                 gather_rollout: bool = False, compute_dtype: torch.dtype = torch.float32):
        self.backbone, self.pg, self.strategy, self.gather_rollout = backbone, pg, strategy, gather_rollout
        self.denoiser = _denoiser(backbone)
        self._ddp = None
        if strategy == "fsdp":
            _shard(self.denoiser, compute_dtype)
            weights = getattr(backbone, "denoiser_weights", None)
            if weights is not None:  # built on the meta device: each rank reads only its shards
                load_shards_from_safetensors(self.denoiser, weights, backbone.device)
        elif pg.size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [pg.local_rank] if pg.device.type == "cuda" else None
            # broadcast_buffers=False: no buffer changes in training (no batch norm); saves a broadcast per forward.
            # torch 2.13 calls it deprecated in favour of forward_sync_buffers, which older torch lacks.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
                self._ddp = DistributedDataParallel(_Forward(backbone), device_ids=ids, broadcast_buffers=False)
        if compile:  # in place (nn.Module.compile), after sharding: parameter names and checkpoints are unchanged
            self.denoiser.compile()

    @property
    def sharded(self) -> bool:
        return self.strategy == "fsdp"

    def close(self) -> None:
        """Free the DDP wrapper now, before ``ProcessGroup.shutdown`` leaves the group (a no-op without one).

        DDP's C++ Reducer holds a reference to the gloo process group. Freed last (with the run's state, after
        ``destroy_process_group``), it ran the group's destructor while holding the GIL; the destructor waits for the
        group's worker thread, which may at that moment be freeing the last barrier's work, whose tensors need the
        GIL to be freed: a deadlock, in which a finished rank never exits (3 of 60 two-process runs on the CPU before
        this, 0 of 100 after: benchmarks/torchrun_exit.py). Freed here, the Reducer drops its reference while the
        group is still registered, and the group goes in ``destroy_process_group``, whose binding releases the GIL."""
        if self._ddp is not None:
            self._ddp = None
            gc.collect()  # the wrapper may sit in a reference cycle (module hooks): free it now, not at some later gc

    def __call__(self, x: Tensor, t: Tensor, cond: dict[str, Tensor]) -> Tensor:
        if self._ddp is not None:
            return self._ddp(x, t, cond)
        return self.backbone.predict(x, t, cond)

    @contextlib.contextmanager
    def accumulate(self, sync: bool):
        """Run one micro-batch's forward and backward. DDP reduces the gradients over ranks only when ``sync`` (the
        last micro-batch of an optimizer step). FSDP2 reduce-scatters every micro-batch's gradients: they stay
        sharded between micro-batches, where skipping the sync would hold full-size unsharded fp32 gradients (one
        more copy of the model per process); DanceGRPO's FSDP1 reduces after every backward too
        (train_grpo_flux.py:605-613)."""
        if self._ddp is not None and not sync:
            with self._ddp.no_sync():
                yield
            return
        yield

    @contextlib.contextmanager
    def gathered(self):
        """FSDP: all-gather the full weights once (every rank must enter), keep them through any number of forwards,
        reshard on exit. Under it a forward runs on one rank alone (rank-0 evaluation)."""
        if not self.sharded:
            yield
            return
        mods = _fsdp_modules(self.denoiser)
        for m in mods:
            m.set_reshard_after_forward(False, recurse=False)
        for m in mods:
            m.unshard()
        try:
            yield
        finally:
            for m in mods:
                m.reshard()
                # FSDP2's default: reshard blocks after forward, keep the root (needed first in backward)
                m.set_reshard_after_forward(m is not self.denoiser, recurse=False)

    def sampling(self):
        """The context of a rollout: ``gathered()``, or per-forward all-gathers when ``gather_rollout`` is off."""
        return self.gathered() if self.gather_rollout else contextlib.nullcontext()

    def swapped(self, params: dict[str, Tensor]):
        """The denoiser's module run with other values for the named parameters (``swapped_params``)."""
        return swapped_params(self.backbone.module, params)

    def clip_grad_norm_(self, params: list[nn.Parameter], max_norm: float) -> Tensor:
        """Clip to ``max_norm`` and return the global pre-clip norm (a 0-d tensor; no host sync)."""
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


@contextlib.contextmanager
def swapped_params(module: nn.Module, params: dict[str, Tensor]):
    """Temporarily run ``module`` with other values for the named parameters (the KL reference policy, or EMA
    weights for evaluation).

    Plain and DDP parameters: their ``.data`` is swapped (no copy). FSDP2 parameters are exchanged with ``params``'s
    tensors in place instead, one tensor at a time (``params`` holds the module's own values meanwhile): FSDP
    all-gathers from the sharded storage, which a ``.data`` swap would not reach, and a copy of every shard would
    hold one more copy of the trained weights per process. Every FSDP module is resharded first, so no stale full
    weights survive, and again on exit (every rank must enter)."""
    if not params:
        yield
        return
    mods = _fsdp_modules(module)
    if not mods:
        named = dict(module.named_parameters())
        saved = {k: named[k].data for k in params}
        try:
            for k, v in params.items():
                named[k].data = v
            yield
        finally:
            for k, v in saved.items():
                named[k].data = v
        return
    _exchange(module, mods, params)
    try:
        yield
    finally:
        _exchange(module, mods, params)


@torch.no_grad()
def _exchange(module: nn.Module, mods: list[nn.Module], params: dict[str, Tensor]) -> None:
    """Swap the values of ``module``'s FSDP2-sharded parameters and ``params`` (the same shards) in place, holding one
    tensor's copy at a time; after resharding every FSDP module, so that their parameters are the shards."""
    for m in mods:  # frees gathered weights; a module's parameters are its shards again
        m.reshard()
    named = dict(module.named_parameters())
    for k, v in params.items():
        p = named[k].detach()
        held = p.clone()
        p.copy_(v)
        v.copy_(held)
