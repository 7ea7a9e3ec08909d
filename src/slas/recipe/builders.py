"""The only place that maps config names to objects: backbone, sampler, prompts, rewards, optimizer and learning-rate
schedule, objective."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import torch

from slas import rewards
from slas.algo.samplers import sampler_for
from slas.config import Config, ConfigError
from slas.plugins import get_world, objective_class
from slas.policy import adapter_class
from slas.recipe import pipeline_folder
from slas.recipe.prompts import load_prompts, prompt_line_numbers


def build_backbone(cfg: Config, sharded: bool = False):
    """The adapter named by model.backbone (slas.policy.ADAPTERS), built from the model section; a diffusers folder
    (model.path) is checked first and any failure to load it is one line (slas.recipe.pipeline_folder). ``sharded``
    (dist.strategy fsdp in training): an adapter whose ``from_config`` takes ``meta`` builds its denoiser on the meta
    device, and FSDP2 then reads each rank's shards only (slas.recipe.parallel.ParallelDenoiser)."""
    adapter = adapter_class(cfg.model.backbone)
    kwargs = {"meta": True} if sharded and "meta" in inspect.signature(adapter.from_config).parameters else {}
    if cfg.model.path and Path(cfg.model.path).expanduser().is_dir():
        return pipeline_folder.load(adapter, cfg.model, **kwargs)
    return adapter.from_config(cfg.model, **kwargs)


def build_reward(cfg: Config):
    """The weighted sum of reward.weights (slas.rewards), batched: ``fn(images, prompts, metas) -> {name: [N]}``."""
    return rewards.build(cfg.reward.weights, cfg.reward.batch_size, cfg.reward.options)


def build_optimizer(cfg: Config, params: list[torch.nn.Parameter]):
    """AdamW over ``params`` and its learning-rate schedule (``lr_lambda``, stepped once per optimizer step)."""
    t = cfg.train
    optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))


def build_objective(cfg: Config, **parts):
    """The policy objective named by train.objective (slas.plugins.register_objective), built over ``parts``
    (slas.recipe.objectives.Objective's arguments)."""
    return objective_class(cfg.train.objective)(cfg, **parts)


def build_sampler(cfg: Config, backbone, steps: int):
    """The backbone's sampler (flow SDE for velocity, DDIM for epsilon): schedule + the one step function
    that rollout and re-scoring share."""
    s = cfg.sample
    return sampler_for(backbone.prediction, steps, family=s.family, shift=s.shift, reduce=s.reduce,
                       noise_pool=s.noise_pool, alphas_cumprod=getattr(backbone, "alphas_cumprod", None))


def train_prompts(cfg: Config) -> list[dict]:
    """data.prompts, or the train split of the world data.world (slas.plugins) when it is null; each entry with the
    metadata the rewards need (``prepared``)."""
    if cfg.data.prompts is None:
        return prepared(cfg, get_world(cfg.data.world).prompts("train"), f"world {cfg.data.world!r} train split")
    return prepared(cfg, load_prompts(cfg.data.prompts), "data.prompts", cfg.data.prompts)


def eval_prompts(cfg: Config) -> list[dict] | None:
    """data.eval_prompts (``prepared``), or None when it is null (the world's evaluation)."""
    if not cfg.data.eval_prompts:
        return None
    return prepared(cfg, load_prompts(cfg.data.eval_prompts), "data.eval_prompts", cfg.data.eval_prompts)


def prepared(cfg: Config, entries: list[dict], key: str, path=None) -> list[dict]:
    """``entries`` with the metadata each weighted reward needs (slas.rewards.prepare_metas: e.g. a ShapesWorld text
    prompt parsed into its ``include``), checked when the prompts load, before anything is written. A prompt a reward
    cannot judge is a one-line ConfigError naming the reward, the file and line, and the prompt."""
    out: list[dict] = []
    for k, entry in enumerate(entries):
        try:
            out += rewards.prepare_metas(cfg.reward.weights, [entry["prompt"]], [entry])
        except ValueError as e:
            where = key
            if path is not None:
                lines = prompt_line_numbers(path)
                where = f"{key} {path}:{lines[k]}" if k < len(lines) else f"{key} {path}"
            raise ConfigError(f"{where}: {e}") from None
    return out


def lr_lambda(cfg: Config):
    t = cfg.train
    total = t.iterations * t.updates_per_iter
    warm = t.warmup_iters * t.updates_per_iter

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if t.lr_schedule == "cosine":
            frac = (step - warm) / max(1, total - warm)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
        return 1.0

    return f
