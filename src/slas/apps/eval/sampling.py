"""What ``slas eval`` samples: the prompts of a request, and their images drawn deterministically.

Each image's seed comes from its prompt's position (``toyworld.evaluate.plan``), and every backbone samples through
``slas.policy.generate`` with its own sampler at eta 0 (the Euler ODE, or deterministic DDIM), as ``slas toyworld
eval`` and training's evaluation do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slas.apps.eval.models import Model
from slas.apps.eval.options import EvalError, EvalOptions, Progress


def read_prompts_file(path: Path, shapesworld: bool) -> list[dict]:
    """``slas.recipe.prompts.load_prompts``; ShapesWorld models get each text prompt's metadata from the grammar
    (``toyworld.parse``, which names a word it does not know)."""
    from slas.recipe.prompts import load_prompts
    from slas.toyworld import parse

    try:
        entries = load_prompts(path, parse if shapesworld else None)
        return [parse(r["prompt"]) for r in entries] if shapesworld else entries  # the grammar's metadata
    except (ValueError, FileNotFoundError) as e:
        raise EvalError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None


def _prompt_entries(opts: EvalOptions, model: Model) -> list[dict]:
    from slas.toyworld import split
    from slas.toyworld.evaluate import balanced_subset

    if opts.prompts is not None:
        entries = read_prompts_file(opts.prompts, model.shapesworld)
        return entries[: opts.max_prompts] if opts.max_prompts > 0 else entries
    if not model.shapesworld:
        raise EvalError(f"--suite {opts.suite} needs --prompts FILE for a model that is not a ShapesWorld model")
    return balanced_subset(split(opts.split), opts.max_prompts)


@dataclass
class Samples:
    """The images of one request, in sampling order, with what the results and the GenEval folder need."""

    metas: list[dict]  # per image
    seeds: list[int]  # per image
    prompt_ids: list[int]  # per image: index of its entry (GenEval folder NNNNN)
    sample_ids: list[int]  # per image: its number among its prompt's images (samples/NNNN.png)
    images: np.ndarray  # uint8 [N, H, W, 3]
    seconds: float  # wall time of the sampling


def sample(model: Model, entries: list[dict], n_per_prompt: int, images_per_tag: int, steps: int,
           batch_size: int | None, progress: Progress | None, seed: int = 0) -> Samples:
    """``entries`` sampled as ``toyworld.evaluate.plan`` lays them out (fixed seeds, offset by ``seed``), with the
    backbone's own deterministic sampler."""
    from slas.policy.generate import deterministic_sampler, generate
    from slas.toyworld.evaluate import plan

    metas, seeds = plan(entries, n_per_prompt, images_per_tag, seed)
    position = {id(e): i for i, e in enumerate(entries)}  # plan returns the entry objects themselves
    prompt_ids = [position[id(m)] for m in metas]
    seen: dict[int, int] = {}
    sample_ids = []
    for pid in prompt_ids:
        sample_ids.append(seen.get(pid, 0))
        seen[pid] = sample_ids[-1] + 1
    bar = progress(len(metas), "sampling") if progress else None
    t0 = time.perf_counter()
    prompts = [m["prompt"] for m in metas]
    # as training's evaluation draws them: the backbone's own sampler at eta 0 from seeded noise
    images = generate(model.backbone, prompts, seeds, steps, sampler=deterministic_sampler(model.backbone, steps, model.shift),
                      batch_size=batch_size or (128 if model.shapesworld else 8), progress=bar.update if bar else None)
    seconds = time.perf_counter() - t0
    if bar:
        bar.close()
    return Samples(metas, seeds, prompt_ids, sample_ids, images, seconds)


def sample_for(opts: EvalOptions, model: Model, progress: Progress | None) -> tuple[Samples, dict]:
    """The samples of a request (its prompts, images per prompt or per tag, steps) and the settings that reproduce
    them, for the summary."""
    entries = _prompt_entries(opts, model)
    if opts.images_per_tag > 0 and not all(e.get("tag") for e in entries):
        raise EvalError("--images-per-tag cycles over each tag's prompts: every prompt needs a GenEval 'tag'")
    n = opts.n_per_prompt or 1
    steps = opts.steps or model.steps
    s = sample(model, entries, n, opts.images_per_tag, steps, opts.batch_size, progress, opts.seed)
    info = {"model": model.description, "prompts": str(opts.prompts) if opts.prompts else f"ShapesWorld {opts.split}",
            "n_prompts_sampled": len(entries), "n_per_prompt": n, "images_per_tag": opts.images_per_tag,
            "max_prompts": opts.max_prompts, "steps": steps, "sample_s": s.seconds,
            "sampler": sampler_name(model), "seed": opts.seed}
    return s, info


def sampler_name(model: Model) -> str:
    """The sampler ``sample`` uses for ``model``, as the summary names it."""
    if model.shapesworld:
        return "Euler ODE, shift 1 (slas.policy.generate)"
    if model.backbone.prediction == "epsilon":
        return "DDIM, eta 0"
    return f"Euler ODE, shift {model.shift:g}"
