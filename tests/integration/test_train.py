"""The recipe in process (slas.recipe.train.train): every shipped ShapesWorld config trains two iterations,
a run folder is not overwritten, resume is exact, NaN rewards never reach the loss, only the trained parameters
change (a subset, LoRA, the text encoder), and an easy reward rises."""

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from _toyruns import tiny_overrides
from slas import rewards
from slas.config import ConfigError, load_config
from slas.recipe.train import train
from slas.toyworld.backbone import ToyBackbone

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
# configs of real backbones (FLUX, SD3, SD1.x) train on tiny diffusers models in tests/integration/test_backbones.py
TOY_CONFIGS = [p for p in CONFIGS if load_config(p).model.backbone == "toy"]


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
    required = ["train/reward_mean", "train/reward_std", "train/adv_abs_mean", "train/adv_mean", "train/policy_loss",
                "train/grad_norm", "time/rollout_s", "time/reward_s", "time/train_s", "eval/gold_accuracy",
                "eval/geneval_accuracy", "eval/exact_count", "eval/gold_score", "eval/debris", "eval/id/gold_accuracy",
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


@pytest.mark.parametrize("objective", ["ppo_sde", "nft"])
def test_a_trained_text_encoder_trains(tiny_ckpt, tmp_path, objective):
    # every micro-batch builds its own text-encoder graph: before, the rollout's one graph was backpropagated by
    # the first micro-batch and the second raised "Trying to backward through the graph a second time"
    extra = {"sample.eta": 0.0, "sample.same_noise_in_group": False} if objective == "nft" else {}
    cfg = load_config(None, tiny_overrides(tiny_ckpt, tmp_path / "r", **{
        "model.train_text_encoder": "true", "train.objective": objective, "train.iterations": 1, "eval.every": 0,
        "train.micro_batch": 2, "monitor.enabled": "false", **extra}))
    run = train(cfg, progress=False, log=lambda m: None)
    start = load_file(str(Path(tiny_ckpt) / "model.safetensors"))
    end = load_file(str(next((run / "checkpoints").glob("iter_*")) / "model.safetensors"))
    moved = [k for k in end if k.startswith("text_encoder") and not torch.equal(end[k], start[k])]
    assert moved, "the text encoder did not change"
