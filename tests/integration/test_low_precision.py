"""bf16 / fp16 on tiny real backbones, run on the CPU with ``SLAS_CPU_AUTOCAST=1`` (CONTRIBUTING.md): the frozen LoRA
base is stored in the autocast dtype and the forwards run under autocast, as on a GPU, while the sampler step and the
log-probs stay fp32. Re-scoring at unchanged weights gives ratio 1 (measured: exactly, with the rollout and the update
at different batch sizes), a precision mismatch between the two passes would not; LoRA over a bf16 base trains; and
`slas train` with each objective stays finite."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from _tinypipes import build_pipeline, tokenizers
from slas import rewards
from slas.algo.samplers import sampler_for
from slas.algo.samplers.rollout import rollout
from slas.apps.cli import main
from slas.config import load_config
from slas.policy import common
from slas.policy.base import index_cond
from slas.recipe.builders import build_backbone, build_sampler

PROMPTS = ["a photo of a red cat", "a blue dog on a green mat", "two yellow birds", "a white circle left of a square"]
# max |ratio - 1| of re-scoring at unchanged weights in bf16 / fp16 (docs/upstream-parity.md). Measured on the CPU
# (torch 2.13): exactly 0 for every case below, rollout batch 4 against update micro-batches of 3. Re-scoring the same
# rollout in fp32 instead gives 3e-4 .. 6e-2 (reduce mean): a mismatch this tolerance catches.
RATIO_TOL = 1e-6
REWARD = "test_brightness"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    d = tmp_path_factory.mktemp("lowp_models")
    toks = tokenizers(PROMPTS)
    for kind in ("flux", "sd3", "sd"):
        build_pipeline(kind, *toks).save_pretrained(d / kind)
    return d


@pytest.fixture
def cpu_autocast(monkeypatch):
    monkeypatch.setenv(common.CPU_AUTOCAST_ENV, "1")


def _cfg(model_dir: Path, kind: str, dtype: str, lora: int, *extra: str):
    return load_config(None, [f"model.backbone={kind}", f"model.path={model_dir / kind}", "model.resolution=64",
                              "model.max_sequence_length=16", "model.device=cpu", f"model.dtype={dtype}",
                              f"model.lora_rank={lora}", "data.prompts=x.txt", "data.eval_prompts=x.txt",
                              f"sample.family={'ddim' if kind == 'sd' else 'dance'}",
                              f"sample.eta={1.0 if kind == 'sd' else 0.3}", "sample.steps=3", *extra])


def test_the_switch_puts_the_cpu_in_the_model_dtype(model_dirs, monkeypatch):
    cfg = _cfg(model_dirs, "flux", "bfloat16", 4)
    fp32 = build_backbone(cfg)
    assert fp32.dtype == torch.float32 and {p.dtype for p in fp32.module.parameters()} == {torch.float32}
    monkeypatch.setenv(common.CPU_AUTOCAST_ENV, "1")
    bb = build_backbone(cfg)
    assert bb.dtype == torch.bfloat16
    params = dict(bb.module.named_parameters())
    assert {p.dtype for n, p in params.items() if "lora_" in n} == {torch.float32}  # trained: fp32 master weights
    assert {p.dtype for n, p in params.items() if "lora_" not in n} == {torch.bfloat16}  # the frozen base
    assert bb.vae.dtype == torch.bfloat16
    x = torch.randn(2, *bb.sample_shape, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.9, 0.4])
    with torch.no_grad():
        v16 = bb.predict(x, sigma, bb.encode_prompts(PROMPTS[:2]))
        v32 = fp32.predict(x, sigma, fp32.encode_prompts(PROMPTS[:2]))
    assert v16.dtype == torch.float32  # the step sees fp32
    err = ((v16 - v32).norm() / v32.norm()).item()
    assert 1e-4 < err < 5e-2, err  # bf16 arithmetic (about 3 significant digits), not a different model


@pytest.mark.parametrize("kind, dtype, lora", [("flux", "bfloat16", 4), ("sd3", "bfloat16", 0), ("sd", "bfloat16", 4),
                                               ("flux", "float16", 4)])
def test_ratio_is_one_at_unchanged_weights_in_low_precision(model_dirs, cpu_autocast, kind, dtype, lora):
    """The recipe's two passes: a no-grad rollout in eval mode at batch 4, then the update's re-scoring with grad on,
    in train mode, in shuffled micro-batches of 3 that mix steps. Both forwards run in ``dtype``; the step is fp32."""
    torch.manual_seed(0)
    cfg = _cfg(model_dirs, kind, dtype, lora)
    bb = build_backbone(cfg)
    s = build_sampler(cfg, bb, 3)
    eta = cfg.sample.eta
    cond = bb.encode_prompts(PROMPTS)
    ids = torch.arange(4)
    bb.module.eval()
    ro = rollout(lambda x, t, idx: bb.predict(x, t, index_cond(cond, idx)),
                 torch.randn(4, *bb.sample_shape, generator=torch.Generator().manual_seed(0)), s, eta=eta,
                 generator=torch.Generator().manual_seed(1), prompt_ids=ids, group_ids=ids)

    def max_dev(micro_batch: int) -> float:
        pairs = torch.cartesian_prod(ids, torch.arange(3))[torch.randperm(12, generator=torch.Generator().manual_seed(2))]
        dev = 0.0
        for mb in pairs.split(micro_batch):
            n, t = mb[:, 0], mb[:, 1]
            x = ro.latents[n, t]
            out = s.step(bb.predict(x, s.model_time(t), index_cond(cond, n)), x, t, eta=eta,
                         prev_sample=ro.latents[n, t + 1])
            dev = max(dev, (out.log_prob.detach() - ro.log_probs[n, t]).exp().sub(1).abs().max().item())
        return dev

    bb.module.train()
    assert max_dev(3) <= RATIO_TOL, (kind, dtype, max_dev(3))
    bb.module.float()  # the same weights re-scored in fp32: the drift a precision mismatch between the passes gives
    bb.dtype = torch.float32
    cond = {k: v.float() for k, v in cond.items()}
    with torch.no_grad():
        assert max_dev(4) > 100 * RATIO_TOL, (kind, dtype, max_dev(4))


def test_lora_over_a_bf16_base_trains(model_dirs, cpu_autocast):
    """Flow matching on a fixed batch (the forward-process objectives' target): the loss falls, only the fp32 LoRA
    factors move, and the bf16 base is untouched."""
    torch.manual_seed(0)
    bb = build_backbone(_cfg(model_dirs, "flux", "bfloat16", 4, "model.lora_alpha=8"))
    base = {n: p.detach().clone() for n, p in bb.module.named_parameters() if "lora_" not in n}
    lora = {n: p for n, p in bb.module.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in lora)
    start = {n: p.detach().clone() for n, p in lora.items()}
    opt = torch.optim.Adam(lora.values(), lr=5e-2)
    s = sampler_for("velocity", 4, family="ode", shift=3.0)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, *bb.sample_shape, generator=g), torch.randn(4, *bb.sample_shape, generator=g)
    idx = torch.tensor([0, 1, 2, 3])
    x_t, _ = s.noised(x0, eps, idx)
    cond = bb.encode_prompts(PROMPTS)
    bb.module.train()
    losses = []
    for _ in range(6):
        loss = (bb.predict(x_t, s.model_time(idx), cond) - (eps - x0)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses) and losses[-1] < 0.9 * losses[0], losses
    assert (np.diff(losses) < 0).all(), losses
    assert any(not torch.equal(p, start[n]) for n, p in lora.items() if "lora_B" in n)
    assert all(p.dtype == torch.float32 for p in lora.values())
    for n, p in bb.module.named_parameters():
        if n in base:
            assert p.dtype == torch.bfloat16 and torch.equal(p, base[n]), n


def _train_config(model_dir: Path, out: Path, objective: str) -> Path:
    """Two iterations of tiny FLUX with LoRA r4 over a bf16 base, ``objective``, a brightness reward."""
    prompts = out.parent / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    data = {"model": {"backbone": "flux", "path": str(model_dir / "flux"), "resolution": 64, "max_sequence_length": 16,
                      "device": "cpu", "dtype": "bfloat16", "lora_rank": 4, "lora_alpha": 8.0},
            "data": {"prompts": str(prompts), "eval_prompts": str(prompts)},
            "reward": {"weights": {REWARD: 1.0}},
            "sample": {"family": "dance", "steps": 3, "eta": 0.3, "shift": 3.0, "same_noise_in_group": True},
            "train": {"objective": objective, "iterations": 2, "prompts_per_iter": 2, "group_size": 2,
                      "timestep_fraction": 1.0, "micro_batch": 3, "updates_per_iter": 1, "lr": 1e-2, "clip_range": 0.2,
                      "kl_beta": 0.0, "ema_decay": 0.0},
            "eval": {"every": 0, "max_prompts": 2, "steps": 3},
            "run": {"out_dir": str(out), "checkpoint_every": 1}}
    if objective != "ppo_sde":  # ODE rollouts with fresh noise per sample, K = 2 noise levels (as test_backbones)
        data["sample"].update(eta=0.0, same_noise_in_group=False)
        data["forward"] = {"timesteps": 2}
    if objective == "awm":
        data["train"]["updates_per_iter"] = 2
    path = out.parent / f"{objective}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("objective", ["ppo_sde", "nft", "awm"])
def test_objectives_train_finite_in_bf16(model_dirs, cpu_autocast, tmp_path, objective):
    if REWARD not in rewards.available():
        rewards.register(REWARD)(lambda: lambda images, prompts, metas: images.reshape(len(images), -1).mean(1) / 255.0)
    run = tmp_path / "run"
    assert main(["train", "--no-progress", "--config", str(_train_config(model_dirs, run, objective))]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert all(math.isfinite(v) for v in r.values()), r
    for r in rows[1:]:
        assert math.isfinite(r["train/policy_loss"]) and r["train/grad_norm"] > 0, r
        if objective == "ppo_sde":  # one update per iteration: every ratio is on-policy
            assert r["train/ratio_max_dev"] <= RATIO_TOL, r
    after = load_file(str(run / "checkpoints" / "iter_000002" / "model.safetensors"))
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in after.items())  # B starts at 0
    assert {v.dtype for k, v in after.items() if "lora_" not in k} == {torch.bfloat16}
    assert np.isfinite(rows[-1]["eval/reward_mean"])
