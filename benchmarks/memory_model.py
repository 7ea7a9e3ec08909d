"""The per-process memory of each phase of an iteration (``run.log_memory``'s phases), as a model that is fitted on
CPU measurements of real-width models (benchmarks/memory_real.py) and evaluated for GPU setups.

A phase's peak on one process is

    peak = const + states + activations

- ``states`` (analytic, exact by construction; fp32 on every device): the trained parameters' tensors this process
  holds in the phase: master weights, gradients (train, step; also while a resume initialises the optimizer state),
  AdamW's two moments (from the first optimizer step on), the old policy (nft), the EMA, DDP's gradient buckets,
  and on a GPU the ``foreach`` AdamW's temporary (a copy of the second moment inside ``step``: torch/optim/adam.py
  ``_multi_tensor_adam``, ``exp_avg_sq_sqrt``; the CPU runs the per-tensor loop). Under FSDP all of them are / W.
  Also the rollout record (fp32 trajectory), the inputs gradient checkpointing keeps of every block (images x
  tokens x blocks x width, in the compute dtype) and, on a GPU, the autocast cache (bf16 copies of fp32 weights
  that require grad, held through backward) and a LoRA run's frozen base in the compute dtype.
- ``const`` (fitted, one per phase): the process and the frozen models. On a GPU the frozen models are counted from
  their parameters, the CUDA context is the margin below, and what a phase holds over the encode phase's constant
  is kept as it is.
- FSDP's units (fitted: copies of ``units`` = the root's parameters, kept unsharded, plus two blocks', the one
  running and the one FSDP2 prefetches): gathered weights, and in backward the block's unsharded gradients and the
  reduce-scatter buffer. Fitted in fp32 bytes on the CPU; on a GPU in the MixedPrecisionPolicy's dtypes: bf16
  gathers and gradients, an fp32 reduce-scatter buffer (``UNIT_GPU``).
- activations (fitted coefficients x drivers): training recomputes one block at a time under gradient
  checkpointing, or keeps every layer's without it (images x tokens, x layers); rollouts and evaluation are no-grad
  (images x tokens); the VAE decode scales with images x pixels. Coefficients are bytes of the CPU's fp32; a GPU's
  bf16 autocast holds ``ACT_GPU`` of them (norms and softmax stay fp32 under autocast), the VAE ``VAE_GPU``.

A GPU figure is then ``GPU_FRAGMENTATION`` x the largest phase + ``GPU_CONTEXT`` (the CUDA context, cuBLAS and NCCL
workspaces, which torch.cuda.max_memory_allocated does not see).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

GIB = 2**30
MIB = 2**20
PHASES = ("load", "encode", "rollout", "decode", "reward", "train", "step", "eval", "save", "resume")
ACT_GPU = 0.75  # bf16 activations, with the norms' outputs (and what they feed) left fp32 by autocast, of the CPU's fp32
VAE_GPU = 0.85  # the VAE decoder's GroupNorms run in fp32 under autocast: most of its largest tensors
GPU_FRAGMENTATION = 1.10  # the caching allocator's reserved over allocated memory
GPU_CONTEXT = 1.5 * GIB  # CUDA context + cuBLAS / NCCL workspaces, outside the allocator
# SD1.4's levels 3-4 and mid block over levels 1-2 per layer, in activations ~ channels x pixels per level:
# (320 + 640/4 + 1280/16 + ~1280/64/3 without attention + mid ~30) / (320 + 640/4)
SD_LEVEL_FACTOR = 1.25
UNIT_GPU = {"train": (2 + 2 + 4 + 2) / 4}  # bytes per unit parameter of one fp32 unit copy: gathers, grads, RS
DRIVERS = {  # phase -> the drivers its fit uses (Setup attributes)
    "rollout": ("x_units", "x_roll"), "decode": ("x_decode",), "train": ("x_units", "x_train_blocks", "x_train"),
    "eval": ("x_units", "x_eval"),
}


@dataclass(frozen=True)
class Setup:
    """One process's share of a recipe, in the terms of the model."""

    kind: str  # flux | sd
    strategy: str  # fsdp | ddp | one (one process, no wrapper)
    world: int
    objective: str  # ppo_sde | nft
    trained: int  # trained parameters (the model, or the LoRA factors)
    gpu: bool
    depth: float  # FLUX blocks; SD layers per level (x SD_LEVEL_FACTOR for the 4 real levels)
    block: int = 0  # FSDP: parameters of the largest unit (a block)
    root: int = 0  # FSDP: parameters outside the blocks (the root unit, kept unsharded between forward and backward)
    ckpt_width: int = 0  # gradient checkpointing: the width of each block's kept input (FLUX: 3072); 0 = off
    frozen_base: int = 0  # a LoRA run's frozen base, stored in the compute dtype (2 bytes)
    tokens: int = 0  # tokens per image (FLUX: packed image + text; SD: latent pixels)
    pixels: int = 0  # decoded pixels per image
    train_images: int = 0  # images per training forward (micro-batch x the CFG batch)
    roll_images: int = 0  # images per rollout forward
    eval_images: int = 0  # images per evaluation forward
    decode_images: int = 0  # images per VAE decode call (vae_decode: 4)
    trajectory: int = 0  # bytes of the rollout record on the device
    frozen: dict = field(default_factory=dict)  # GPU: resident frozen models, name -> bytes
    encode: int = 0  # GPU: bytes the text encoders bring to the device to encode (text_encoder_offload)
    reward: int = 0  # GPU: the reward model's activations while scoring
    ema: bool = False
    autocast_cache: bool = False  # GPU, fp32 weights under bf16 autocast (no FSDP MixedPrecisionPolicy)
    steady: bool = True  # an iteration after the first (AdamW's moments exist in every phase)

    @property
    def shard(self) -> float:
        return self.trained / self.world if self.strategy == "fsdp" else self.trained

    @property
    def act_bytes(self) -> int:
        return 2 if self.gpu else 4

    @property
    def units(self) -> float:
        """Parameters of the FSDP units alive at once: the root and two blocks (0 without FSDP)."""
        return self.root + min(self.depth, 2) * self.block if self.strategy == "fsdp" else 0

    @property
    def x_units(self) -> float:
        return 4 * self.units  # fp32 bytes: the unit copies the CPU fit counts

    @property
    def x_train_blocks(self) -> float:
        return 0 if self.ckpt_width else self.train_images * self.tokens * self.depth

    @property
    def x_train(self) -> float:
        return self.train_images * self.tokens

    @property
    def x_roll(self) -> float:
        return self.roll_images * self.tokens

    @property
    def x_eval(self) -> float:
        return self.eval_images * self.tokens

    @property
    def x_decode(self) -> float:
        return self.decode_images * self.pixels


def states(s: Setup, phase: str) -> float:
    """Bytes of the analytic terms this process holds at the peak of ``phase``."""
    f32 = 4 * s.shard
    adam = s.steady or phase in ("step", "eval", "save", "resume")
    b = f32 + 2 * s.frozen_base  # master weights, a LoRA base
    b += f32 if phase in ("train", "step", "resume") else 0  # gradients (resume: _init_optim_state's zeros)
    b += 2 * f32 if adam else 0  # AdamW exp_avg, exp_avg_sq
    b += f32 if s.gpu and phase == "step" else 0  # foreach AdamW's exp_avg_sq_sqrt
    b += f32 if s.objective == "nft" else 0  # the old policy (swapped in and out in place: no copy)
    b += f32 if s.ema else 0
    b += 4 * s.trained if s.strategy == "ddp" and s.world > 1 else 0  # DDP's gradient buckets
    b += 2 * s.trained if s.autocast_cache and phase in ("rollout", "train", "eval") else 0
    if phase == "train":  # gradient checkpointing: every block's input, kept for its recompute
        b += s.train_images * s.tokens * s.depth * s.ckpt_width * s.act_bytes
    if phase not in ("load", "encode", "resume"):
        b += s.trajectory * (2 if phase == "rollout" and s.steady else 1)  # the last iteration's until replaced
    return b


@dataclass
class PhaseFit:
    """``measured - states = const + coef . drivers`` for one phase of one kind of model, in bytes."""

    const: float
    coef: dict[str, float]

    def activations(self, s: Setup) -> float:
        return sum(c * getattr(s, k) for k, c in self.coef.items())


def fit(runs: list[tuple[Setup, dict[str, float]]]) -> dict[str, PhaseFit]:
    """Least squares per phase over ``runs`` (setup, {phase: measured bytes}) of one kind of model."""
    out = {}
    for phase in PHASES:
        pts = [(s, m[phase]) for s, m in runs if phase in m]
        if not pts:
            continue
        keys = [k for k in DRIVERS.get(phase, ()) if len({getattr(s, k) for s, _ in pts}) > 1]
        a = np.array([[1.0] + [getattr(s, k) for k in keys] for s, _ in pts])
        y = np.array([v - states(s, phase) for s, v in pts])
        sol = np.linalg.lstsq(a, y, rcond=None)[0]
        out[phase] = PhaseFit(float(sol[0]), {k: float(c) for k, c in zip(keys, sol[1:], strict=True)})
    return out


def predict_cpu(fits: dict[str, PhaseFit], s: Setup) -> dict[str, float]:
    """Every fitted phase's peak (bytes) of the CPU setup ``s``: what the fit error compares with a measurement."""
    return {p: f.const + states(s, p) + f.activations(s) for p, f in fits.items()}


def predict_gpu(fits: dict[str, PhaseFit], s: Setup) -> dict[str, float]:
    """Every phase's allocated bytes of the GPU setup ``s`` from the CPU fits of its kind. See the module docstring."""
    frozen = sum(s.frozen.values())
    base = fits["encode"].const
    out = {}
    for p, f in fits.items():
        extra = max(f.const - base, 0.0)  # what the phase holds over the resident process and frozen models
        units = f.coef.get("x_units", 0.0) * s.units * UNIT_GPU.get(p, 2)  # unit copies, in the GPU's dtypes
        act = sum(c * getattr(s, k) for k, c in f.coef.items() if k != "x_units")
        act *= VAE_GPU if p == "decode" else ACT_GPU
        out[p] = (frozen + extra + max(units, 0.0) + states(s, p) + act + (s.encode if p == "encode" else 0)
                  + (s.reward if p == "reward" else 0))
    if "eval" in out and "decode" in fits:  # evaluation decodes its images too: at 720 px that is its peak
        out["eval"] = max(out["eval"], frozen + states(s, "eval") + fits["decode"].activations(s) * VAE_GPU)
    return out


def gpu_figure(phases: dict[str, float]) -> float:
    """The GPU memory to plan for, in bytes: the largest phase with the allocator's and the context's margins."""
    return GPU_FRAGMENTATION * max(phases.values()) + GPU_CONTEXT


def first_iteration(s: Setup) -> Setup:
    """``s`` as measured in a run's first iteration (AdamW's moments only from its first step on)."""
    return replace(s, steady=False)
