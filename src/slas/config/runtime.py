"""The sections around the loop: ``eval`` (evaluation during training), ``monitor`` (the reward-hacking monitor),
``run`` (run directory, seed, checkpoints, loggers) and ``dist`` (many processes)."""

from __future__ import annotations

from dataclasses import dataclass, field

from slas.config.errors import need, short


@dataclass
class EvalConfig:
    every: int = 20
    """evaluate every this many iterations (and at 0 and the end); 0 = only at 0 and the end"""
    split: str = "test"
    """ShapesWorld split for the held-out evaluation"""
    images_per_tag: int = 48
    """images per tag, cycling over its prompts (the test split is unbalanced); 0 = off"""
    n_per_prompt: int = 1
    """images per prompt when images_per_tag is 0 (or with data.eval_prompts)"""
    max_prompts: int = 0
    """0 = the whole split; else a fixed tag-balanced subset of this many prompts (data.eval_prompts: the first ones)"""
    steps: int = 20
    """ODE steps"""
    shift: str | float = "auto"
    """data.eval_prompts' ODE time shift: auto = the stock diffusers pipeline's (FLUX.1-dev: dynamic), else sample.shift"""
    in_domain_per_tag: int = 24
    """in-domain evaluation beside the held-out one: this many images per tag of the ShapesWorld train split (fixed
    prompts and seeds), logged as eval/id/*; 0 = off
    """
    grid_prompts: list = field(default_factory=lambda: [
        "a photo of a blue square and a red triangle",
        "a photo of three circles",
        "a photo of a white circle",
        "a photo of a triangle left of a square",
    ])
    """prompts of the sample grid saved at each evaluation (samples/iter_*.png), 4 seeds each"""

    def check(self) -> None:
        """This section's own rules."""
        need(self.every >= 0, "eval.every must be >= 0")
        need(self.split in ("train", "test", "eval"), "eval.split must be 'train', 'test' or 'eval'")
        need(self.n_per_prompt >= 1 and self.steps >= 1, "eval.n_per_prompt and eval.steps must be >= 1")
        need(self.shift == "auto" or (not isinstance(self.shift, str) and self.shift > 0),
             f"eval.shift must be 'auto' or a flow time shift > 0, got {short(self.shift)}")
        need(self.max_prompts >= 0, "eval.max_prompts must be >= 0 (0 = whole split)")
        need(self.images_per_tag >= 0, "eval.images_per_tag must be >= 0 (0 = use eval.n_per_prompt)")
        need(self.in_domain_per_tag >= 0, "eval.in_domain_per_tag must be >= 0 (0 = no in-domain evaluation)")
        need(all(isinstance(p, str) and p.strip() for p in self.grid_prompts),
             f"eval.grid_prompts must be a list of prompt strings, got {short(self.grid_prompts)}")


@dataclass
class MonitorConfig:
    """The reward-hacking monitor (slas.toyworld.monitor, docs/hacking.md) at every ShapesWorld evaluation: the
    training reward against the strict verifier on in-domain and held-out prompts, diversity, image statistics, the
    hacking gap. It does not run with data.eval_prompts (no verifier for those images)."""

    enabled: bool = True
    """run the monitor at each ShapesWorld evaluation"""
    prompts: int = 6
    """in-domain prompts: a fixed tag-balanced subset of the train split (6 = one per tag)"""
    group: int = 4
    """fixed seeds per in-domain prompt (diversity within a group needs >= 2)"""
    early_stop: bool = False
    """stop the run when the in-domain gold score has fallen, and the proxy risen, at each of the last `patience`
    evaluations (checkpointed at the stopping iteration; run dir gets early_stop.json)
    """
    patience: int = 3
    """evaluations in a row that early_stop needs"""

    def check(self) -> None:
        """This section's own rules; early_stop's need of the ShapesWorld evaluation is checked in ``validate``."""
        need(self.prompts >= 1, "monitor.prompts must be >= 1")
        need(self.group >= 2, "monitor.group must be >= 2: diversity is measured between images of the same prompt")
        need(self.patience >= 1, "monitor.patience must be >= 1 (evaluations in a row)")


@dataclass
class RunConfig:
    out_dir: str = "runs/toy_slas"
    """the run directory: config.yaml, metrics.jsonl, curves.png, samples/, checkpoints/"""
    seed: int = 0
    """seeds every random draw of the run (prompt order, noise); evaluation seeds are fixed and separate"""
    checkpoint_every: int = 10
    """iterations; the last iteration is always checkpointed"""
    keep_checkpoints: int = 2
    """how many of the newest checkpoints to keep"""
    threads: int = 0
    """torch threads of each training process; 0 = auto: OMP_NUM_THREADS when set (torchrun sets 1), else the usable
    cores (the affinity mask) shared among this machine's torchrun processes, at most torch's own default. When the
    cores are already busy at start, the run says so in one warning line with a count that fits"""
    tensorboard: bool = False
    """also log to TensorBoard (run_dir/tb; pip install 'slas[tensorboard]')"""
    wandb: bool = False
    """also log to Weights & Biases (pip install 'slas[wandb]')"""
    wandb_mode: str = "offline"
    """W&B mode: offline (sync later with `wandb sync`) or online"""
    log_memory: bool = False
    """log the peak memory of each phase of every iteration (load, encode, rollout, decode, reward, train, step, eval,
    save, resume) as memory/* metrics, per process: CUDA allocator peaks, or the peak resident set on the CPU
    (docs/performance.md)"""

    def check(self) -> None:
        """This section's own rules."""
        need(self.checkpoint_every >= 1, "run.checkpoint_every must be >= 1")
        need(self.keep_checkpoints >= 1, "run.keep_checkpoints must be >= 1 (resume needs one)")
        need(self.threads >= 0, "run.threads must be >= 0 (0 = the usable cores)")
        need(self.wandb_mode in ("offline", "online", "disabled"), "run.wandb_mode must be offline/online/disabled")


@dataclass
class DistConfig:
    """torchrun processes (slas.recipe.parallel, docs/distributed.md). The config's batch is global: each of the W
    processes rolls out and trains N / W samples of train.prompts_per_iter x train.group_size (W must divide it);
    sample.batch_size, train.micro_batch and reward.batch_size are per process."""

    strategy: str = "ddp"
    """ "ddp": replicated weights, gradients all-reduced once per optimizer step; "fsdp": FSDP2 fully_shard of the
    denoiser (weights, gradients, optimizer state and EMA sharded; checkpoints via torch.distributed.checkpoint)"""
    timeout_min: float = 10.0
    """the process-group timeout: how long a process waits in a collective for the others. A process that dies is
    seen at once (its connections close) and the others stop with one error line; one that stalls, or whose host is
    lost, is seen only after this long. It must exceed rank 0's evaluation plus a checkpoint save, for which the other
    processes wait (the run warns when an evaluation takes more than half of it)"""
    gather_rollout: bool = False
    """fsdp: all-gather the weights once per rollout and keep them while sampling (one full copy per process; fewer
    collectives, for models that fit) instead of one block at a time per forward (the default, as DanceGRPO's FSDP1
    does: train_grpo_flux.py:326-367, fsdp_util.py:56-117)
    """

    def check(self) -> None:
        """This section's own rules; fsdp's limits on the model are checked in ``validate``."""
        need(self.strategy in ("ddp", "fsdp"), f"dist.strategy must be 'ddp' or 'fsdp', got {self.strategy!r}")
        need(self.timeout_min > 0, "dist.timeout_min must be > 0")
