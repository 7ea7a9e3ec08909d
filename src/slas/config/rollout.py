"""The sections of an iteration's first half, SAMPLE -> SCORE -> ADVANTAGE: ``data`` (the prompts), ``sample`` (the
rollout sampler), ``reward`` and ``advantage``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from slas.config.errors import ConfigError, need, short


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

    def check(self) -> None:
        """This section's own rules."""
        from slas.plugins import worlds

        if self.prompts is None or self.eval_prompts is None:
            need(self.world in worlds(), f"data.world {self.world!r} is not registered (known: {worlds()}); it "
                 "supplies the prompts and the evaluation when data.prompts or data.eval_prompts is null")


@dataclass
class SampleConfig:
    family: str = "dance"
    """ "dance" (DanceGRPO, eta const), "flow_grpo" (g = eta*sqrt(s/(1-s))), "ode" (Euler, deterministic) or "dpm2"
    (DiffusionNFT's deterministic DPM-Solver++(2M) rollouts; sample.eta 0, the forward-process objectives only) for
    velocity backbones; "ddim" (DDIM with eta, DDPO / DanceGRPO-SD) for epsilon backbones (sd)
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

    def check(self) -> None:
        """This section's own rules; those that depend on the backbone or the objective (which families, which eta)
        run in ``validate``."""
        from slas.algo.samplers import SAMPLER_FAMILIES

        # before the backbone's check in ``validate``, which divides the image side by it
        need(self.noise_pool >= 1, f"sample.noise_pool must be >= 1, got {self.noise_pool}")
        need(self.family in SAMPLER_FAMILIES, f"sample.family must be one of {SAMPLER_FAMILIES}, got {self.family!r}")
        need(self.steps >= 2, "sample.steps must be >= 2: the last step is decoded, at least one more must be trainable")
        need(self.steps <= 1000, f"sample.steps must be <= 1000 (a diffusion schedule's length), got {self.steps}")
        need(self.shift > 0, "sample.shift must be > 0")
        need(self.reduce in ("mean", "sum"), f"sample.reduce must be 'mean' or 'sum', got {self.reduce!r}")
        need(self.batch_size >= 0, "sample.batch_size must be >= 0 (0 = whole batch)")
        w = self.sde_window
        need(not w or (len(w) == 2 and all(isinstance(i, int) and not isinstance(i, bool) for i in w)
                       and 0 <= w[0] < w[1] <= self.steps),
             f"sample.sde_window must be [start, end) step indices with 0 <= start < end <= sample.steps "
             f"({self.steps}), got {short(w)}")


@dataclass
class AdvantageConfig:
    estimator: str = "slas"
    """slas.algo.advantages registry name: slas, grpo, grpo_global_std, drgrpo"""
    adv_clip: float | None = 5.0
    """clamp after shaping (DanceGRPO adv_clip_max 5); null disables"""
    params: dict = field(default_factory=dict)
    """estimator options; empty = the estimator's documented defaults (slas: gamma 1.0, batch_std_of centered,
    normalize before, recenter false, eps 1e-8, sigma_decay 0), so switching `estimator` alone is always valid. slas's
    options that bound its push as groups saturate: batch_std_of informative or half_range, normalize
    after_informative, sigma_decay > 0 (a running sigma, kept in the checkpoints); docstring of
    slas.algo.advantages.slas
    """

    def check(self) -> None:
        """This section's own rules; the estimator checks its options (slas.algo.advantages)."""
        from slas.algo import advantages

        bad = [k for k in self.params if not isinstance(k, str) or k == "adv_clip"]
        need(not bad, f"advantage.params: option names must be strings other than adv_clip (advantage.adv_clip), "
             f"got {short(bad[0]) if bad else ''}")
        try:
            advantages.validate(self.estimator, adv_clip=self.adv_clip, **self.params)
        except (ValueError, TypeError) as err:  # TypeError: an option of the wrong type that the check compares
            raise ConfigError(f"advantage: {err}") from None


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

    def check(self) -> None:
        """This section's own rules; each reward's factory checks its options, before any model loads."""
        from slas.rewards import available, check_options

        need(bool(self.weights), "reward.weights must name at least one reward")
        for name, w in self.weights.items():
            need(name in available(), f"reward {name!r} is not registered; known: {sorted(available())}")
            need(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w),
                 f"reward weight of {name!r} must be a finite number, got {short(w)}")
        need(self.batch_size >= 1, "reward.batch_size must be >= 1")
        stray = [n for n in self.options if n not in self.weights]
        need(not stray, f"reward.options names {stray}, which have no entry in reward.weights {list(self.weights)}")
        for name in self.weights:
            opts = self.options.get(name, {})
            keys = list(opts) if isinstance(opts, dict) else []
            need(all(isinstance(k, str) for k in keys), f"reward.options.{name}: option names must be strings, "
                 f"got {short(keys)}")
            try:
                check_options(name, opts)
            except ValueError as err:
                raise ConfigError(f"reward.options.{name}: {err}") from None
