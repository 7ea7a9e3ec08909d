"""Evaluation during training: held-out prompts sampled deterministically with fixed noise and scored with the
training reward (``data.eval_prompts``), or the evaluation of the world ``data.world`` (slas.plugins) when there is
none; and the before/after figure of a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from slas.config import Config
from slas.plugins import get_world
from slas.policy.generate import deterministic_sampler, generate, grid, sampling_shift
from slas.recipe.run_dir import RunDir


def evaluate_iteration(backbone, cfg: Config, run_dir: Path, iteration: int, entries: list[dict] | None, score_fn,
                       history: list[dict]) -> dict:
    """One evaluation's ``eval/*`` metrics: of ``entries`` (data.eval_prompts) with the training reward, else the
    world's own protocol."""
    if entries is not None:
        return evaluate_reward(backbone, cfg, run_dir, iteration, entries, score_fn)
    return get_world(cfg.data.world).evaluate_backbone(backbone, cfg, run_dir, iteration, score_fn=score_fn, history=history)


FINAL_LINES = (("eval/gold_accuracy", "held-out strict gold"), ("eval/id/gold_accuracy", "in-domain strict gold"),
               ("eval/exact_count", "held-out exact count"), ("eval/debris", "held-out images with debris"))


def proportion_text(row: dict, key: str) -> str:
    """A logged proportion as printed: ``36.1% [25.9%, 47.6%] (n=72)`` with its Wilson interval when the row holds
    its n (``metrics.PROPORTION_N``), else the bare percentage."""
    from slas.evals.stats import format_proportion
    from slas.recipe.metrics import PROPORTION_N

    n = row.get(PROPORTION_N.get(key, ""))
    return format_proportion(row[key], int(n)) if n else f"{row[key]:.1%}"


def change_lines(first: dict, final: dict) -> list[str]:
    """Training's closing lines: each evaluation proportion at the first and the last evaluation with its n and
    Wilson 95% interval, and whether the change is resolved (``slas.evals.stats.resolved``: at least ``MIN_N``
    images a side and disjoint intervals); an unresolved change is said to be one, never shown as a gain."""
    from slas.evals.stats import MIN_N, format_proportion, resolved
    from slas.recipe.metrics import PROPORTION_N

    lines = []
    for key, what in FINAL_LINES:
        if key not in first or key not in final:
            continue
        a, b, n_key = first[key], final[key], PROPORTION_N[key]
        ia, ib = f", iteration {first['iteration']}", f", iteration {final['iteration']}"
        if n_key not in first or n_key not in final:  # a row without its n: the numbers alone, said so
            lines.append(f"{what}: {a:.1%} ({ia[2:]}) -> {b:.1%} ({ib[2:]}): n unknown, not resolved")
            continue
        na, nb = int(first[n_key]), int(final[n_key])
        line = f"{what}: {format_proportion(a, na, ia)} -> {format_proportion(b, nb, ib)}"
        if min(na, nb) < MIN_N:
            verdict = f"not resolved (n < {MIN_N} images)"
        elif not resolved(a, na, b, nb):
            verdict = "not resolved (the 95% intervals overlap)"
        else:
            verdict = f"{(b - a) * 100:+.1f} points (95% intervals disjoint)"
        lines.append(f"{line}: {verdict}")
    return lines


def before_after(run: RunDir, first: int, last: int) -> bool:
    """Write the evaluation grids of iterations ``first`` and ``last`` (the same prompts and seeds) side by side,
    labelled, as the run's before/after figure; False when either grid is missing."""
    from PIL import Image, ImageDraw

    a, b = run.grid(first), run.grid(last)
    if not (a.is_file() and b.is_file()):
        return False
    ia, ib = Image.open(a).convert("RGB"), Image.open(b).convert("RGB")
    top, gap = 16, 12
    canvas = Image.new("RGB", (ia.width + gap + ib.width, top + max(ia.height, ib.height)), "white")
    canvas.paste(ia, (0, top))
    canvas.paste(ib, (ia.width + gap, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 2), f"before (iteration {first})", fill="black")
    draw.text((ia.width + gap + 2, 2), f"after (iteration {last})", fill="black")
    canvas.save(run.before_after)
    return True


def eval_sampler(backbone, cfg: Config, steps: int):
    """The sampler of held-out evaluation: the backbone's eta-0 sampler at ``eval.shift`` (``auto``: its stock
    pipeline's shift, FLUX.1-dev's dynamic one; else ``sample.shift``), as ``slas eval`` samples a run."""
    return deterministic_sampler(backbone, steps, sampling_shift(backbone, cfg.eval.shift, cfg.sample.shift))


@torch.no_grad()
def evaluate_reward(backbone, cfg: Config, run_dir: Path, iteration: int, entries: list[dict], score_fn,
                    pg=None) -> dict:
    """Held-out deterministic samples (eta = 0: the ODE / DDIM sampler, at eval.shift) of data.eval_prompts with fixed
    noise, scored with the training reward, and a grid of the first ones.

    ``pg`` (slas.recipe.parallel.ProcessGroup, every rank calling): the images are generated collectively over a
    sharded model, each rank its share, and rank 0 scores them ({} elsewhere)."""
    from PIL import Image

    e = cfg.eval
    metas = [m for m in (entries[: e.max_prompts] if e.max_prompts else entries) for _ in range(e.n_per_prompt)]
    images = _generate(backbone, [m["prompt"] for m in metas], e.steps, eval_sampler(backbone, cfg, e.steps),
                       cfg.sample.batch_size or 16, pg)
    if pg is not None and not pg.is_main:
        return {}
    scores = score_fn(images, [m["prompt"] for m in metas], metas)
    paths = RunDir(run_dir)
    paths.samples.mkdir(exist_ok=True)
    shown = images[:32]
    Image.fromarray(grid(shown, ncol=8, scale=2 if shown.shape[1] < 128 else 1)).save(
        paths.grid(iteration))
    out = {"eval/reward_mean": float(np.nanmean(scores["total"]))}
    out.update({f"eval/reward/{name}": float(np.nanmean(scores[name])) for name in cfg.reward.weights})
    return out


def _generate(backbone, prompts: list[str], steps: int, sampler, batch_size: int, pg=None) -> np.ndarray:
    """uint8 [N, H, W, 3] images of ``prompts`` with seeds 0..N-1; over ``pg``'s ranks each generates a contiguous
    share of the same size (the last prompt repeated as padding, so every rank runs the same forwards, as the sharded
    model's all-gathers need) and rank 0 gathers them."""
    n = len(prompts)
    if pg is None or pg.size == 1:
        return generate(backbone, prompts, list(range(n)), steps, sampler=sampler, batch_size=batch_size)
    per = -(-n // pg.size)
    mine = [min(i, n - 1) for i in range(pg.rank * per, (pg.rank + 1) * per)]  # padded with the last prompt
    part = generate(backbone, [prompts[i] for i in mine], mine, steps, sampler=sampler, batch_size=batch_size)
    return pg.gather(torch.from_numpy(part)).numpy()[:n]  # [W * per, H, W, 3] -> [N, H, W, 3]
