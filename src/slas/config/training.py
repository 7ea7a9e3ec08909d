"""The sections of an iteration's second half, TRAIN: ``train`` (the policy objective and the optimizer) and
``forward`` (the options of the forward-process objectives)."""

from __future__ import annotations

from dataclasses import dataclass

from slas.config.errors import need, short
from slas.plugins import objectives


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
    """PPO clip on the ratio (mean-over-D log-probs, DanceGRPO train_grpo_flux.py:159-167)"""
    kl_beta: float = 0.0
    """KL-to-reference weight; 0 = no reference model (DanceGRPO)"""
    kl_form: str = "analytic"
    """ "analytic" Gaussian KL or "flow_grpo" (= |dt| x analytic)"""
    ema_decay: float = 0.9
    """per optimizer step; 0 = off. When on, evaluation and `slas sample --checkpoint RUN` use the EMA weights"""

    def check(self) -> None:
        """This section's own rules; the pairs per iteration (which also read ``sample`` and ``forward``) are checked
        in ``validate``."""
        known = objectives()  # the registry (slas.plugins.register_objective): ppo_sde, nft, awm and plugins'
        need(self.objective in known, f"train.objective must be one of {known}, got {self.objective!r}")
        need(self.iterations >= 1, "train.iterations must be >= 1")
        need(self.prompts_per_iter >= 1, "train.prompts_per_iter must be >= 1")
        need(self.group_size >= 2,
             "train.group_size must be >= 2: advantages are relative to the other samples of a group")
        need(0 < self.timestep_fraction <= 1, "train.timestep_fraction must be in (0, 1]")
        need(self.updates_per_iter >= 1, "train.updates_per_iter must be >= 1 (optimizer steps per iteration)")
        need(self.micro_batch >= 1, "train.micro_batch must be >= 1")
        need(self.lr > 0, "train.lr must be > 0")
        need(self.weight_decay >= 0, "train.weight_decay must be >= 0 (AdamW rejects a negative decay)")
        need(self.max_grad_norm > 0, "train.max_grad_norm must be > 0")
        need(len(self.betas) == 2 and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1
                                          for b in self.betas),
             f"train.betas must be two numbers in [0, 1), got {short(self.betas)}")
        need(self.lr_schedule in ("constant", "cosine"), "train.lr_schedule must be 'constant' or 'cosine'")
        need(self.warmup_iters >= 0, "train.warmup_iters must be >= 0")
        need(0 < self.clip_range < 1, "train.clip_range must be in (0, 1): the ratio is clipped to [1 - c, 1 + c]")
        need(self.kl_beta >= 0, "train.kl_beta must be >= 0")
        need(self.objective == "ppo_sde" or self.kl_beta == 0, f"train.kl_beta is the SDE-transition KL of ppo_sde; "
             f"train.objective {self.objective} takes a velocity-space KL: set forward.kl_beta instead")
        need(self.kl_form in ("analytic", "flow_grpo"), "train.kl_form must be 'analytic' or 'flow_grpo'")
        need(0 <= self.ema_decay < 1, "train.ema_decay must be in [0, 1) (0 = off)")


@dataclass
class ForwardConfig:
    """Options of the forward-process objectives (train.objective nft / awm; ignored by ppo_sde). Rollouts keep only
    the clean samples. Training re-noises each sample at ``timesteps`` distinct levels of the sampler's schedule
    (sample.steps, sample.shift), each with fresh noise, x_t = (1 - t) x0 + t eps, and fits the flow-matching target
    eps - x0 there (DiffusionNFT train_nft_sd3.py:853-870); ``time_sampling`` says which levels."""

    timesteps: int = 2
    """K noise levels per sample (DiffusionNFT: 9 of 10 steps; AWM: 6 of 14)"""
    time_sampling: str = "uniform"
    """which K levels each sample trains. "uniform": K distinct levels drawn uniformly from all sample.steps levels
    (DiffusionNFT: a per-sample permutation, train_nft_sd3.py:809-816); "stratified": AWM's time_type
    discrete_wo_init (train_sd3_awm.py:1197-1205): the step indices [1, int(sample.steps x time_fraction)) cut into K
    equal strata, one index drawn in each, so sigma = 1 and the lowest levels are never trained (AWM's 14 steps, 0.9,
    K 6: {1}, {2, 3}, ..., {10, 11}). AWM shares one draw across a training batch of samples; slas draws per sample
    """
    time_fraction: float = 0.9
    """time_sampling stratified: the strata cover the step indices [1, int(sample.steps x time_fraction)) (AWM's
    timestep_fraction 0.9)"""
    kl_beta: float = 0.0
    """velocity-space KL to the starting model (DiffusionNFT 1e-4, AWM 1e-3); 0 = no reference"""
    old_decay_rate: float = 0.001
    """the old policy v_old: an EMA of the policy updated after every iteration with decay min(old_decay_rate *
    optimizer steps so far, old_decay_max), after old_decay_flat steps (DiffusionNFT decay_type 1: 0.001, 0.5; AWM
    kl_ema_decay: 0.001, 0.3).
    nft samples with v_old and trains against it; awm samples with the policy and, with old_kl > 0, pulls the policy
    towards v_old
    """
    old_decay_max: float = 0.5
    """the cap of the old policy's EMA decay (see old_decay_rate)"""
    old_decay_flat: int = 0
    """optimizer steps before the old policy's EMA starts: until then the decay is 0 (v_old follows the policy), then
    min(old_decay_rate x (steps - old_decay_flat), old_decay_max). DiffusionNFT's return_decay type 2, the flat start
    of its OCR config, is old_decay_flat 75, old_decay_rate 0.0075, old_decay_max 0.999; 0 = its type 1's shape
    """
    beta: float = 1.0
    """nft: v+ = beta v + (1 - beta) v_old and v- = (1 + beta) v_old - beta v (DiffusionNFT: 1; 0.1 for OCR)"""
    r_map: str = "linear"
    """nft: advantage -> optimality probability r in [0, 1]. "linear": r = clamp(A / r_scale / 2 + 1/2, 0, 1)
    (DiffusionNFT, r_scale = adv_clip_max 5); "binary": r = sign(A) / r_scale / 2 + 1/2, in {0.4, 0.5, 0.6} at
    r_scale 5 (DiffusionNFT adv_mode binary); "hard_sign": r = 1 if A > 0, 0 if A < 0, 1/2 if A = 0 (slas's)
    """
    r_scale: float = 5.0
    """nft: the advantage scale of the linear and binary r_maps (DiffusionNFT's adv_clip_max 5)"""
    adaptive_weight: bool = True
    """nft: divide each pair's x0-space error by its mean |error| (the paper's weight)"""
    loss_scale: float = 5.0
    """nft: DiffusionNFT multiplies the loss by adv_clip_max (5)"""
    weighting: str = "ghuber"
    """awm: per-pair error weighting "ghuber" (t ((err + 1e-10)^p - 1e-10^p) / p), "huber" (t (sqrt(err + 1e-10) -
    1e-5)), "t2" (t^2 err; AWM's t**2), "t" (t err) or "uniform" (err); the official GenEval config uses ghuber with
    p = 0.25
    """
    ghuber_power: float = 0.25
    """awm: p of the ghuber weighting"""
    adv_scale: float = 5.0
    """awm: advantages are divided by this (AWM clamps to +-5 and divides by 5)"""
    clip_range: float = 1.0
    """awm: ratio clip of the error ratio exp(err_old - err) (official 1)"""
    old_kl: float = 1.0
    """awm: weight of the velocity KL to v_old (the official ema_beta 1); 0 = none"""

    def check(self) -> None:
        """This section's own rules; ``timesteps`` is bounded by sample.steps in ``validate``."""
        from slas.algo.losses import AWM_WEIGHTINGS, R_MAP_SIGN_ERROR, R_MAPS  # torch: imported on use

        need(self.kl_beta >= 0 and self.old_kl >= 0, "forward.kl_beta and forward.old_kl must be >= 0 (0 = off)")
        need(self.old_decay_rate >= 0 and 0 <= self.old_decay_max < 1, "forward.old_decay_rate must be >= 0 and "
             "forward.old_decay_max in [0, 1): v_old = decay v_old + (1 - decay) policy after each iteration")
        need(isinstance(self.old_decay_flat, int) and not isinstance(self.old_decay_flat, bool)
             and self.old_decay_flat >= 0, "forward.old_decay_flat must be an integer >= 0 (optimizer steps before the "
             f"old policy's EMA starts), got {self.old_decay_flat!r}")
        need(self.time_sampling in ("uniform", "stratified"), "forward.time_sampling must be 'uniform' (K distinct "
             f"levels of all sample.steps) or 'stratified' (AWM's, one level per stratum), got {self.time_sampling!r}")
        need(0 < self.time_fraction <= 1, "forward.time_fraction must be in (0, 1] (the stratified levels cover step "
             f"indices [1, int(sample.steps x time_fraction))), got {self.time_fraction!r}")
        need(self.beta > 0, "forward.beta must be > 0 (DiffusionNFT's step between v_old and the implicit policies)")
        need(self.r_map != "sign", f"forward.{R_MAP_SIGN_ERROR}")
        need(self.r_map in R_MAPS, f"forward.r_map must be one of {R_MAPS}, got {self.r_map!r}")
        need(self.r_scale > 0 and self.adv_scale > 0,
             "forward.r_scale and forward.adv_scale must be > 0 (advantage scales)")
        need(self.loss_scale > 0, "forward.loss_scale must be > 0")
        need(self.weighting in AWM_WEIGHTINGS, f"forward.weighting must be one of {AWM_WEIGHTINGS}, got "
             f"{self.weighting!r}")
        need(0 < self.ghuber_power <= 1, "forward.ghuber_power must be in (0, 1]")
        need(self.clip_range > 0, "forward.clip_range must be > 0 (awm's ratio clip)")
