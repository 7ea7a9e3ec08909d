"""The only place that maps config names to objects: backbone, sampler, prompts, learning-rate schedule."""

from __future__ import annotations

import math
import random

from slas import rewards
from slas.algo.samplers import sampler_for
from slas.config import Config, ConfigError
from slas.plugins import get_world
from slas.policy import adapter_class
from slas.recipe.prompts import load_prompts, prompt_line_numbers


def build_backbone(cfg: Config):
    """The adapter named by model.backbone (slas.policy.ADAPTERS), built from the model section."""
    return adapter_class(cfg.model.backbone).from_config(cfg.model)


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


class PromptSampler:
    """Epoch-shuffled prompts; the state is one integer (the position)."""

    def __init__(self, prompts: list[dict], seed: int, position: int = 0):
        self.prompts, self.seed, self.position = prompts, seed, position
        self._epoch, self._order = -1, []

    def next(self, k: int) -> list[dict]:
        out = []
        for _ in range(k):
            epoch, i = divmod(self.position, len(self.prompts))
            if epoch != self._epoch:  # the order of an epoch is a pure function of (seed, epoch)
                self._epoch, self._order = epoch, list(range(len(self.prompts)))
                random.Random(self.seed * 7919 + epoch).shuffle(self._order)
            out.append(self.prompts[self._order[i]])
            self.position += 1
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
