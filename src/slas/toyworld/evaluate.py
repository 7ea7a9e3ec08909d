"""GenEval-style evaluation of a ShapesWorld model: ODE samples, verifier, table."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from ..policy.base import Backbone, index_cond
from ..samplers import euler_ode, flow_sigmas
from .verifier import verify
from .world import CANVAS, TAGS

EVAL_STEPS = 20  # Euler steps for evaluation (deterministic ODE)


def seeded_noise(seeds: list[int], shape: tuple[int, ...] = (3, CANVAS, CANVAS)) -> torch.Tensor:
    """[N, *shape] standard normal, one generator per seed, so a sample does
    not depend on its batch or position."""
    g = torch.Generator()
    out = torch.empty(len(seeds), *shape)
    for i, s in enumerate(seeds):
        g.manual_seed(int(s))
        out[i] = torch.randn(*shape, generator=g)
    return out


@torch.no_grad()
def generate(backbone: Backbone, prompts: list[str], seeds: list[int], steps: int = EVAL_STEPS, shift: float = 1.0,
             batch_size: int = 128, progress=None) -> np.ndarray:
    """Deterministic ODE samples for (prompt, seed) pairs: uint8 [N, H, W, 3]."""
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
    sigmas = flow_sigmas(steps, shift)
    uniq = sorted(set(prompts))
    cond_all = backbone.encode_prompts(uniq)
    index = {p: i for i, p in enumerate(uniq)}
    out = []
    for lo in range(0, len(prompts), batch_size):
        idx = torch.tensor([index[p] for p in prompts[lo : lo + batch_size]])
        cond = index_cond(cond_all, idx)
        noise = seeded_noise(seeds[lo : lo + batch_size], backbone.sample_shape)
        x0 = euler_ode(lambda x, s, cond=cond: backbone.predict(x, s, cond), noise, sigmas)
        out.append(backbone.decode(x0))
        if progress is not None:
            progress(len(idx))
    return np.concatenate(out)


def balanced_subset(entries: list[dict], k: int) -> list[dict]:
    """A fixed subset of ``k`` entries taken round-robin over tags (all if k == 0)."""
    if k <= 0 or k >= len(entries):
        return entries
    by_tag: dict[str, list[dict]] = defaultdict(list)
    for e in entries:
        by_tag[e["tag"]].append(e)
    out: list[dict] = []
    i = 0
    while len(out) < k:
        for tag in TAGS:
            if i < len(by_tag[tag]) and len(out) < k:
                out.append(by_tag[tag][i])
        i += 1
    return out


def summarize(results, metas: list[dict]) -> dict:
    """Per-tag strict / GenEval-rule accuracy; overalls are means over tags."""
    by_tag: dict[str, list] = defaultdict(list)
    for r, m in zip(results, metas, strict=False):
        by_tag[m["tag"]].append(r)
    per_tag = {}
    for tag in [t for t in TAGS if t in by_tag]:
        rs = by_tag[tag]
        per_tag[tag] = {
            "strict": float(np.mean([r.correct for r in rs])),
            "geneval": float(np.mean([r.geneval_correct for r in rs])),
            "exact_count": float(np.mean([r.exact_count for r in rs])),
            "score": float(np.mean([r.score for r in rs])),
            "n": len(rs),
        }
    return {
        "overall_strict": float(np.mean([v["strict"] for v in per_tag.values()])),
        "overall_geneval": float(np.mean([v["geneval"] for v in per_tag.values()])),
        "exact_count": float(np.mean([r.exact_count for r in results])),
        "debris": float(np.mean([r.debris > 0 for r in results])),  # fraction of images with any debris
        "gold_score": float(np.mean([r.score for r in results])),
        "n_images": len(results),
        "per_tag": per_tag,
    }


def plan(entries: list[dict], n_per_prompt: int = 1, images_per_tag: int = 0) -> tuple[list[dict], list[int]]:
    """The (metadata, seed) of every image to sample, deterministic.

    Entry ``i`` draws seeds ``entry.get("seed", i) * 100 + k``. With
    ``images_per_tag > 0`` every tag gets exactly that many images, cycling
    over its entries, so a tag with 1 prompt weighs as much, and is measured
    as precisely, as a tag with 100 (the held-out `test` split is very
    unbalanced); otherwise each entry gets ``n_per_prompt`` images.
    """
    metas, seeds = [], []
    indexed = list(enumerate(entries))
    if images_per_tag > 0:
        for tag in TAGS:
            group = [(i, e) for i, e in indexed if e["tag"] == tag]
            for j in range(images_per_tag if group else 0):
                i, e = group[j % len(group)]
                metas.append(e)
                seeds.append(int(e.get("seed", i)) * 100 + j // len(group))
        return metas, seeds
    for i, e in indexed:
        for k in range(n_per_prompt):
            metas.append(e)
            seeds.append(int(e.get("seed", i)) * 100 + k)
    return metas, seeds


def evaluate(backbone: Backbone, entries: list[dict], n_per_prompt: int = 1, steps: int = EVAL_STEPS, shift: float = 1.0,
             batch_size: int = 128, progress=None, images_per_tag: int = 0) -> tuple[dict, np.ndarray, list[dict]]:
    """Sample images for ``entries`` (see ``plan``) with fixed seeds and verify them.

    Returns the summary, the images [N, H, W, 3] and the metadata of each image.
    """
    metas, seeds = plan(entries, n_per_prompt, images_per_tag)
    images = generate(backbone, [m["prompt"] for m in metas], seeds, steps, shift, batch_size, progress)
    results = [verify(img, m) for img, m in zip(images, metas, strict=True)]
    return summarize(results, metas), images, metas


def format_table(summary: dict) -> str:
    lines = [f"{'tag':<15}{'strict':>8}{'geneval':>9}{'exact#':>8}{'n':>6}"]
    for tag, v in summary["per_tag"].items():
        lines.append(f"{tag:<15}{v['strict']:>8.1%}{v['geneval']:>9.1%}{v['exact_count']:>8.1%}{v['n']:>6}")
    lines.append(
        f"{'overall':<15}{summary['overall_strict']:>8.1%}{summary['overall_geneval']:>9.1%}"
        f"{summary['exact_count']:>8.1%}{summary['n_images']:>6}"
    )
    return "\n".join(lines)


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
