"""Real backbones (FLUX, SD3, SD1.x) on tiny random diffusers components built offline and
saved as local diffusers folders: the shipped real-model configs train through `slas train` with each
train.objective (ppo_sde, and the forward-process nft and awm, which train SD1.x's epsilon model as the velocity it
is a rescaling of, without CFG), re-scoring at unchanged weights gives ratio 1, only the trained parameters change,
and `slas export` round-trips into the stock diffusers pipelines, which sample it as slas's evaluation does."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from _tinypipes import FLUX_DEV_SCHEDULER, build_pipeline, clip_text, tokenizers
from slas.algo.samplers import DDIMSampler, FlowSampler, ddim_alphas, flow_sigmas, sampler_for
from slas.algo.samplers.rollout import rollout
from slas.apps.cli import main
from slas.config import ConfigError, load_config
from slas.policy.base import Backbone, index_cond
from slas.policy.flux import image_ids, pack, unpack
from slas.policy.generate import deterministic_sampler
from slas.recipe.builders import build_backbone
from slas.recipe.evaluation import eval_sampler
from slas.recipe.prompts import load_prompts
from slas.recipe.run_dir import RunDir

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["a photo of a red cat", "a blue dog on a green mat", "two yellow birds", "a white circle left of a square"]

# what each tiny run starts from: a shipped config, with the options that pick the code path under test
RUNS = {
    # LoRA (alpha != rank, so the exported metadata matters), guidance embedding, DanceGRPO SDE, embedding cache
    "flux": ("flux_dancegrpo.yaml", {"model.lora_rank": 4, "model.lora_alpha": 8.0}),
    # full fine-tuning, gradient checkpointing, CFG with the detached unconditional branch, Flow-GRPO SDE + KL to a copy
    "sd3": ("sd35_flowgrpo.yaml", {"model.lora_rank": 0, "model.gradient_checkpointing": True, "train.kl_beta": 0.1}),
    # LoRA, CFG with gradients through both branches, DDIM, KL to the LoRA-disabled reference
    "sd": ("sd14_dancegrpo.yaml", {"model.lora_rank": 4, "train.kl_beta": 0.1}),
}
PIPELINES = {"flux": "FluxPipeline", "sd3": "StableDiffusion3Pipeline", "sd": "StableDiffusionPipeline"}
OBJECTIVES = ("ppo_sde", "nft", "awm")


def run_options(kind: str, objective: str) -> dict:
    """The options of RUNS[kind] for ``objective``. The forward-process objectives roll out with the deterministic
    ODE / DDIM sampler (fresh noise per sample, else a group's images are identical), train K = 2 levels, and move the
    KL to forward.kl_beta (sd3: a frozen copy of the start, sd: LoRA switched off); awm takes 2 optimizer steps an
    iteration, so its ratio to the sampling policy's error (the old-error pass) is exercised."""
    options = dict(RUNS[kind][1], **{"train.objective": objective})
    if objective == "ppo_sde":
        return options
    options.update({"sample.eta": 0.0, "sample.same_noise_in_group": False, "forward.timesteps": 2,
                    "forward.kl_beta": options.pop("train.kl_beta", 0.0), "train.kl_beta": 0.0})
    if objective == "awm":
        options["train.updates_per_iter"] = 2
    return options


# ----------------------------------------------------------------------------
# Tiny components (random weights, tokenizers trained in-process)
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toks():
    return tokenizers(PROMPTS)


@pytest.fixture(scope="module")
def clip_reward(tmp_path_factory, toks):
    """A tiny random CLIPModel for the `clip_score` reward (64 px, patch 8), with its tokenizer."""
    from transformers import CLIPConfig, CLIPModel

    d = tmp_path_factory.mktemp("clip_reward")
    tok = toks[0]
    torch.manual_seed(1)
    text = clip_text(tok, False).config.to_dict()
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=64,
                  patch_size=8, num_channels=3, hidden_act="gelu")
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def prompt_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("prompts")
    (d / "train.txt").write_text("\r\n".join(PROMPTS) + "\r\n\r\n")  # CRLF and a blank line, as upstream files
    (d / "eval.jsonl").write_text("".join(json.dumps({"prompt": p, "tag": "t"}) + "\n" for p in PROMPTS[:2]))
    return d


def tiny_config(kind: str, model_dir, out_dir, clip_reward, prompt_files, tmp_path, objective: str = "ppo_sde") -> Path:
    """The shipped config of ``kind`` at tiny sizes, written to a YAML file (the reward is replaced, not merged)."""
    name = RUNS[kind][0]
    options = run_options(kind, objective)
    data = yaml.safe_load((ROOT / "configs" / name).read_text())
    data["reward"] = {"weights": {"clip_score": 1.0}, "batch_size": 64,
                      "options": {"clip_score": {"model_path": str(clip_reward)}}}
    data["data"] = {"prompts": str(prompt_files / "train.txt"), "eval_prompts": str(prompt_files / "eval.jsonl")}
    data["model"].update(path=str(model_dir), resolution=64, max_sequence_length=16, device="cpu",
                         embed_cache=str(tmp_path / "embeds") if kind == "flux" else None)
    data["sample"].update(steps=3, batch_size=0)
    data["train"].update(iterations=2, prompts_per_iter=2, group_size=2, timestep_fraction=1.0, micro_batch=4,
                         updates_per_iter=1, lr=1e-2, clip_range=0.2)  # one update per iteration: every ratio is on-policy
    data["eval"].update(every=0, max_prompts=2, steps=3)
    data["run"].update(out_dir=str(out_dir), checkpoint_every=1)
    for key, value in options.items():
        section, field = key.split(".")
        data.setdefault(section, {})[field] = value
    path = tmp_path / f"{kind}_{objective}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, toks):
    """kind -> the tiny random pipeline saved as a local diffusers folder (built once, read by every run); FLUX with
    FLUX.1-dev's scheduler config (dynamic shifting), SD3 with SD3.5's static shift 3."""
    d = tmp_path_factory.mktemp("models")
    for kind in RUNS:
        build_pipeline(kind, *toks, scheduler=FLUX_DEV_SCHEDULER if kind == "flux" else None).save_pretrained(d / kind)
    return {kind: d / kind for kind in RUNS}


@pytest.fixture(scope="module", params=[(k, o) for k in RUNS for o in OBJECTIVES], ids="-".join)
def trained(request, tmp_path_factory, model_dirs, clip_reward, prompt_files):
    """(kind, objective, tiny model folder, run dir, export dir): `slas train` for 2 iterations with
    train.objective ``objective``, then `slas export`."""
    kind, objective = request.param
    tmp = tmp_path_factory.mktemp(f"{kind}_{objective}")
    cfg_path = tiny_config(kind, model_dirs[kind], tmp / "run", clip_reward, prompt_files, tmp, objective)
    assert main(["train", "--no-progress", "--config", str(cfg_path)]) == 0
    assert main(["export", str(tmp / "run"), "--out", str(tmp / "export")]) == 0
    return kind, objective, model_dirs[kind], tmp / "run", tmp / "export"


def _ode(bb, sampler, prompts, noise):
    """The policy's deterministic samples: the final latent [N, C, h, w] of the eta = 0 sampler from ``noise``."""
    cond = bb.encode_prompts(prompts)
    ids = torch.arange(len(prompts))
    with torch.no_grad():
        ro = rollout(lambda x, t, idx: bb.predict(x, t, index_cond(cond, idx)), noise, sampler, eta=0.0,
                     generator=torch.Generator().manual_seed(0), prompt_ids=ids, group_ids=ids)
    return ro.latents[:, -1]


def _pipeline_latents(kind, pipe, prompts, noise, steps):
    """The stock pipeline's final latents [N, C, h, w] from the same initial noise (eta = 0 / Euler ODE)."""
    kw = dict(prompt=prompts, num_inference_steps=steps, height=64, width=64, output_type="latent")
    with torch.no_grad():
        if kind == "flux":
            out = pipe(latents=pack(noise), guidance_scale=3.5, max_sequence_length=16, **kw).images
            return unpack(out, *noise.shape[-2:])
        if kind == "sd3":  # the pipeline's default spacing ends at 1/1000; pass the linspace(1, 0) schedule
            sig = np.linspace(1.0, 1 / steps, steps).tolist()
            return pipe(latents=noise, sigmas=sig, guidance_scale=4.5, max_sequence_length=16, **kw).images
        return pipe(latents=noise, guidance_scale=5.0, eta=0.0, **kw).images


# ----------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------


def test_train_runs_and_is_on_policy_before_the_update(trained):
    kind, objective, _, run, _ = trained
    cfg = load_config(run / "config.yaml", [f"run.out_dir={run}"])
    assert cfg.train.objective == objective
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert all(math.isfinite(v) for v in r.values()), r
    for r in (rows[0], rows[2]):  # eval.every 0: the base model and the end
        assert "eval/reward_mean" in r and "eval/reward/clip_score" in r
    for r in rows[1:]:
        assert r["train/grad_norm"] > 0, (kind, objective, r)
        assert r["train/reward_std"] > 0  # distinct samples in a group, so nonzero advantages
        if objective == "ppo_sde":
            # updates_per_iter 1: every re-scored transition of the iteration precedes its optimizer step, so the
            # ratio is exactly the rollout's (the stored fp32 latents re-scored by the same step function)
            assert abs(r["train/ratio_mean"] - 1) < 1e-5 and r["train/ratio_max_dev"] < 1e-5, (kind, r)
        else:  # flow matching on the clean samples: no SDE log-probs, a finite positive matching error
            assert "train/ratio_max_dev" not in r and "train/approx_kl" not in r
            assert math.isfinite(r["train/policy_loss"]) and 0 < r["train/fm_err"] < 1e3, (kind, objective, r)
    if objective == "nft":
        # v_old starts as the policy and the first iteration trains it once: v = v_old on every pair of iteration 1
        # (the implicit policies are then symmetric about v_old); after that v_old is the EMA, behind the policy
        assert rows[1]["train/old_dev"] <= 1e-20 < rows[2]["train/old_dev"], (kind, rows[1:])
        assert 0 < rows[1]["train/r_mean"] < 1
    if objective == "awm":  # old_kl 1: the velocity KL to v_old is on
        assert all("train/old_kl" in r and 0 <= r["train/clipfrac"] <= 1 for r in rows[1:])
        assert rows[1]["train/old_kl"] > 0  # 2 optimizer steps: the second one's policy has left v_old
        if "train/kl" in rows[1]:  # in iteration 1, v_old and the KL reference are both the starting policy
            assert abs(rows[1]["train/old_kl"] - rows[1]["train/kl"]) <= 1e-6 * rows[1]["train/kl"], rows[1]
    if kind != "flux":  # the KL reference is the starting policy (a copy for sd3, LoRA switched off for sd)
        if cfg.train.updates_per_iter == 1:  # iteration 1's pairs all precede its only optimizer step
            assert rows[1]["train/kl"] < 1e-12, (kind, objective, rows[1])
        assert rows[2]["train/kl"] > 1e-12, (kind, objective, rows[2])
    else:
        assert "train/kl" not in rows[1]
    assert (run / "samples" / "iter_000002.png").is_file() and (run / "curves.png").is_file()
    if kind == "flux":  # model.embed_cache: one file per train and eval prompt, written on first use
        files = list((run.parent / "embeds").rglob("*.safetensors"))
        assert len(files) == len(PROMPTS)
        assert set(load_file(str(files[0]))) == {"prompt_embeds", "pooled_prompt_embeds"}


def test_only_the_trained_parameters_change(trained):
    kind, _, _, run, _ = trained
    cfg = load_config(run / "config.yaml", [f"run.out_dir={run}"])
    torch.manual_seed(cfg.run.seed)  # as train() seeds before building: the same initial LoRA factors
    start = {k: v.detach().clone() for k, v in build_backbone(cfg).module.state_dict().items()}
    after = load_file(str(RunDir(run).latest() / "model.safetensors"))
    assert set(after) == set(start)
    changed = {k for k in after if not torch.equal(after[k].float(), start[k].float())}
    assert changed
    if cfg.model.lora_rank:
        assert all("lora_" in k for k in changed)
        assert any("lora_B" in k and after[k].abs().max() > 0 for k in changed)  # B starts at 0
    else:
        assert len(changed) > len(after) // 2  # full fine-tuning


def test_export_round_trips_into_the_stock_pipeline(trained, toks):
    import diffusers

    kind, _, model_dir, run, export = trained
    cfg = load_config(run / "config.yaml", [f"run.out_dir={run}"])
    info = json.loads((export / "slas_export.json").read_text())
    assert info["iteration"] == 2 and info["kind"] == ("lora" if cfg.model.lora_rank else "full")

    bb = build_backbone(cfg)
    bb.module.load_state_dict(load_file(str(RunDir(run).latest() / "model.safetensors")))
    bb.module.eval()
    steps = 4
    noise = torch.randn(2, *bb.sample_shape, generator=torch.Generator().manual_seed(3))
    ours = _ode(bb, eval_sampler(bb, cfg, steps), PROMPTS[:2], noise)  # as evaluation samples (eval.shift auto)

    cls = getattr(diffusers, PIPELINES[kind])
    base = cls.from_pretrained(model_dir, local_files_only=True)
    base_lat = _pipeline_latents(kind, base, PROMPTS[:2], noise, steps)
    if info["kind"] == "lora":
        tuned = cls.from_pretrained(model_dir, local_files_only=True)
        tuned.load_lora_weights(export)
    else:
        sub = info["subfolder"]
        model_cls = type(getattr(base, sub))
        tuned = cls.from_pretrained(model_dir, local_files_only=True,
                                    **{sub: model_cls.from_pretrained(export, subfolder=sub, local_files_only=True)})
    tuned_lat = _pipeline_latents(kind, tuned, PROMPTS[:2], noise, steps)

    scale = ours.abs().max()  # measured: |tuned - ours| 0 (flux, sd), <= 1.5e-6 (sd3); |base - ours| >= 1e-2 at scale >= 3.6
    assert (tuned_lat - ours).abs().max() < 1e-5 * scale, (kind, (tuned_lat - ours).abs().max())
    assert (base_lat - ours).abs().max() > 1e-3 * scale, (kind, (base_lat - ours).abs().max())
    if kind == "flux":  # the rollouts' static shift 3 is not what FluxPipeline samples FLUX.1-dev with
        rollout_shift = _ode(bb, deterministic_sampler(bb, steps, cfg.sample.shift), PROMPTS[:2], noise)
        assert (tuned_lat - rollout_shift).abs().max() > 1e-3 * scale


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_forward_objectives_train_without_cfg(objective, model_dirs, clip_reward, prompt_files, tmp_path,
                                               monkeypatch):
    """nft / awm train the conditional model alone (DiffusionNFT trains at guidance 1): every forward of the TRAIN
    phase (the policy's, v_old's and the KL reference's) runs the prompt batch once, while the rollouts and the
    evaluation, before and after training, keep CFG (guidance 4.5 on the empty prompt: twice the batch). ppo_sde
    re-scores the CFG'd rollout, so its training forwards keep CFG too. SD3 with cfg_detach_uncond runs the two
    branches as separate forwards; the count is what the denoiser sees either way."""
    from slas.policy.sd3 import SD3Backbone

    calls = []  # per predict: batch, denoiser mode (train = the TRAIN phase), grad, rows the denoiser ran
    predict, forward = SD3Backbone.predict, SD3Backbone._forward

    def counting_predict(self, x, t, cond):
        calls.append({"n": x.shape[0], "train": self.module.training, "grad": torch.is_grad_enabled(), "rows": 0,
                      "guidance": self.guidance})
        return predict(self, x, t, cond)

    def counting_forward(self, x, t, cond):
        calls[-1]["rows"] += x.shape[0]
        return forward(self, x, t, cond)

    monkeypatch.setattr(SD3Backbone, "predict", counting_predict)
    monkeypatch.setattr(SD3Backbone, "_forward", counting_forward)
    cfg_path = tiny_config("sd3", model_dirs["sd3"], tmp_path / "run", clip_reward, prompt_files, tmp_path, objective)
    # one iteration; the forward KL (to a frozen copy) on, so the reference forward is counted too
    assert main(["train", "--no-progress", "--config", str(cfg_path), "train.iterations=1"]) == 0
    train = [c for c in calls if c["train"]]
    sample = [c for c in calls if not c["train"]]
    assert train and sample
    # rollout (3 steps) and the evaluations at iterations 0 and 1 (3 steps each): CFG, at the configured guidance
    assert all(c["rows"] == 2 * c["n"] and c["guidance"] == 4.5 and not c["grad"] for c in sample), sample
    assert len(sample) == 3 * 3
    assert any(c["grad"] for c in train)
    if objective == "ppo_sde":
        assert all(c["rows"] == 2 * c["n"] for c in train), train
        return
    assert all(c["rows"] == c["n"] and c["guidance"] == 1.0 for c in train), train
    assert any(not c["grad"] for c in train)  # v_old (nft, awm's old_kl) and the KL reference


# ---- pieces, without training ----------------------------------------------------------------------


def test_forward_process_of_the_samplers():
    """``noised`` / ``velocity``, what nft / awm train on: the flow sampler's x_t = (1 - sigma) x0 + sigma eps; DDIM's
    VP x_t = sqrt(ab) x0 + sqrt(1 - ab) eps is the flow point at t = sqrt(1 - ab) / (sqrt(ab) + sqrt(1 - ab)),
    rescaled, and an epsilon prediction converts to the rectified-flow velocity eps - x0 (exactly when the
    prediction is exact). For both, the x0-space error t (v - target) is x0 - x0_hat (DiffusionNFT's e)."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 4, 8, 8, generator=g), torch.randn(6, 4, 8, 8, generator=g)
    delta = 0.1 * torch.randn(6, 4, 8, 8, generator=g)  # a prediction error
    idx = torch.tensor([0, 1, 2, 3, 4, 4])
    bc = lambda v: v.view(-1, 1, 1, 1)  # noqa: E731

    flow = sampler_for("velocity", 5, family="flow_grpo", shift=3.0)
    x_t, t = flow.noised(x0, eps, idx)
    sigma = flow.sigmas[idx]
    assert torch.equal(t, sigma) and (t > 0).all() and (t <= 1).all()  # step 0 is pure noise, t = 1
    torch.testing.assert_close(x_t, (1 - bc(sigma)) * x0 + bc(sigma) * eps)
    v = flow.velocity(eps - x0 + delta, x_t, idx)
    torch.testing.assert_close(v, eps - x0 + delta)
    torch.testing.assert_close(bc(t) * (v - (eps - x0)), x0 - flow.x0(v, x_t, idx))

    ac = torch.linspace(0.9999, 0.98, 1000).cumprod(0)  # SD-like: alpha-bar from ~1 down to ~0
    ddim = sampler_for("epsilon", 5, family="ddim", alphas_cumprod=ac)
    x_t, t = ddim.noised(x0, eps, idx)
    ab = ddim.alpha_bar[idx]
    a, s = ab.sqrt(), (1 - ab).sqrt()
    torch.testing.assert_close(x_t, bc(a) * x0 + bc(s) * eps)  # the model's own (VP) input at model_time(idx)
    torch.testing.assert_close(t, s / (a + s))
    assert (t[1:] <= t[:-1]).all() and t[0] > 0.9 and t[-1] < 0.1  # from noise to data along the schedule
    torch.testing.assert_close(x_t / bc(a + s), (1 - bc(t)) * x0 + bc(t) * eps, atol=1e-5, rtol=1e-5)
    v = ddim.velocity(eps, x_t, idx)  # exact epsilon -> exact velocity
    assert (v - (eps - x0)).abs().max() < 1e-5 * (eps - x0).abs().max(), (v - (eps - x0)).abs().max()
    v = ddim.velocity(eps + delta, x_t, idx)  # the velocity error is (1 + s / a) x the epsilon error
    torch.testing.assert_close(v - (eps - x0), bc(1 + s / a) * delta, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(bc(t) * (v - (eps - x0)), x0 - ddim.x0(eps + delta, x_t, idx), atol=1e-5, rtol=1e-5)


# ---- pieces, without training ----------------------------------------------------------------------


def test_backbones_satisfy_the_protocol_and_encode_like_the_pipelines(tmp_path, toks):
    """Each adapter's prompt encoding equals its pipeline's encode_prompt; the protocol holds."""
    for kind in RUNS:
        pipe = build_pipeline(kind, *toks)
        pipe.save_pretrained(tmp_path / kind)
        cfg = load_config(None, [f"model.backbone={kind}", f"model.path={tmp_path / kind}", "model.resolution=64",
                                 "model.max_sequence_length=16", "model.device=cpu", "data.prompts=x.txt",
                                 "data.eval_prompts=x.txt", f"sample.family={'ddim' if kind == 'sd' else 'dance'}"])
        bb = build_backbone(cfg)
        assert isinstance(bb, Backbone) and bb.sample_shape == (4, 8, 8)  # latent channels x 64 px / 8
        cond = bb.encode_prompts(PROMPTS[:2])
        with torch.no_grad():
            if kind == "flux":
                emb, pooled, _ = pipe.encode_prompt(PROMPTS[:2], None, max_sequence_length=16)
                torch.testing.assert_close(cond["prompt_embeds"], emb)
                torch.testing.assert_close(cond["pooled_prompt_embeds"], pooled)
            elif kind == "sd3":
                emb, _, pooled, _ = pipe.encode_prompt(PROMPTS[:2], None, None, do_classifier_free_guidance=False,
                                                       max_sequence_length=16)
                torch.testing.assert_close(cond["prompt_embeds"], emb)
                torch.testing.assert_close(cond["pooled_prompt_embeds"], pooled)
            else:
                emb, _ = pipe.encode_prompt(PROMPTS[:2], "cpu", 1, False)
                torch.testing.assert_close(cond["prompt_embeds"], emb)


def test_flux_packing_matches_the_pipeline():
    from diffusers import FluxPipeline

    x = torch.randn(2, 16, 6, 4)
    packed = pack(x)
    assert torch.equal(packed, FluxPipeline._pack_latents(x, 2, 16, 6, 4))
    assert torch.equal(unpack(packed, 6, 4), x)
    assert torch.equal(image_ids(3, 2), FluxPipeline._prepare_latent_image_ids(1, 3, 2, "cpu", torch.float32))


def test_sampler_dispatch():
    s = sampler_for("velocity", 4, family="dance", shift=3.0)
    assert isinstance(s, FlowSampler) and torch.equal(s.sigmas, flow_sigmas(4, 3.0))
    ac = torch.linspace(0.999, 0.01, 1000).cumprod(0)
    d = sampler_for("epsilon", 5, family="ddim", alphas_cumprod=ac)
    assert isinstance(d, DDIMSampler) and torch.equal(d.timesteps, ddim_alphas(ac, 5)[0])
    assert torch.equal(d.model_time(torch.tensor([0, 4])), d.timesteps[[0, 4]].float())
    with pytest.raises(ValueError, match="epsilon-prediction backbone samples with family 'ddim'"):
        sampler_for("epsilon", 5, family="dance", alphas_cumprod=ac)
    with pytest.raises(ValueError, match="flow family"):
        sampler_for("velocity", 5, family="ddim")
    with pytest.raises(ValueError, match="DDIM has no sigma step"):
        d.dt(torch.tensor([0]))


@pytest.mark.parametrize("prediction, family", [("velocity", "dance"), ("velocity", "flow_grpo"), ("epsilon", "ddim")])
def test_dispatched_sampler_rescoring_gives_ratio_one(prediction, family):
    """Rollout and re-scoring through one sampler object agree at unchanged weights, with grad on and shuffled
    micro-batches that mix steps (the recipe's update pass), for each sampler a backbone can get."""
    torch.manual_seed(0)
    net = torch.nn.Conv2d(4, 4, 3, padding=1)
    ac = torch.linspace(0.9999, 0.98, 1000).cumprod(0)
    s = sampler_for(prediction, 4, family=family, alphas_cumprod=ac if prediction == "epsilon" else None)

    def predict(x, t, idx=None):
        return net(x) * (1 + t.view(-1, 1, 1, 1) / 1000)

    ids = torch.arange(6)
    ro = rollout(predict, torch.randn(6, 4, 8, 8), s, eta=0.8 if family != "ddim" else 1.0,
                 generator=torch.Generator().manual_seed(1), prompt_ids=ids, group_ids=ids)
    assert (ro.log_probs != 0).all()
    pairs = torch.cartesian_prod(torch.arange(6), torch.arange(4))[torch.randperm(24)]
    for mb in pairs.split(5):
        n, t = mb[:, 0], mb[:, 1]
        x = ro.latents[n, t]
        out = s.step(predict(x, s.model_time(t)), x, t, eta=0.8 if family != "ddim" else 1.0,
                     prev_sample=ro.latents[n, t + 1])
        assert (out.log_prob - ro.log_probs[n, t]).exp().sub(1).abs().max() < 1e-6


def test_real_configs_validate_without_weights_and_fail_clearly_at_load(tmp_path):
    for name in ("flux_dancegrpo", "flux_slas", "sd14_dancegrpo", "sd14_slas", "sd35_flowgrpo"):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert cfg.model.backbone in ("flux", "sd", "sd3") and cfg.model.path
    cfg = load_config(ROOT / "configs" / "flux_dancegrpo.yaml", [f"model.path={tmp_path / 'nope'}"])
    with pytest.raises(FileNotFoundError, match="model.path .* is not a directory.*hf download"):
        build_backbone(cfg)


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


def test_prompt_files(tmp_path, prompt_files):
    assert [e["prompt"] for e in load_prompts(prompt_files / "train.txt")] == PROMPTS
    assert load_prompts(prompt_files / "eval.jsonl")[0] == {"prompt": PROMPTS[0], "tag": "t"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: a JSON record needs a non-empty string 'prompt'"):
        load_prompts(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompts(tmp_path / "missing.txt")
    csv = tmp_path / "p.csv"
    csv.write_text("prompt\na cat\n")
    with pytest.raises(ValueError, match="expected .txt"):
        load_prompts(csv)


def test_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "no config.yaml there" in capsys.readouterr().err
