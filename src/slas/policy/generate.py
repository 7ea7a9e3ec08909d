"""The one deterministic generation loop: (prompt, seed) pairs -> images, for every backbone.

Training's held-out evaluation, ``slas sample``, ``slas eval`` and the ShapesWorld evaluations all draw their images
here, so the same (prompt, seed) gives the same image everywhere. The starting noise of a sample is a pure function
of its seed (``seeded_noise``), and the integration is the backbone's own sampler at eta 0 (the Euler ODE for a
velocity backbone, deterministic DDIM for an epsilon one): nothing depends on the batch or the position in it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from slas.algo.samplers import TimeShift, sampler_for
from slas.algo.samplers.rollout import rollout
from slas.policy.base import Backbone, index_cond

# Evaluation seeds are below EVAL_SEED_LIMIT; training draws iteration ``it``'s randomness from a generator seeded
# in [EVAL_SEED_LIMIT, 2**32) (slas.recipe.train.iteration_seed), so an evaluation never sees a training rollout's
# noise. (torch's CPU generator is an mt19937 that reads only the low 32 bits of its seed: the domains must differ
# there, not above 2**32.)
EVAL_SEED_LIMIT = 1 << 31


def seeded_noise(seeds: list[int], shape: tuple[int, ...]) -> Tensor:
    """[N, *shape] standard normal: sample i from a generator seeded with ``seeds[i]`` (0 <= seed <
    ``EVAL_SEED_LIMIT``), so a sample depends on its seed alone."""
    g = torch.Generator()
    out = torch.empty(len(seeds), *shape)
    for i, s in enumerate(seeds):
        if not 0 <= int(s) < EVAL_SEED_LIMIT:
            raise ValueError(f"evaluation seed {s} is outside [0, 2**31): the seeds above are training's")
        g.manual_seed(int(s))
        out[i] = torch.randn(*shape, generator=g)
    return out


def sampling_shift(backbone: Backbone, shift: float | str, fallback: float = 1.0) -> float | TimeShift:
    """The flow time shift of deterministic generation: ``shift`` itself, or for ``"auto"`` the shift the backbone's
    stock diffusers pipeline samples with at its resolution (``Backbone.pipeline_shift``: FLUX.1-dev's dynamic e^mu,
    SD3.5's static 3), else ``fallback`` (a run's sample.shift) for a backbone without one."""
    if shift != "auto":
        return float(shift)
    stock = getattr(backbone, "pipeline_shift", None)
    stock = stock() if stock is not None else None
    return fallback if stock is None else stock


def deterministic_sampler(backbone: Backbone, steps: int, shift: float | TimeShift = 1.0):
    """The backbone's sampler for eta-0 generation: the flow ODE (velocity) or DDIM (epsilon)."""
    epsilon = backbone.prediction == "epsilon"
    return sampler_for(backbone.prediction, steps, family="ddim" if epsilon else "ode", shift=1.0 if epsilon else shift,
                       alphas_cumprod=getattr(backbone, "alphas_cumprod", None))


@torch.no_grad()
def generate(backbone: Backbone, prompts: list[str], seeds: list[int] | None = None, steps: int = 20, *,
             shift: float | TimeShift = 1.0, sampler=None, eta: float = 0.0, noise: Tensor | None = None,
             generator: torch.Generator | None = None, batch_size: int = 128,
             progress: Callable[[int], object] | None = None) -> np.ndarray:
    """uint8 images [N, H, W, 3] of ``prompts`` [N] from ``seeds`` [N] (``seeded_noise``) or the given starting
    ``noise`` [N, ...]. ``sampler``: default ``deterministic_sampler(backbone, steps, shift)``; ``eta`` > 0 with a
    stochastic sampler and ``generator`` draws SDE samples instead. Prompts are encoded once per chunk of
    ``batch_size``; ``progress(k)`` is called after each chunk with its size."""
    if (seeds is None) == (noise is None):
        raise ValueError("generate needs exactly one of seeds or noise")
    n = len(seeds) if seeds is not None else len(noise)
    if len(prompts) != n:
        raise ValueError(f"got {len(prompts)} prompts but {n} seeds")
    sampler = sampler or deterministic_sampler(backbone, steps, shift)
    generator = generator or torch.Generator().manual_seed(0)
    out = []
    for lo in range(0, n, batch_size):
        chunk = prompts[lo : lo + batch_size]
        uniq = list(dict.fromkeys(chunk))
        cond = backbone.encode_prompts(uniq)  # [U, ...]
        pos = {p: i for i, p in enumerate(uniq)}
        pid = torch.tensor([pos[p] for p in chunk])  # [B] row of each sample's prompt in cond
        x = (seeded_noise(seeds[lo : lo + batch_size], backbone.sample_shape) if noise is None
             else noise[lo : lo + batch_size]).to(backbone.device)  # [B, C, H, W]
        ro = rollout(lambda x, t, idx, cond=cond, pid=pid: backbone.predict(x, t, index_cond(cond, pid[idx])), x,
                     sampler, eta=eta, generator=generator, prompt_ids=pid, group_ids=pid, keep_trajectory=False)
        out.append(backbone.decode(ro.x0))
        if progress is not None:
            progress(len(chunk))
    return np.concatenate(out) if out else np.zeros((0, 0, 0, 3), np.uint8)


def grid(images: np.ndarray, ncol: int = 8, pad: int = 2, scale: int = 2) -> np.ndarray:
    """Tile uint8 [N, H, W, 3] into one uint8 image (nearest-neighbour upscaled)."""
    n, h, w, _ = images.shape
    ncol = min(ncol, n)
    nrow = -(-n // ncol)
    h2, w2 = h * scale, w * scale
    out = np.full((nrow * (h2 + pad) + pad, ncol * (w2 + pad) + pad, 3), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        big = img.repeat(scale, 0).repeat(scale, 1)
        out[pad + r * (h2 + pad) : pad + r * (h2 + pad) + h2, pad + c * (w2 + pad) : pad + c * (w2 + pad) + w2] = big
    return out
