"""Typed run configuration: nested dataclasses, YAML + dotted CLI overrides.

Validated once at load: unknown keys and wrong types are errors, and every
invariant says why it holds. The string under each field is its documentation (``field_docs``;
``slas config show`` prints it beside the value).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

OBJECTIVES = ("ppo_sde", "nft", "awm")  # train.objective values (slas.algo.losses)


class ConfigError(ValueError):
    """A config problem; the message names the key and says what is allowed."""


@dataclass
class ModelConfig:
    backbone: str = "toy"
    """adapter name (slas.policy): "toy" is the ShapesWorld model"""
    checkpoint: str | None = None
    """checkpoint dir or a shipped name (toy_S, toy_M, toy_L); None = the shipped M"""
    train_text_encoder: bool = False
    """frozen text encoder => prompt embeddings are cached"""
    trainable: list = field(default_factory=list)
    """train only parameters whose name contains one of these substrings (e.g. [attn] = the UNet's self/cross-
    attention); empty = all of them
    """
    lora_rank: int = 0
    """LoRA (peft) on the UNet: rank 0 = full fine-tuning. The base weights are frozen and only the low-rank factors
    train (Flow-GRPO: r 32, alpha 64 on SD3.5's attention).
    """
    lora_alpha: float = 0.0
    """scale = alpha / rank; 0 = alpha equals the rank (scale 1)"""
    lora_targets: list = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    """module-name suffixes that get LoRA factors (with lora_rank > 0)"""
    path: str | None = None
    """real backbones (flux, sd3, sd; docs/real-models.md): the local diffusers folder (model_index.json,
    transformer/ or unet/, vae/, ...). Weights load only from disk; a missing folder is an error when the model
    loads, not at config validation"""
    resolution: int = 0
    """image side in pixels; 0 = the backbone's default (FLUX 1024, SD3.5 1024, SD1.x 512)"""
    guidance_scale: float | None = None
    """FLUX.1-dev: the guidance-embedding value (no CFG batch); SD3 / SD1.x: the CFG scale (<= 1: no CFG). null = the
    backbone's default (FLUX 3.5 DanceGRPO, SD3 4.5 Flow-GRPO, SD1.x 5.0 DanceGRPO/DDPO)
    """
    cfg_detach_uncond: bool = False
    """CFG in training: true = the unconditional branch is detached and runs under no_grad (Flow-GRPO
    train_sd3.py:190); false = gradients through both branches (DanceGRPO-SD train_grpo_sd.py:594-678)
    """
    max_sequence_length: int = 0
    """T5 tokens; 0 = the backbone's default (FLUX 512, SD3 256)"""
    gradient_checkpointing: bool = False
    """recompute the denoiser's activations in backward (memory for time)"""
    compile: bool = False
    """torch.compile the denoiser (nn.Module.compile: same parameter names). Off by default: on 2 CPU cores it does not
    pay for its compile time in a short run (docs/performance.md)
    """
    dtype: str = "bfloat16"
    """autocast dtype on a GPU (bfloat16, float16, float32); the CPU always runs float32"""
    device: str = "auto"
    """ "auto" = cuda if available, else cpu; or e.g. "cuda:1" """
    embed_cache: str | None = None
    """directory for prompt embeddings on disk (keyed by hash); null = none"""


@dataclass
class DataConfig:
    prompts: str | None = None
    """training prompts: a .txt file (one prompt per line) or .jsonl (one record with a "prompt" field per line; the
    record is the reward's metadata, e.g. GenEval's include/exclude); null = data.world's train split
    """
    eval_prompts: str | None = None
    """held-out prompts (same formats), sampled deterministically and scored with the training reward at every
    evaluation; null = data.world's own evaluation (ShapesWorld: the strict verifier, toy backbone only)
    """
    world: str = "shapes"
    """the prompt world (slas.plugins) that supplies the prompts and the evaluation when the two fields above are null;
    "shapes" = ShapesWorld
    """


@dataclass
class SampleConfig:
    family: str = "dance"
    """ "dance" (DanceGRPO, eta const), "flow_grpo" (g = eta*sqrt(s/(1-s))) for velocity backbones; "ddim" (DDIM with
    eta, DDPO / DanceGRPO-SD) for epsilon backbones (sd)
    """
    steps: int = 10
    """T denoising steps per rollout"""
    eta: float = 0.0
    """SDE noise scale (DanceGRPO FLUX: 0.3; Flow-GRPO noise_level: 0.7); 0 = the deterministic ODE, which the forward-
    process objectives may use (the default: nft rolls out with the ODE)
    """
    shift: float = 1.0
    """sigma time shift (DanceGRPO FLUX: 3)"""
    reduce: str = "mean"
    """log-prob reduction over dims: "mean" (DanceGRPO parity) or "sum" """
    same_noise_in_group: bool = False
    """share the initial noise within a group (never across groups; DanceGRPO shares it); must be false with eta 0"""
    batch_size: int = 0
    """rollout forward batch; 0 = the whole rollout batch at once"""
    sde_window: list = field(default_factory=list)
    """[start, end) step indices that are stochastic and trained; the other steps are deterministic ODE steps, so a
    group's spread comes only from the window's noise (Flow-GRPO-Fast / MixGRPO, arXiv 2507.21802). Empty = every
    step is an SDE step (DanceGRPO, Flow-GRPO).
    """
    noise_pool: int = 1
    """f x f block-constant step noise (low-frequency exploration, a slas extension; 1 = DanceGRPO/Flow-GRPO)"""


@dataclass
class AdvantageConfig:
    estimator: str = "slas"
    """slas.algo.advantages registry name: slas, grpo, grpo_global_std, drgrpo"""
    adv_clip: float | None = 5.0
    """clamp after shaping (DanceGRPO adv_clip_max 5); null disables"""
    params: dict = field(default_factory=dict)
    """estimator options; empty = the estimator's documented defaults (slas: gamma 1.0, batch_std_of centered,
    normalize before, recenter false), so switching `estimator` alone is always valid
    """


@dataclass
class RewardConfig:
    weights: dict = field(default_factory=lambda: {"toy_score": 1.0})
    """reward name -> weight (weighted sum)"""
    batch_size: int = 256
    """images per reward call"""
    options: dict = field(default_factory=dict)
    """reward name -> options of its factory (local model paths, device, ...), e.g. {pickscore: {model_path:
    /ckpt/PickScore_v1, processor_path: /ckpt/CLIP-ViT-H-14}}; docs/rewards.md
    """


@dataclass
class TrainConfig:
    objective: str = "nft"
    """the policy objective; every one consumes the same advantages (advantage.estimator): "ppo_sde": PPO-clip on the
    log-probs of SDE transitions (DanceGRPO, Flow-GRPO); "nft": DiffusionNFT, flow matching on the clean samples
    with implicit positive / negative policies; "awm": Advantage Weighted Matching, the flow-matching loss of each
    sample weighted by its advantage. nft and awm need no log-probs: they take their options from the `forward`
    section (docs/objectives.md)
    """
    iterations: int = 120
    """GRPO iterations (rollout + update)"""
    prompts_per_iter: int = 16
    """P distinct prompts per iteration"""
    group_size: int = 8
    """G samples per prompt; N = P * G"""
    timestep_fraction: float = 0.6
    """ppo_sde: fraction of trainable steps used per sample (random per sample)"""
    train_last_step: bool = False
    """DanceGRPO never trains the last transition (the image is x0_hat before it)"""
    updates_per_iter: int = 2
    """optimizer steps per iteration (gradient accumulation chunks)"""
    micro_batch: int = 64
    """(sample, timestep) pairs per forward/backward"""
    drop_zero_advantage: bool = False
    """leave samples whose advantage is exactly 0 (zero-spread groups) out of the loss and its mean, as Flow-GRPO does
    (scripts/train_sd3.py:796-817 at ac4c86e); false keeps them in the denominator (DanceGRPO), and under nft they
    pull the policy towards v_old (r = 1/2)"""
    lr: float = 1e-4
    """AdamW learning rate (peak, after warmup)"""
    weight_decay: float = 1e-4
    """AdamW weight decay"""
    betas: tuple = (0.9, 0.999)
    """AdamW betas"""
    max_grad_norm: float = 1.0
    """gradient-norm clip per optimizer step"""
    lr_schedule: str = "cosine"
    """ "constant" or "cosine" (to 10%), after warmup"""
    warmup_iters: int = 0
    """iterations of linear learning-rate warmup"""
    clip_range: float = 1e-4
    """PPO clip on the ratio (mean-over-D log-probs, DG train_grpo_flux.py:159-167)"""
    kl_beta: float = 0.0
    """KL-to-reference weight; 0 = no reference model (DanceGRPO)"""
    kl_form: str = "analytic"
    """ "analytic" Gaussian KL or "flow_grpo" (= |dt| x analytic)"""
    ema_decay: float = 0.9
    """per optimizer step; 0 = off. When on, evaluation and `slas sample --checkpoint RUN` use the EMA weights"""


@dataclass
class ForwardConfig:
    """Options of the forward-process objectives (train.objective nft / awm; ignored by ppo_sde). Rollouts keep only
    the clean samples. Training re-noises each sample at ``timesteps`` distinct levels of the sampler's schedule
    (sample.steps, sample.shift), each with fresh noise, x_t = (1 - t) x0 + t eps, and fits the flow-matching target
    eps - x0 there (DiffusionNFT train_nft_sd3.py:862-870; AWM time_type "discrete")."""

    timesteps: int = 2
    """K noise levels per sample (DiffusionNFT: 9 of 10 steps; AWM: 6 of 14)"""
    kl_beta: float = 0.0
    """velocity-space KL to the starting model (DiffusionNFT 1e-4, AWM 1e-3); 0 = no reference"""
    old_decay_rate: float = 0.001
    """the old policy v_old: an EMA of the policy updated after every iteration with decay min(old_decay_rate *
    optimizer steps so far, old_decay_max) (DiffusionNFT decay_type 1: 0.001, 0.5; AWM kl_ema_decay: 0.001, 0.3).
    nft samples with v_old and trains against it; awm samples with the policy and, with old_kl > 0, pulls the policy
    towards v_old
    """
    old_decay_max: float = 0.5
    """the cap of the old policy's EMA decay (see old_decay_rate)"""
    beta: float = 1.0
    """nft: v+ = beta v + (1 - beta) v_old and v- = (1 + beta) v_old - beta v (DiffusionNFT: 1; 0.1 for OCR)"""
    r_map: str = "linear"
    """nft: advantage -> optimality probability r in [0, 1]. "linear": r = clamp(A / r_scale / 2 + 1/2, 0, 1)
    (DiffusionNFT, r_scale = adv_clip_max 5); "sign": r = 1 if A > 0, 0 if A < 0, 1/2 if A = 0
    """
    r_scale: float = 5.0
    """nft: the advantage scale of the linear r_map"""
    adaptive_weight: bool = True
    """nft: divide each pair's x0-space error by its mean |error| (the paper's weight)"""
    loss_scale: float = 5.0
    """nft: DiffusionNFT multiplies the loss by adv_clip_max (5)"""
    weighting: str = "ghuber"
    """awm: per-pair error weighting "ghuber" (t ((err + 1e-10)^p - 1e-10^p) / p), "t" (t err) or "uniform" (err); the
    official GenEval config uses ghuber with p = 0.25
    """
    ghuber_power: float = 0.25
    """awm: p of the ghuber weighting"""
    adv_scale: float = 5.0
    """awm: advantages are divided by this (AWM clamps to +-5 and divides by 5)"""
    clip_range: float = 1.0
    """awm: ratio clip of the error ratio exp(err_old - err) (official 1)"""
    old_kl: float = 1.0
    """awm: weight of the velocity KL to v_old (the official ema_beta 1); 0 = none"""


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
    tensorboard: bool = False
    """also log to TensorBoard (run_dir/tb; pip install 'slas[tensorboard]')"""
    wandb: bool = False
    """also log to Weights & Biases (pip install 'slas[wandb]')"""
    wandb_mode: str = "offline"
    """W&B mode: offline (sync later with `wandb sync`) or online"""


@dataclass
class DistConfig:
    """torchrun processes (slas.recipe.parallel, docs/distributed.md). The config's batch is global: each of the W
    processes rolls out and trains N / W samples of train.prompts_per_iter x train.group_size (W must divide it);
    sample.batch_size, train.micro_batch and reward.batch_size are per process."""

    strategy: str = "ddp"
    """ "ddp": replicated weights, gradients all-reduced once per optimizer step; "fsdp": FSDP2 fully_shard of the
    denoiser (weights, gradients, optimizer state and EMA sharded; checkpoints via torch.distributed.checkpoint)"""
    timeout_min: float = 60.0
    """collective timeout: the other ranks wait while rank 0 evaluates and checkpoints"""
    gather_rollout: bool = True
    """fsdp: all-gather the weights once per rollout and keep them while sampling (one full copy per process) instead
    of before every forward of the rollout (DanceGRPO re-gathers per forward, DG train_grpo_flux.py:326-367,
    fsdp_util.py:56-117); false saves memory
    """


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    """the backbone and what of it trains"""
    data: DataConfig = field(default_factory=DataConfig)
    """training and held-out prompts"""
    sample: SampleConfig = field(default_factory=SampleConfig)
    """the rollout sampler"""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """the reward: a weighted sum of registered rewards"""
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    """the advantage estimator (SLAS, DanceGRPO's grpo, ...)"""
    train: TrainConfig = field(default_factory=TrainConfig)
    """the policy objective and the optimizer"""
    forward: ForwardConfig = field(default_factory=ForwardConfig)
    """options of the forward-process objectives (nft, awm)"""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """evaluation during training"""
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    """the reward-hacking monitor (ShapesWorld)"""
    run: RunConfig = field(default_factory=RunConfig)
    """run directory, seed, checkpoints, loggers"""
    dist: DistConfig = field(default_factory=DistConfig)
    """many processes (torchrun)"""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def sde_steps(self) -> range:
        """Step indices that are stochastic: sample.sde_window, or every step when it is empty."""
        s = self.sample
        return range(*s.sde_window) if s.sde_window else range(s.steps)

    def trainable_steps(self) -> list[int]:
        """Step indices whose transitions may be trained: the SDE window, minus the last step unless
        train.train_last_step (DanceGRPO decodes x0_hat of the last step, so its noise never reaches the reward)."""
        last = self.sample.steps - 1
        return [i for i in self.sde_steps() if i < last or self.train.train_last_step]

    def step_etas(self) -> list[float]:
        """Per-step SDE noise scale [T]: eta inside the SDE window, 0 (an ODE step) outside."""
        window = self.sde_steps()
        return [self.sample.eta if i in window else 0.0 for i in range(self.sample.steps)]

    def derived(self) -> dict:
        """Totals worth logging at start (what one iteration does)."""
        t = self.train
        n = t.prompts_per_iter * t.group_size
        if t.objective == "ppo_sde":
            k = max(1, int(len(self.trainable_steps()) * t.timestep_fraction))
        else:  # forward-process objectives: K noise levels per sample
            k = self.forward.timesteps
        pairs = n * k
        return {
            "samples_per_iter": n,
            "trained_steps_per_sample": k,
            "pairs_per_iter": pairs,
            "pairs_per_update": pairs // t.updates_per_iter,
            "micro_batches_per_update": -(-(pairs // t.updates_per_iter) // t.micro_batch),
            "total_samples": n * t.iterations,
        }


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------


def _type_ok(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is tuple:
        return isinstance(value, (list, tuple))
    return isinstance(value, origin or tp)


MAX_DEPTH, MAX_VALUES = 32, 100_000  # a config is a few sections of scalars: more is a mistake or a YAML alias bomb
INT_RANGE = 2**63  # every int field must fit an int64 (seeds, counts and sizes reach torch and numpy)


def _short(value, n: int = 80) -> str:
    """``repr(value)`` cut to ``n`` characters, so that a message about a huge value stays one short line."""
    r = repr(value)
    return r if len(r) <= n else r[: n - 3] + "..."


def _check_size(data, where: str) -> None:
    """ConfigError if ``data`` nests deeper than MAX_DEPTH or holds more than MAX_VALUES values (aliases counted
    each time they are used: asdict and deepcopy expand them). Iterative, so it cannot overflow the stack."""
    stack, count = [(data, 0)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH or count > MAX_VALUES:
            raise ConfigError(f"{where} nests deeper than {MAX_DEPTH} levels or holds more than {MAX_VALUES} values; "
                              "a config is a few sections of scalars")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names), key=str)  # YAML keys may be ints, bools or null
    if unknown:
        raise ConfigError(f"unknown key {_short(prefix + str(unknown[0]))}; {prefix.rstrip('.') or 'config'} "
                          f"accepts: {names}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, f"{prefix}{name}.")
            continue
        if isinstance(value, str) and _type_ok(1.0, tp) and not _type_ok(value, tp):
            # PyYAML (YAML 1.1) reads `3e-4` as a string: it wants `3.0e-4`. Accept both.
            try:
                value = float(value)
            except ValueError:
                pass
        if not _type_ok(value, tp):
            raise ConfigError(f"{prefix}{name} must be {getattr(tp, '__name__', tp)}, got {_short(value)}")
        if isinstance(value, int) and not isinstance(value, bool) and not -INT_RANGE <= value < INT_RANGE:
            raise ConfigError(f"{prefix}{name} is out of range: {_short(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}{name} must be a finite number, got {value!r}")
        if tp is float:
            value = float(value)
        if tp is tuple:
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _set_dotted(data: dict, key: str, value) -> None:
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"override key {_short(key)} has an empty part; it must look like section.key, e.g. train.lr")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {p!r} is not a section")
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML (optional) plus dotted overrides, validate, and return a Config."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p} is not UTF-8 text: {e.reason} at byte {e.start}") from None
        except OSError as e:
            raise ConfigError(f"cannot read config {p}: {e.strerror or e}") from None
        except (yaml.YAMLError, ValueError, RecursionError) as e:  # ValueError: an int of > 4300 digits
            raise ConfigError(f"{p} is not valid YAML: {_yaml_problem(e)}") from None
        if data is None:  # an empty file (or only comments): the defaults
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p} must hold a mapping of sections (model:, train:, ...), got {type(data).__name__}")
        _check_size(data, str(p))
    # An override assigns its key: `reward.weights.toy_x=1` adds one reward to the file's weights, while
    # `reward.weights={toy_x: 1}` replaces them (a mapping value used to be merged into the file's, so the
    # file's rewards silently stayed in the sum).
    data = copy.deepcopy(data)
    for key, value in _leaves(overrides or []):
        _set_dotted(data, key, value)
    return from_dict(data)


def _leaves(overrides: list[str]) -> list[tuple[str, object]]:
    """``section.key=value`` strings -> (dotted key, YAML-parsed value), in order, with the format checked."""
    out = []
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} must look like section.key=value, e.g. train.lr=1e-4")
        key, raw = ov.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except (yaml.YAMLError, ValueError, RecursionError) as e:
            raise ConfigError(f"override {_short(key.strip())}: value {_short(raw, 40)} is not valid YAML: "
                              f"{_yaml_problem(e)}") from None
        _check_size(value, f"override {_short(key.strip())}")
        out.append((key.strip(), value))
    return out


def _yaml_problem(e: Exception) -> str:
    """One line about a YAML (or int conversion, or nesting) error: PyYAML's own message spans several lines."""
    if isinstance(e, RecursionError):
        return f"nested too deeply (more than {MAX_DEPTH} levels are never needed)"
    problem = getattr(e, "problem", None)
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    text = problem or " ".join(str(e).split())
    if mark is not None:
        text += f" (line {mark.line + 1}, column {mark.column + 1})"
    return text if len(text) <= 200 else text[:197] + "..."


def from_dict(data: dict) -> Config:
    """Validate a nested mapping (the YAML's structure, e.g. ``Config.to_dict()`` edited) and return a Config."""
    cfg = _build(Config, data, "")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Invariants, each with the reason it must hold."""
    from slas.algo import advantages
    from slas.algo.samplers import SAMPLER_FAMILIES
    from slas.plugins import worlds
    from slas.policy import adapter_class, adapters

    s, t, a, e, m = cfg.sample, cfg.train, cfg.advantage, cfg.eval, cfg.model

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    known = adapters()
    need(m.backbone in known, f"model.backbone {m.backbone!r} is not available; known: {sorted(known)}")
    if cfg.data.prompts is None or cfg.data.eval_prompts is None:
        need(cfg.data.world in worlds(), f"data.world {cfg.data.world!r} is not registered (known: {worlds()}); it "
             "supplies the prompts and the evaluation when data.prompts or data.eval_prompts is null")
    need(s.noise_pool >= 1, f"sample.noise_pool must be >= 1, got {s.noise_pool}")  # the adapter checks the side
    check = getattr(adapter_class(m.backbone), "check", None)  # the backbone's own rules (one adapter file each)
    if check is not None:
        try:
            check(cfg)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    need(m.resolution >= 0 and m.max_sequence_length >= 0, "model.resolution and model.max_sequence_length must be "
         ">= 0 (0 = the backbone's default)")
    need(m.guidance_scale is None or m.guidance_scale >= 0, "model.guidance_scale must be >= 0 (or null = default)")
    need(m.dtype in ("bfloat16", "float16", "float32"), f"model.dtype must be bfloat16, float16 or float32, got {m.dtype!r}")
    need(bool(m.device), "model.device must be 'auto' or a torch device such as 'cuda:0'")
    need(all(isinstance(x, str) and x for x in cfg.model.trainable),
         "model.trainable must be a list of non-empty parameter-name substrings, e.g. [attn]")
    need(cfg.model.lora_rank >= 0, "model.lora_rank must be >= 0 (0 = full fine-tuning)")
    need(cfg.model.lora_alpha >= 0, "model.lora_alpha must be >= 0 (0 = equal to the rank)")
    need(not (cfg.model.lora_rank and cfg.model.trainable),
         "model.trainable selects base parameters for full fine-tuning; with model.lora_rank > 0 only the LoRA "
         "factors train (choose their modules with model.lora_targets)")
    need(bool(cfg.model.lora_targets) and all(isinstance(x, str) and x for x in cfg.model.lora_targets),
         "model.lora_targets must be a non-empty list of module-name suffixes, e.g. [to_q, to_k, to_v, to_out.0]")
    need(s.family in SAMPLER_FAMILIES, f"sample.family must be one of {SAMPLER_FAMILIES}, got {s.family!r}")
    epsilon = known[m.backbone] == "epsilon"
    need((s.family == "ddim") == epsilon,
         f"sample.family {s.family!r} does not fit backbone {m.backbone!r}, which predicts "
         f"{known[m.backbone]}: epsilon backbones sample with 'ddim', velocity ones with a flow family")
    need(not epsilon or (s.shift == 1.0 and s.noise_pool == 1 and s.eta <= 1),
         "sample.family 'ddim' takes eta in (0, 1] (1 = DDPM-like, DanceGRPO-SD) and no shift or noise_pool "
         "(leave them at 1)")
    need(not (epsilon and t.kl_form == "flow_grpo"), "train.kl_form 'flow_grpo' scales the KL by a flow step's "
         "|dt|; DDIM has none: use 'analytic'")
    need(t.objective in OBJECTIVES, f"train.objective must be one of {OBJECTIVES}, got {t.objective!r}")
    ppo = t.objective == "ppo_sde"
    need(not ppo or s.family != "ode", "sample.family 'ode' is deterministic: it has no log-prob, so PPO cannot "
         "train on it (the forward-process objectives can: train.objective nft or awm)")
    need(s.steps >= 2, "sample.steps must be >= 2: the last step is decoded, at least one more must be trainable")
    need(s.steps <= 1000, f"sample.steps must be <= 1000 (a diffusion schedule's length), got {s.steps}")
    if ppo:
        need(s.eta > 0, "sample.eta must be > 0: with no noise every rollout of a group is identical (zero advantage)")
    else:
        need(s.eta >= 0, "sample.eta must be >= 0 (0 = the deterministic ODE rollout)")
        need(s.eta > 0 or not s.same_noise_in_group, f"train.objective {t.objective}: with sample.eta 0 (ODE "
             "rollouts) and sample.same_noise_in_group every sample of a group is the same image, so every advantage "
             "is 0; set sample.same_noise_in_group false")
    need(s.shift > 0, "sample.shift must be > 0")
    need(s.reduce in ("mean", "sum"), f"sample.reduce must be 'mean' or 'sum', got {s.reduce!r}")
    need(s.batch_size >= 0, "sample.batch_size must be >= 0 (0 = whole batch)")
    if s.sde_window:
        w = s.sde_window
        need(len(w) == 2 and all(isinstance(i, int) and not isinstance(i, bool) for i in w)
             and 0 <= w[0] < w[1] <= s.steps,
             f"sample.sde_window must be [start, end) step indices with 0 <= start < end <= sample.steps "
             f"({s.steps}), got {_short(w)}")
        need(not ppo or bool(cfg.trainable_steps()),
             f"sample.sde_window {w!r} holds only the last step, which is not trained unless "
             "train.train_last_step: widen the window")
    bad = [k for k in a.params if not isinstance(k, str) or k == "adv_clip"]
    need(not bad, f"advantage.params: option names must be strings other than adv_clip (advantage.adv_clip), "
         f"got {_short(bad[0]) if bad else ''}")
    try:
        advantages.validate(a.estimator, adv_clip=a.adv_clip, **a.params)
    except (ValueError, TypeError) as err:  # TypeError: an option of the wrong type that the check compares
        raise ConfigError(f"advantage: {err}") from None
    from slas.rewards import available as rewards_available
    from slas.rewards import check_options as check_reward_options

    need(bool(cfg.reward.weights), "reward.weights must name at least one reward")
    for name, w in cfg.reward.weights.items():
        need(name in rewards_available(), f"reward {name!r} is not registered; known: {sorted(rewards_available())}")
        need(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w),
             f"reward weight of {name!r} must be a finite number, got {_short(w)}")
    need(cfg.reward.batch_size >= 1, "reward.batch_size must be >= 1")
    stray = [n for n in cfg.reward.options if n not in cfg.reward.weights]
    need(not stray, f"reward.options names {stray}, which have no entry in reward.weights {list(cfg.reward.weights)}")
    for name in cfg.reward.weights:  # unknown and missing options fail here, before any model loads
        opts = cfg.reward.options.get(name, {})
        keys = list(opts) if isinstance(opts, dict) else []
        need(all(isinstance(k, str) for k in keys), f"reward.options.{name}: option names must be strings, "
             f"got {_short(keys)}")
        try:
            check_reward_options(name, opts)
        except ValueError as err:
            raise ConfigError(f"reward.options.{name}: {err}") from None
    need(t.iterations >= 1, "train.iterations must be >= 1")
    need(t.prompts_per_iter >= 1, "train.prompts_per_iter must be >= 1")
    need(t.group_size >= 2, "train.group_size must be >= 2: advantages are relative to the other samples of a group")
    need(0 < t.timestep_fraction <= 1, "train.timestep_fraction must be in (0, 1]")
    d = cfg.derived()
    need(
        d["pairs_per_iter"] % t.updates_per_iter == 0,
        f"train.updates_per_iter ({t.updates_per_iter}) must divide the (sample, timestep) pairs per iteration "
        f"({d['pairs_per_iter']} = {d['samples_per_iter']} samples x {d['trained_steps_per_sample']} steps), "
        "so that every optimizer step averages the same number of pairs",
    )
    need(t.micro_batch >= 1, "train.micro_batch must be >= 1")
    need(t.lr > 0, "train.lr must be > 0")
    need(t.max_grad_norm > 0, "train.max_grad_norm must be > 0")
    need(len(t.betas) == 2 and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1
                                   for b in t.betas), f"train.betas must be two numbers in [0, 1), got {_short(t.betas)}")
    need(t.lr_schedule in ("constant", "cosine"), "train.lr_schedule must be 'constant' or 'cosine'")
    need(t.warmup_iters >= 0, "train.warmup_iters must be >= 0")
    need(0 < t.clip_range < 1, "train.clip_range must be in (0, 1): the ratio is clipped to [1 - c, 1 + c]")
    need(t.kl_beta >= 0, "train.kl_beta must be >= 0")
    need(ppo or t.kl_beta == 0, f"train.kl_beta is the SDE-transition KL of ppo_sde; train.objective {t.objective} "
         "takes a velocity-space KL: set forward.kl_beta instead")
    f = cfg.forward
    need(1 <= f.timesteps <= s.steps, f"forward.timesteps must be in [1, sample.steps = {s.steps}]: K distinct noise "
         "levels of the sampler's schedule per sample")
    need(f.kl_beta >= 0 and f.old_kl >= 0, "forward.kl_beta and forward.old_kl must be >= 0 (0 = off)")
    need(f.old_decay_rate >= 0 and 0 <= f.old_decay_max < 1, "forward.old_decay_rate must be >= 0 and "
         "forward.old_decay_max in [0, 1): v_old = decay v_old + (1 - decay) policy after each iteration")
    need(f.beta > 0, "forward.beta must be > 0 (DiffusionNFT's step between v_old and the implicit policies)")
    need(f.r_map in ("linear", "sign"), f"forward.r_map must be 'linear' or 'sign', got {f.r_map!r}")
    need(f.r_scale > 0 and f.adv_scale > 0, "forward.r_scale and forward.adv_scale must be > 0 (advantage scales)")
    need(f.loss_scale > 0, "forward.loss_scale must be > 0")
    need(f.weighting in ("uniform", "t", "ghuber"), f"forward.weighting must be uniform, t or ghuber, got {f.weighting!r}")
    need(0 < f.ghuber_power <= 1, "forward.ghuber_power must be in (0, 1]")
    need(f.clip_range > 0, "forward.clip_range must be > 0 (awm's ratio clip)")
    need(t.kl_form in ("analytic", "flow_grpo"), "train.kl_form must be 'analytic' or 'flow_grpo'")
    need(0 <= t.ema_decay < 1, "train.ema_decay must be in [0, 1) (0 = off)")
    need(e.every >= 0, "eval.every must be >= 0")
    need(e.split in ("train", "test", "eval"), "eval.split must be 'train', 'test' or 'eval'")
    need(e.n_per_prompt >= 1 and e.steps >= 1, "eval.n_per_prompt and eval.steps must be >= 1")
    need(e.shift == "auto" or (not isinstance(e.shift, str) and e.shift > 0 and (not epsilon or e.shift == 1)),
         f"eval.shift must be 'auto' or a flow time shift > 0 (DDIM takes none), got {_short(e.shift)}")
    need(e.max_prompts >= 0, "eval.max_prompts must be >= 0 (0 = whole split)")
    need(e.images_per_tag >= 0, "eval.images_per_tag must be >= 0 (0 = use eval.n_per_prompt)")
    need(e.in_domain_per_tag >= 0, "eval.in_domain_per_tag must be >= 0 (0 = no in-domain evaluation)")
    need(all(isinstance(p, str) and p.strip() for p in e.grid_prompts), "eval.grid_prompts must be a list of prompt "
         f"strings, got {_short(e.grid_prompts)}")
    mon = cfg.monitor
    need(mon.prompts >= 1, "monitor.prompts must be >= 1")
    need(mon.group >= 2, "monitor.group must be >= 2: diversity is measured between images of the same prompt")
    need(mon.patience >= 1, "monitor.patience must be >= 1 (evaluations in a row)")
    need(not mon.early_stop or (mon.enabled and cfg.data.eval_prompts is None),
         "monitor.early_stop needs monitor.enabled and the ShapesWorld evaluation (data.eval_prompts null): it "
         "stops on the verifier's gold score")
    need(cfg.run.checkpoint_every >= 1, "run.checkpoint_every must be >= 1")
    need(cfg.run.keep_checkpoints >= 1, "run.keep_checkpoints must be >= 1 (resume needs one)")
    need(cfg.run.wandb_mode in ("offline", "online", "disabled"), "run.wandb_mode must be offline/online/disabled")
    need(cfg.dist.strategy in ("ddp", "fsdp"), f"dist.strategy must be 'ddp' or 'fsdp', got {cfg.dist.strategy!r}")
    need(cfg.dist.timeout_min > 0, "dist.timeout_min must be > 0")
    need(not (cfg.dist.strategy == "fsdp" and m.train_text_encoder), "dist.strategy fsdp shards the denoiser only: "
         "train the text encoder with ddp (model.train_text_encoder)")


# ----------------------------------------------------------------------------
# Field documentation: the string literal under each field (``slas config show``)
# ----------------------------------------------------------------------------


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its documentation: the string literal written under the field in the class body."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:] + [None], strict=True):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(re.sub(r"-\n\s*", "-", nxt.value.value).split())
    return docs


def describe(cfg: Config) -> str:
    """The resolved config as YAML, each field preceded by its documentation as a comment."""
    import textwrap

    lines = []
    for sec in dataclasses.fields(cfg):
        section = getattr(cfg, sec.name)
        lines.append(f"{sec.name}:  # {field_docs(Config).get(sec.name, '')}")
        docs = field_docs(type(section))
        for f in dataclasses.fields(section):
            for w in textwrap.wrap(docs.get(f.name, ""), 100, break_on_hyphens=False):
                lines.append(f"  # {w}")
            value = yaml.safe_dump({f.name: _plain(getattr(section, f.name))}, default_flow_style=True, width=10**6)
            lines.append("  " + value.strip()[1:-1])
    return "\n".join(lines) + "\n"


def _plain(v):
    return list(v) if isinstance(v, tuple) else v
