"""Evaluation samples as the stock diffusers pipelines do: `eval.shift: auto` takes the pipeline's time shift from the
model folder's scheduler config (FLUX.1-dev: dynamic, e^mu at the packed token count), so training's held-out
evaluation and `slas eval` give the images FluxPipeline gives from the same initial latents, at every resolution,
while the training rollouts keep DanceGRPO's static shift 3 (sample.shift)."""

import math

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift as diffusers_calculate_shift

from _tinypipes import FLUX_DEV_SCHEDULER, build_pipeline, tokenizers
from slas.algo.samplers import TimeShift
from slas.algo.samplers.rollout import rollout
from slas.apps.eval import load_model
from slas.config import load_config
from slas.policy import schedule
from slas.policy.base import index_cond
from slas.policy.flux import pack, unpack
from slas.policy.generate import deterministic_sampler, generate, sampling_shift, seeded_noise
from slas.recipe.builders import build_backbone
from slas.recipe.evaluation import eval_sampler

PROMPTS = ["a photo of a red cat", "a blue dog on a green mat", "two yellow birds", "a white circle left of a square"]
STEPS = 4
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """FLUX with FLUX.1-dev's scheduler config; SD3 with a static and with a dynamic one."""
    d = tmp_path_factory.mktemp("pipelines")
    toks = tokenizers(PROMPTS)
    build_pipeline("flux", *toks, scheduler=FLUX_DEV_SCHEDULER).save_pretrained(d / "flux")
    build_pipeline("sd3", *toks).save_pretrained(d / "sd3")
    build_pipeline("sd3", *toks, scheduler=FLUX_DEV_SCHEDULER).save_pretrained(d / "sd3_dynamic")
    return d


def _cfg(path, backbone: str, resolution: int, *extra: str):
    """A run's config: training samples with DanceGRPO's static shift 3, eval.shift is left at its default."""
    return load_config(None, [f"model.backbone={backbone}", f"model.path={path}", f"model.resolution={resolution}",
                              "model.max_sequence_length=16", "model.device=cpu", "data.prompts=x.txt",
                              "data.eval_prompts=x.txt", "sample.shift=3", *extra])


def _latents(bb, sampler, noise):
    """The final latent [N, C, h, w] of ``sampler`` at eta 0 from ``noise``."""
    cond = bb.encode_prompts(PROMPTS[: len(noise)])
    ids = torch.arange(len(noise))
    with torch.no_grad():
        ro = rollout(lambda x, t, idx: bb.predict(x, t, index_cond(cond, idx)), noise, sampler, eta=0.0,
                     generator=torch.Generator().manual_seed(0), prompt_ids=ids, group_ids=ids)
    return ro.latents[:, -1]


@pytest.mark.parametrize("resolution", [64, 128])
def test_flux_evaluation_samples_like_flux_pipeline(model_dirs, resolution):
    cfg = _cfg(model_dirs / "flux", "flux", resolution)
    assert cfg.eval.shift == "auto"
    bb = build_backbone(cfg)
    bb.module.eval()
    sampler = eval_sampler(bb, cfg, STEPS)
    tokens = (resolution // 16) ** 2  # 2x2 patches of the [16, H/8, W/8] latent
    shift = bb.pipeline_shift()
    assert shift == TimeShift(math.exp(diffusers_calculate_shift(tokens, 256, 4096, 0.5, 1.15)), dynamic=True)
    pipe = FluxPipeline.from_pretrained(model_dirs / "flux", local_files_only=True)
    kw = dict(prompt=PROMPTS[:2], num_inference_steps=STEPS, height=resolution, width=resolution, guidance_scale=3.5,
              max_sequence_length=16)
    noise = seeded_noise(SEEDS, bb.sample_shape)  # [2, 16, h, w], what evaluation starts from
    with torch.no_grad():
        theirs = unpack(pipe(latents=pack(noise), output_type="latent", **kw).images, *noise.shape[-2:])
        assert torch.equal(pipe.scheduler.sigmas, sampler.sigmas)  # the same floats, the 0 appended
        images = pipe(latents=pack(noise), output_type="np", **kw).images  # float [2, H, W, 3] in [0, 1]
    ours = _latents(bb, sampler, noise)
    scale = theirs.abs().max()
    assert (ours - theirs).abs().max() <= 1e-5, (ours - theirs).abs().max()  # measured: 0 (bit-identical)
    # the evaluation entry point itself (seeded noise, prompt encoding per chunk, decoding): its uint8 images are the
    # pipeline's float images rounded (the two post-processings round x = 127.5 (z + 1) in different orders)
    ours_u8 = generate(bb, PROMPTS[:2], SEEDS, STEPS, sampler=eval_sampler(bb, cfg, STEPS))
    assert np.abs(ours_u8 / 255.0 - images).max() <= 0.5 / 255 + 1e-5
    # training's static shift 3 samples something else: the test would see evaluation use it
    train = _latents(bb, deterministic_sampler(bb, STEPS, cfg.sample.shift), noise)
    assert (train - theirs).abs().max() > 1e-2 * scale, (train - theirs).abs().max()


def test_the_shift_depends_on_the_resolution_and_a_number_overrides_it(model_dirs):
    shifts = {}
    for res in (64, 128, 720, 1024):
        cfg = _cfg(model_dirs / "flux", "flux", res)
        tokens = (res // 16) ** 2
        shifts[res] = schedule.pipeline_shift(schedule.read_scheduler_config(model_dirs / "flux"), tokens)
        assert math.isclose(math.log(shifts[res].shift), 0.5 + (1.15 - 0.5) * (tokens - 256) / (4096 - 256))
    assert shifts[64].shift < shifts[128].shift < shifts[720].shift < shifts[1024].shift
    assert math.isclose(shifts[1024].shift, math.exp(1.15))  # 4096 tokens: max_shift
    # 720 px, 16 steps (the FLUX configs): the dynamic grid against DanceGRPO's static shift 3
    gap = (deterministic_sampler(_StubFlow(), 16, shifts[720]).sigmas - deterministic_sampler(_StubFlow(), 16, 3.0).sigmas)
    assert 0.07 < gap.abs().max() < 0.08, gap.abs().max()
    cfg = _cfg(model_dirs / "flux", "flux", 64, "eval.shift=2.5")
    bb = build_backbone(cfg)
    assert sampling_shift(bb, cfg.eval.shift, cfg.sample.shift) == 2.5
    assert torch.equal(eval_sampler(bb, cfg, STEPS).sigmas, deterministic_sampler(bb, STEPS, 2.5).sigmas)
    assert sampling_shift(_StubFlow(), "auto", 3.0) == 3.0  # no stock pipeline: the run's sample.shift


class _StubFlow:
    """A velocity backbone without a stock pipeline (``pipeline_shift``), e.g. a plugin's."""

    prediction = "velocity"


def test_slas_eval_of_a_flux_pipeline_uses_the_dynamic_shift(model_dirs):
    model = load_model(str(model_dirs / "flux"), device="cpu", resolution=128)
    assert model.shift == TimeShift(math.exp(diffusers_calculate_shift(64)), dynamic=True)
    assert f"{model.shift:g}" == f"{math.exp(diffusers_calculate_shift(64)):g} (dynamic)"


def test_sd3_follows_its_scheduler_config(model_dirs):
    """StableDiffusion3Pipeline shifts statically unless the config says use_dynamic_shifting; then mu comes from the
    transformer's token count (h/p)(w/p) (pipeline_stable_diffusion_3.py:1016-1028). Its default sigma grid ends at
    sigma_min, so the pipeline is given slas's linspace(1, 1/T, T)."""
    static = build_backbone(_cfg(model_dirs / "sd3", "sd3", 64))
    assert static.pipeline_shift() == TimeShift(3.0)
    cfg = _cfg(model_dirs / "sd3_dynamic", "sd3", 64)
    bb = build_backbone(cfg)
    bb.module.eval()
    tokens = (8 // 2) ** 2  # 8 x 8 latent, patch size 2
    assert bb.pipeline_shift() == TimeShift(math.exp(diffusers_calculate_shift(tokens)), dynamic=True)
    noise = seeded_noise(SEEDS, bb.sample_shape)
    pipe = StableDiffusion3Pipeline.from_pretrained(model_dirs / "sd3_dynamic", local_files_only=True)
    with torch.no_grad():
        theirs = pipe(prompt=PROMPTS[:2], latents=noise, sigmas=np.linspace(1.0, 1 / STEPS, STEPS).tolist(),
                      num_inference_steps=STEPS, height=64, width=64, guidance_scale=4.5, max_sequence_length=16,
                      output_type="latent").images
    sampler = eval_sampler(bb, cfg, STEPS)
    assert torch.equal(pipe.scheduler.sigmas, sampler.sigmas)
    assert (_latents(bb, sampler, noise) - theirs).abs().max() <= 1e-5
