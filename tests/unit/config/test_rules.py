"""The config's rules (each section's check(), and validate's rules between sections): a bad value is one readable
ConfigError."""

from __future__ import annotations

import pytest

from slas.config import ConfigError, derived, load_config


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["train.lrr=1"], "unknown key 'train.lrr'"),
        (["bogus.x=1"], "unknown key 'bogus'"),
        (["train.group_size=1"], "relative to the other samples"),
        (["train.lr=fast"], "train.lr must be float"),
        (["train.updates_per_iter=7"], "must divide"),
        (["advantage.estimator=ppo"], "registered: drgrpo, grpo, grpo_global_std, slas"),
        (["advantage.params.gamma=-1"], "gamma"),
        (["train.objective=ppo_sde", "sample.family=ode"], "deterministic"),
        (["train.objective=ppo_sde", "sample.eta=0"], "identical"),
        (["reward.weights={nope: 1}"], "not registered"),
        (["train.lr"], "section.key=value"),
    ],
)
def test_config_errors_are_readable(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, overrides)


@pytest.mark.parametrize("window, msg", [("[3,2]", "start < end"), ("[0,9]", "start < end"),
                                         ("[4,5]", "only the last step"), ("[1]", "start, end")])
def test_bad_sde_window_is_a_readable_error(window, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(None, ["train.objective=ppo_sde", "sample.eta=0.5", "sample.steps=5", f"sample.sde_window={window}"])


@pytest.mark.parametrize("override, msg", [("model.lora_rank=-1", "lora_rank must be >= 0"),
                                           ("model.lora_targets=[]", "lora_targets must be a non-empty"),
                                           ("model.trainable=[attn]", "only the LoRA factors train")])
def test_lora_config_errors(override, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(None, ["model.lora_rank=4", override] if "lora_rank=-1" not in override else [override])


@pytest.mark.parametrize("overrides, needle", [
    (["train.objective=dpo"], "train.objective must be one of"),
    (["train.objective=nft", "sample.eta=0", "sample.same_noise_in_group=true"], "same_noise_in_group false"),
    (["train.objective=nft", "sample.same_noise_in_group=false", "train.kl_beta=0.1"], "forward.kl_beta"),
    (["train.objective=awm", "sample.same_noise_in_group=false", "forward.timesteps=11"], "forward.timesteps"),
    (["train.objective=nft", "forward.r_map=softmax"], "forward.r_map"),
    (["train.objective=awm", "forward.weighting=l1"], "forward.weighting"),
    (["train.objective=ppo_sde", "sample.eta=0"], "sample.eta must be > 0"),
    (["train.objective=ppo_sde", "sample.family=ode"], "forward-process objectives can"),
])
def test_objective_config_errors(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, overrides)


def test_forward_objectives_may_roll_out_with_the_ode_family():
    cfg = load_config(None, ["train.objective=nft", "sample.family=ode", "sample.same_noise_in_group=false"])
    assert derived(cfg)["trained_steps_per_sample"] == cfg.forward.timesteps


def test_monitor_config_is_validated():
    assert load_config(None).monitor.enabled and not load_config(None).monitor.early_stop
    with pytest.raises(ConfigError, match="monitor.group must be >= 2"):
        load_config(None, ["monitor.group=1"])
    with pytest.raises(ConfigError, match="monitor.early_stop needs"):
        load_config(None, ["monitor.early_stop=true", "monitor.enabled=false"])
    with pytest.raises(ConfigError, match="unknown key 'monitor.every'"):
        load_config(None, ["monitor.every=3"])


@pytest.mark.parametrize("overrides, needle", [
    (["model.backbone=flux"], "model.path must name"),
    (["model.backbone=sd", "model.path=x", "data.prompts=a", "data.eval_prompts=b"], "does not fit backbone 'sd'"),
    (["model.backbone=flux", "model.path=x", "data.prompts=a"], "data.eval_prompts must name"),
    (["model.backbone=sd", "model.path=x", "data.prompts=a", "data.eval_prompts=b", "sample.family=ddim",
      "sample.shift=3"], "no shift or noise_pool"),
    (["model.backbone=flux", "model.path=x", "data.prompts=a", "data.eval_prompts=b", "model.cfg_detach_uncond=true"],
     "no CFG branch"),
    (["model.backbone=nope"], "known: \\['flux', 'sd', 'sd3', 'toy'\\]"),
])
def test_real_backbone_config_errors(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, overrides)


@pytest.mark.parametrize("value", ["dynamic", "-1", "0", "true"])
def test_eval_shift_is_validated(value):
    with pytest.raises(ConfigError, match="eval.shift must be 'auto' or a flow time shift > 0|eval.shift must be"):
        load_config(None, [f"eval.shift={value}"])
    with pytest.raises(ConfigError, match="samples with DDIM, which takes no time shift"):
        load_config(None, ["model.backbone=sd", "model.path=x", "data.prompts=a", "data.eval_prompts=b",
                           "sample.family=ddim", "sample.eta=1", "eval.shift=3"])
    assert load_config(None, ["eval.shift=2"]).eval.shift == 2
