"""The whole config (one field per section) and ``validate``: each section's own rules, then the rules that span
sections."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from slas.config.errors import ConfigError, need
from slas.config.model import ModelConfig
from slas.config.rollout import AdvantageConfig, DataConfig, RewardConfig, SampleConfig
from slas.config.runtime import DistConfig, EvalConfig, MonitorConfig, RunConfig
from slas.config.totals import derived
from slas.config.training import ForwardConfig, TrainConfig


@dataclass
class Config:
    """A run's whole configuration, one field per section; ``load_config`` builds and validates it."""

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
        """The nested mapping of the YAML (``load_config`` / ``from_dict`` read it back)."""
        return dataclasses.asdict(self)


def validate(cfg: Config) -> None:
    """Invariants, each with the reason it must hold: every section's ``check``, then the rules between sections."""
    from slas.algo.samplers.schedule import stratified_bounds, trainable_steps  # torch: imported on use
    from slas.policy import adapter_class, adapters

    for sec in dataclasses.fields(cfg):
        getattr(cfg, sec.name).check()
    m, s, t = cfg.model, cfg.sample, cfg.train
    check = getattr(adapter_class(m.backbone), "check", None)  # the backbone's own rules (one adapter file each)
    if check is not None:
        try:
            check(cfg)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    prediction = adapters()[m.backbone]
    epsilon = prediction == "epsilon"
    need((s.family == "ddim") == epsilon,
         f"sample.family {s.family!r} does not fit backbone {m.backbone!r}, which predicts "
         f"{prediction}: epsilon backbones sample with 'ddim', velocity ones with a flow family")
    need(not epsilon or (s.shift == 1.0 and s.noise_pool == 1 and s.eta <= 1),
         "sample.family 'ddim' takes eta in (0, 1] (1 = DDPM-like, DanceGRPO-SD) and no shift or noise_pool "
         "(leave them at 1)")
    need(not epsilon or cfg.eval.shift in ("auto", 1), f"eval.shift: backbone {m.backbone!r} samples with DDIM, "
         f"which takes no time shift (leave it 'auto'), got {cfg.eval.shift!r}")
    need(not (epsilon and t.kl_form == "flow_grpo"), "train.kl_form 'flow_grpo' scales the KL by a flow step's "
         "|dt|; DDIM has none: use 'analytic'")
    ppo = t.objective == "ppo_sde"
    need(not ppo or s.family not in ("ode", "dpm2"), f"sample.family {s.family!r} is deterministic: it has no "
         "log-prob, so PPO cannot train on it (the forward-process objectives can: train.objective nft or awm)")
    need(s.family != "dpm2" or s.eta == 0, f"sample.family 'dpm2' (DiffusionNFT's deterministic multistep solver) "
         f"injects no noise: set sample.eta 0 (got {s.eta}), or use an SDE family (dance, flow_grpo) for eta > 0")
    if ppo:
        need(s.eta > 0, "sample.eta must be > 0: with no noise every rollout of a group is identical (zero advantage)")
    else:
        need(s.eta >= 0, "sample.eta must be >= 0 (0 = the deterministic ODE rollout)")
        need(s.eta > 0 or not s.same_noise_in_group, f"train.objective {t.objective}: with sample.eta 0 (ODE "
             "rollouts) and sample.same_noise_in_group every sample of a group is the same image, so every advantage "
             "is 0; set sample.same_noise_in_group false")
    need(not (ppo and s.sde_window) or bool(trainable_steps(s.steps, s.sde_window, train_last_step=t.train_last_step)),
         f"sample.sde_window {s.sde_window!r} holds only the last step, which is not trained unless "
         "train.train_last_step: widen the window")
    d = derived(cfg)
    need(
        d["pairs_per_iter"] % t.updates_per_iter == 0,
        f"train.updates_per_iter ({t.updates_per_iter}) must divide the (sample, timestep) pairs per iteration "
        f"({d['pairs_per_iter']} = {d['samples_per_iter']} samples x {d['trained_steps_per_sample']} steps), "
        "so that every optimizer step averages the same number of pairs",
    )
    f = cfg.forward
    need(1 <= f.timesteps <= s.steps, f"forward.timesteps must be in [1, sample.steps = {s.steps}]: K "
         "distinct noise levels of the sampler's schedule per sample")
    if f.time_sampling == "stratified":
        try:
            stratified_bounds(s.steps, f.timesteps, f.time_fraction)
        except ValueError as err:
            raise ConfigError(f"forward.time_sampling stratified (forward.timesteps, sample.steps, "
                              f"forward.time_fraction): {err}") from None
    need(not cfg.monitor.early_stop or (cfg.monitor.enabled and cfg.data.eval_prompts is None),
         "monitor.early_stop needs monitor.enabled and the ShapesWorld evaluation (data.eval_prompts null): it "
         "stops on the verifier's gold score")
    need(not (cfg.dist.strategy == "fsdp" and m.train_text_encoder), "dist.strategy fsdp shards the denoiser only: "
         "train the text encoder with ddp (model.train_text_encoder)")
