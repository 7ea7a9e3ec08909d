"""Config validation, the GRPO recipe end to end, and exact resume."""

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from _toyruns import tiny_overrides
from slas import rewards
from slas.algo.samplers import FlowSampler, flow_sigmas, flow_step_with_logprob, step_etas, trainable_steps
from slas.algo.samplers.rollout import rollout
from slas.config import Config, ConfigError, derived, load_config
from slas.policy.base import index_cond
from slas.recipe.train import train
from slas.toyworld.backbone import ToyBackbone

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
# configs of real backbones (FLUX, SD3, SD1.x) train on tiny diffusers models in tests/roundtrip/test_backbones.py
TOY_CONFIGS = [p for p in CONFIGS if load_config(p).model.backbone == "toy"]


def test_shipped_configs_exist_and_validate():
    names = {p.name for p in CONFIGS}
    assert {"toy_slas.yaml", "toy_dancegrpo.yaml", "toy_drgrpo.yaml"} <= names
    for p in CONFIGS:
        load_config(p)


def test_default_config_is_toy_slas_yaml():
    shipped = load_config(ROOT / "configs" / "toy_slas.yaml").to_dict()
    default = Config().to_dict()
    assert shipped == default


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


def test_override_with_a_mapping_replaces_and_a_dotted_key_adds(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("reward:\n  weights: {toy_biased: 1.0}\n  options: {toy_biased: {lam: 2.0}}\n")
    # a mapping value replaces the file's (it used to merge: toy_biased silently stayed in the reward sum)
    assert load_config(f, ["reward.weights={toy_geneval: 1.0}", "reward.options={}"]).reward.weights == {
        "toy_geneval": 1.0}
    # a dotted key assigns one entry and keeps the rest
    cfg = load_config(f, ["reward.weights.toy_score=0.5", "reward.options.toy_biased.lam=1.0"])
    assert cfg.reward.weights == {"toy_biased": 1.0, "toy_score": 0.5}
    assert cfg.reward.options == {"toy_biased": {"lam": 1.0}}
    # later overrides win, in order
    assert load_config(f, ["train.lr=1e-3", "train.lr=2e-3"]).train.lr == 2e-3


def test_scientific_notation_is_a_float(tmp_path):
    assert load_config(None, ["train.lr=3e-4"]).train.lr == 3e-4  # PyYAML alone reads a str
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 2e-5\n  clip_range: 1e-3\n")
    cfg = load_config(f)
    assert cfg.train.lr == 2e-5 and cfg.train.clip_range == 1e-3


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_derived_totals():
    d = derived(load_config(None, ["train.objective=ppo_sde", "sample.eta=0.5", "train.prompts_per_iter=4",
                                   "train.group_size=6", "sample.steps=11", "sample.sde_window=[]",
                                   "train.timestep_fraction=0.6", "train.updates_per_iter=3"]))
    assert d["samples_per_iter"] == 24 and d["trained_steps_per_sample"] == 6  # int(10 * 0.6)
    assert d["pairs_per_iter"] == 144 and d["pairs_per_update"] == 48


@pytest.mark.parametrize("family", ["dance", "flow_grpo"])
def test_recipe_rescoring_gives_ratio_one_at_unchanged_weights(tiny_ckpt, family):
    """The recipe's rollout + re-scoring path at the recipe's batch shapes."""
    bb = ToyBackbone.from_checkpoint(tiny_ckpt)
    prompts = ["a photo of a red circle", "a photo of two squares"]
    cond = bb.encode_prompts(prompts)
    pid = torch.arange(2).repeat_interleave(4)  # N = 8
    g = torch.Generator().manual_seed(0)
    sig = flow_sigmas(4)
    with torch.no_grad():
        ro = rollout(lambda x, s, idx: bb.predict(x, s, index_cond(cond, pid[idx])), torch.randn(8, 3, 32, 32),
                     FlowSampler(sig, family), eta=0.7, generator=g, prompt_ids=pid, group_ids=pid)
        lat, lp = ro.latents, ro.log_probs  # [N, T+1, ...], [N, T]
        assert lat.shape == (8, 5, 3, 32, 32) and lp.shape == (8, 4) and torch.equal(ro.sigmas, sig)
        for t in range(4):  # same shape as the rollout: all N samples at one step
            v = bb.predict(lat[:, t], sig[t].expand(8), index_cond(cond, pid))
            out = flow_step_with_logprob(family, v, lat[:, t], sig[t].expand(8), sig[t + 1].expand(8), eta=0.7,
                                         prev_sample=lat[:, t + 1])
            assert (out.log_prob - lp[:, t]).exp().sub(1).abs().max() < 1e-6


def _rows(run):
    return [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("config", TOY_CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_trains_two_iterations(config, tiny_ckpt, tmp_path):
    # 4 steps keep the shipped SDE window [2, 3] valid (it must not hold only the last step)
    # the config's own objective and sampling settings, at the tiny run's size
    keep = {k: None for k in ("train.objective", "sample.eta", "sample.same_noise_in_group")}
    cfg = load_config(config, tiny_overrides(tiny_ckpt, tmp_path / "run", **{"sample.steps": 4, "sample.sde_window": None,
                                                                          **keep}))
    before = load_file(str(tiny_ckpt / "model.safetensors"))
    run = train(cfg, progress=False, log=lambda s: None)
    rows = _rows(run)
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert all(math.isfinite(v) for v in r.values()), r
    per_objective = {"ppo_sde": ["train/ratio_mean", "train/clipfrac", "train/approx_kl"],
                     "nft": ["train/fm_err", "train/old_dev", "train/r_mean"],
                     "awm": ["train/fm_err", "train/ratio_mean", "train/clipfrac"]}
    required = ["train/reward_mean", "train/reward_std", "train/adv_abs_mean", "train/policy_loss", "train/grad_norm",
                "time/rollout_s", "time/reward_s", "time/train_s", "eval/gold_accuracy", "eval/geneval_accuracy",
                "eval/exact_count", "eval/gold_score", "eval/debris", "eval/id/gold_accuracy",
                *per_objective[cfg.train.objective]]
    assert all(k in rows[-1] for k in required)
    after = load_file(str(run / "checkpoints" / "iter_000002" / "model.safetensors"))
    changed = [k for k in before if k.startswith("unet.") and not torch.equal(before[k].float(), after[k].float())]
    assert changed, "no UNet parameter changed"
    frozen = [k for k in before if k.startswith("text_encoder.") and "weight" in k]
    assert all(torch.equal(before[k].float(), after[k].float()) for k in frozen)  # frozen text encoder
    assert (run / "config.yaml").is_file() and (run / "curves.png").is_file()
    assert len(list((run / "samples").glob("*.png"))) == 3
    assert (run / "before_after.png").is_file()  # iteration 0's grid beside the last one
    assert dataclasses.asdict(load_config(run / "config.yaml")) == dataclasses.asdict(cfg)


def test_existing_run_dir_is_not_overwritten(tiny_ckpt, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_ckpt, tmp_path / "run", **{"train.iterations": 1}))
    train(cfg, progress=False, log=lambda s: None)
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, progress=False, log=lambda s: None)


def _strip_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_resume_after_deleting_checkpoints_is_exact(tiny_ckpt, tmp_path):
    ov = tiny_overrides(tiny_ckpt, tmp_path / "a", **{"train.iterations": 4, "eval.every": 2})
    full = train(load_config(None, ov), progress=False, log=lambda s: None)
    b = tmp_path / "b"
    shutil.copytree(full, b)
    for name in ("iter_000003", "iter_000004"):  # as if killed after iteration 2's checkpoint
        shutil.rmtree(b / "checkpoints" / name)
    cfg_b = load_config(b / "config.yaml", [f"run.out_dir={b}"])
    train(cfg_b, resume=True, progress=False, log=lambda s: None)
    assert _strip_time(_rows(b)) == _strip_time(_rows(full))


def test_resume_after_sigkill_is_exact(tiny_ckpt, tmp_path):
    ov = tiny_overrides(tiny_ckpt, tmp_path / "a", **{"train.iterations": 5, "eval.every": 0})
    full = train(load_config(None, ov), progress=False, log=lambda s: None)
    b = tmp_path / "b"
    cmd = [sys.executable, "-m", "slas.apps.cli", "train", "--no-progress"] + tiny_overrides(
        tiny_ckpt, b, **{"train.iterations": 5, "eval.every": 0})
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (b / "checkpoints" / "iter_000002").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rc = subprocess.run([sys.executable, "-m", "slas.apps.cli", "train", "--no-progress", "--resume", str(b)],
                        capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    assert _strip_time(_rows(b)) == _strip_time(_rows(full))


def test_nan_rewards_never_reach_the_loss(tiny_ckpt, tmp_path):
    name = "test_half_nan"
    if name not in rewards.available():
        @rewards.register(name)
        def _factory():
            def fn(images, prompts, metas):
                out = images.reshape(len(images), -1).mean(1) / 255.0
                out[::2] = np.nan
                return out
            return fn
    cfg = load_config(None, tiny_overrides(tiny_ckpt, tmp_path / "run", **{"reward.weights": f"{{{name}: 1.0}}"}))
    rows = _rows(train(cfg, progress=False, log=lambda s: None))
    assert rows[1]["train/n_nonfinite_rewards"] == 3  # N = 6, every other sample
    assert all(math.isfinite(v) for r in rows for v in r.values())


def test_trainable_subset_only_changes_matching_parameters(tiny_ckpt, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_ckpt, tmp_path / "run", **{"train.iterations": 1,
                                                                          "model.trainable": "[attn]"}))
    before = load_file(str(tiny_ckpt / "model.safetensors"))
    run = train(cfg, progress=False, log=lambda s: None)
    after = load_file(str(run / "checkpoints" / "iter_000001" / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k].float(), after[k].float())}
    assert changed and all("attn" in k for k in changed)
    with pytest.raises(ValueError, match="matches no UNet parameter"):
        ToyBackbone.from_checkpoint(tiny_ckpt, trainable=["no_such_module"])


def test_engine_raises_an_easy_reward(tiny_ckpt, tmp_path):
    """Learning happens: a brightness reward rises within a few iterations (a broken sign or pairing would not)."""
    name = "test_brightness"
    if name not in rewards.available():
        rewards.register(name)(lambda: lambda images, prompts, metas: images.reshape(len(images), -1).mean(1) / 255.0)
    ov = tiny_overrides(tiny_ckpt, tmp_path / "run", **{
        "reward.weights": f"{{{name}: 1.0}}", "train.iterations": 8, "train.prompts_per_iter": 4,
        "train.group_size": 4, "train.lr": 3e-3, "train.clip_range": 1e-2, "eval.every": 0})
    rows = _rows(train(load_config(None, ov), progress=False, log=lambda s: None))[1:]
    first, last = np.mean([r["train/reward_mean"] for r in rows[:2]]), np.mean([r["train/reward_mean"] for r in rows[-2:]])
    assert last > first + 0.02, (first, last)


def test_sde_window_rollout_is_ode_outside_and_rescoring_still_gives_ratio_one(tiny_ckpt):
    """Steps outside sample.sde_window are deterministic ODE steps with log-prob 0; inside, the
    stored transitions re-score to ratio 1 (Flow-GRPO-Fast / MixGRPO windows)."""
    cfg = load_config(None, ["train.objective=ppo_sde", "sample.steps=5", "sample.sde_window=[1,3]", "sample.eta=0.7",
                             "train.timestep_fraction=0.6"])
    sample = cfg.sample
    etas = step_etas(sample.steps, sample.sde_window, sample.eta)
    assert etas == [0.0, 0.7, 0.7, 0.0, 0.0] and trainable_steps(sample.steps, sample.sde_window) == [1, 2]
    assert derived(cfg)["trained_steps_per_sample"] == 1  # int(2 * 0.6)
    bb = ToyBackbone.from_checkpoint(tiny_ckpt)
    cond = bb.encode_prompts(["a photo of a red circle"])
    pid = torch.zeros(4, dtype=torch.long)
    sig = flow_sigmas(5)
    noise = torch.randn(1, 3, 32, 32).expand(4, -1, -1, -1)  # one shared start: spread only from the window
    with torch.no_grad():
        ro = rollout(lambda x, s, idx: bb.predict(x, s, index_cond(cond, pid[idx])), noise, FlowSampler(sig, "dance"),
                     eta=etas, generator=torch.Generator().manual_seed(0),
                     prompt_ids=pid, group_ids=pid)
        lat, lp = ro.latents, ro.log_probs
        assert torch.equal(lp[:, [0, 3, 4]], torch.zeros(4, 3))
        assert torch.equal(lat[0, 1], lat[3, 1])  # step 0 is an ODE step: the group is still identical
        assert (lat[0, 2] - lat[3, 2]).abs().max() > 1e-3  # step 1 is stochastic
        assert (lp[:, 1:3] != 0).all()
        for t in (1, 2):
            v = bb.predict(lat[:, t], sig[t].expand(4), index_cond(cond, pid))
            out = flow_step_with_logprob("dance", v, lat[:, t], sig[t].expand(4), sig[t + 1].expand(4), eta=0.7,
                                         prev_sample=lat[:, t + 1])
            assert (out.log_prob - lp[:, t]).exp().sub(1).abs().max() < 1e-6
    with pytest.raises(ValueError, match="one value per step"):
        rollout(lambda x, s, idx: x, noise, FlowSampler(sig, "dance"), eta=[0.5, 0.5],
                generator=torch.Generator(), prompt_ids=pid, group_ids=pid)


@pytest.mark.parametrize("window, msg", [("[3,2]", "start < end"), ("[0,9]", "start < end"),
                                         ("[4,5]", "only the last step"), ("[1]", "start, end")])
def test_bad_sde_window_is_a_readable_error(window, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(None, ["train.objective=ppo_sde", "sample.eta=0.5", "sample.steps=5", f"sample.sde_window={window}"])


def test_lora_trains_only_the_factors_and_starts_at_the_base_model(tiny_ckpt, tmp_path):
    base = ToyBackbone.from_checkpoint(tiny_ckpt)
    bb = ToyBackbone.from_checkpoint(tiny_ckpt, lora={"rank": 2, "alpha": 4, "targets": ["to_q", "to_v", "conv1"]})
    trainable = [n for n, p in bb.module.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("conv1.lora_A" in n for n in trainable) and not any("to_k" in n for n in trainable)
    x, sig = torch.randn(2, 3, 32, 32), torch.tensor([0.7, 0.3])
    cond = base.encode_prompts(["a photo of a red circle", "a photo of two squares"])
    with torch.no_grad():  # B = 0 at the start: the adapted model is the base model
        assert torch.equal(bb.predict(x, sig, cond), base.predict(x, sig, cond))
    with pytest.raises(ValueError, match="match no module"):
        ToyBackbone.from_checkpoint(tiny_ckpt, lora={"rank": 2, "alpha": 2, "targets": ["nope"]})

    cfg = load_config(None, tiny_overrides(tiny_ckpt, tmp_path / "run", **{"train.iterations": 1,
                                                                          "model.lora_rank": 2}))
    run = train(cfg, progress=False, log=lambda s: None)
    after = load_file(str(run / "checkpoints" / "iter_000001" / "model.safetensors"))
    before = load_file(str(tiny_ckpt / "model.safetensors"))
    assert all(torch.equal(before[k].float(), after[k].float()) for k in before if k in after)
    assert any("lora_B" in k and after[k].abs().max() > 0 for k in after)


@pytest.mark.parametrize("override, msg", [("model.lora_rank=-1", "lora_rank must be >= 0"),
                                           ("model.lora_targets=[]", "lora_targets must be a non-empty"),
                                           ("model.trainable=[attn]", "only the LoRA factors train")])
def test_lora_config_errors(override, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(None, ["model.lora_rank=4", override] if "lora_rank=-1" not in override else [override])
