"""GenEval-style evaluation of a ShapesWorld model: ODE samples, verifier, table."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from slas.policy.base import Backbone
from slas.policy.generate import EVAL_SEED_LIMIT, generate
from slas.toyworld.verifier import verify
from slas.toyworld.world import TAGS

EVAL_STEPS = 20  # Euler steps for evaluation (deterministic ODE)
# ``--seed S`` (``plan``'s seed) adds S x SEED_STRIDE to every image's seed. The usual seeds (entry seed x 100 + k; the
# ``eval`` split's entries carry seeds up to 1,234,299) stay below the stride, so the seed sets of two values never
# overlap, and the largest S keeps every seed below EVAL_SEED_LIMIT (slas.policy.generate), which training's rollouts
# never start from.
SEED_STRIDE = 1 << 27  # 134,217,728
MAX_SEED = EVAL_SEED_LIMIT // SEED_STRIDE - 1  # 15


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


def plan(entries: list[dict], n_per_prompt: int = 1, images_per_tag: int = 0,
         seed: int = 0) -> tuple[list[dict], list[int]]:
    """The (metadata, seed) of every image to sample, deterministic.

    Entry ``i`` draws seeds ``entry.get("seed", i) * 100 + k``. With
    ``images_per_tag > 0`` every tag gets exactly that many images, cycling
    over its entries, so a tag with 1 prompt weighs as much, and is measured
    as precisely, as a tag with 100 (the held-out `test` split is very
    unbalanced); otherwise each entry gets ``n_per_prompt`` images.
    ``seed`` S in [0, MAX_SEED] adds S x SEED_STRIDE to every seed: the same
    images of the same prompts under fresh noise (0 = the seeds every
    evaluation so far used).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"the evaluation seed must be an integer in [0, {MAX_SEED}] (it adds seed x {SEED_STRIDE:,} to "
                         f"every image's seed; 0 = the usual seeds), got {seed!r}")
    metas, seeds = [], []
    indexed = list(enumerate(entries))
    if images_per_tag > 0:
        for tag in TAGS:
            group = [(i, e) for i, e in indexed if e["tag"] == tag]
            for j in range(images_per_tag if group else 0):
                i, e = group[j % len(group)]
                metas.append(e)
                seeds.append(int(e.get("seed", i)) * 100 + j // len(group))
    else:
        for i, e in indexed:
            for k in range(n_per_prompt):
                metas.append(e)
                seeds.append(int(e.get("seed", i)) * 100 + k)
    if seed and seeds and max(seeds) >= SEED_STRIDE:
        raise ValueError(f"an evaluation seed other than 0 needs every image's usual seed (entry seed x 100 + image) "
                         f"below {SEED_STRIDE:,}, got {max(seeds):,}")
    return metas, [s + seed * SEED_STRIDE for s in seeds]


def evaluate_shapesworld(backbone: Backbone, entries: list[dict], n_per_prompt: int = 1, steps: int = EVAL_STEPS,
                         shift: float = 1.0, batch_size: int = 128, progress=None,
                         images_per_tag: int = 0, seed: int = 0) -> tuple[dict, np.ndarray, list[dict]]:
    """Sample images for ``entries`` (see ``plan``; ``seed`` 0 = the usual fixed seeds) and verify them.

    Returns the summary, the images [N, H, W, 3] and the metadata of each image.
    """
    metas, seeds = plan(entries, n_per_prompt, images_per_tag, seed)
    images = generate(backbone, [m["prompt"] for m in metas], seeds, steps, shift=shift, batch_size=batch_size,
                      progress=progress)
    results = [verify(img, m) for img, m in zip(images, metas, strict=True)]
    return summarize(results, metas), images, metas


PASS_COLOUR, FAIL_COLOUR = (0, 140, 0), (200, 0, 0)


def _fit(draw, text: str, width: int, font) -> str:
    """``text`` cut (with "...") to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "..."


def _wrap(draw, text: str, width: int, font, lines: int) -> list[str]:
    """``text`` word-wrapped into at most ``lines`` lines of ``width`` pixels, the last one cut to fit."""
    out: list[str] = []
    words = text.split()
    while words and len(out) < lines:
        line = words.pop(0)
        while words and draw.textlength(line + " " + words[0], font=font) <= width:
            line += " " + words.pop(0)
        out.append(line)
    if words:  # more text than lines: the last line ends in "..."
        out[-1] = _fit(draw, out[-1] + " " + " ".join(words) + " ...", width, font)
    return [_fit(draw, ln, width, font) for ln in out]


def verdict_record(meta: dict, result, **extra) -> dict:
    """One image's strict verdict as a JSON-able record: ``extra`` (e.g. image, seed), prompt, correct, reasons."""
    return {**extra, "prompt": meta["prompt"], "tag": meta.get("tag"), "correct": bool(result.correct),
            "reasons": list(result.reasons), "score": float(result.score)}


def labelled_grid(images: np.ndarray, metas: list[dict], results: list, ncol: int = 8, scale: int = 3,
                  pad: int = 6) -> np.ndarray:
    """Tile ShapesWorld images [N, H, W, 3] (uint8) into one uint8 image, each labelled under it with its prompt
    (word-wrapped, cut to two lines; the common "a photo of" dropped) and the strict verifier's mark: a green frame
    and "PASS", or a red frame and "FAIL" with the first reason (``results``: ``verify`` results, one per image).
    The generic, unlabelled tiling is ``slas.policy.generate.grid``."""
    from PIL import Image, ImageDraw, ImageFont

    n, h, w, _ = images.shape
    if not len(metas) == len(results) == n:
        raise ValueError(f"labelled_grid: {n} images, {len(metas)} metadata, {len(results)} results")
    ncol = max(1, min(ncol, n))
    nrow = -(-n // ncol)
    font = ImageFont.load_default()
    cw, ch = w * scale, h * scale
    line_h = 12
    cell_w, cell_h = cw + pad, ch + 3 * line_h + 4 + pad  # image, two prompt lines, the mark
    canvas = Image.new("RGB", (pad + ncol * cell_w, pad + nrow * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (img, meta, res) in enumerate(zip(images, metas, results, strict=True)):
        r, c = divmod(i, ncol)
        x, y = pad + c * cell_w, pad + r * cell_h
        canvas.paste(Image.fromarray(img).resize((cw, ch), Image.NEAREST), (x, y))
        colour = PASS_COLOUR if res.correct else FAIL_COLOUR
        draw.rectangle([x - 2, y - 2, x + cw + 1, y + ch + 1], outline=colour, width=2)
        prompt = meta["prompt"].removeprefix("a photo of ")
        for k, line in enumerate(_wrap(draw, prompt, cw, font, 2)):
            draw.text((x, y + ch + 3 + k * line_h), line, fill="black", font=font)
        mark = "PASS" if res.correct else "FAIL" + (f": {res.reasons[0]}" if res.reasons else "")
        draw.text((x, y + ch + 3 + 2 * line_h), _fit(draw, mark, cw, font), fill=colour, font=font)
    return np.asarray(canvas)


def format_table(summary: dict) -> str:
    """The per-tag table of ``slas toyworld eval``: each strict accuracy with its Wilson 95% interval and its n
    (overall: the mean over tags, its interval that of a proportion over all the images)."""
    from slas.evals.stats import wilson

    def ci(p: float, n: int) -> str:
        lo, hi = wilson(p * n, n)
        return f"[{lo:.1%}, {hi:.1%}]"

    lines = [f"{'tag':<15}{'strict':>8}  {'95% CI (Wilson)':<17}{'geneval':>8}{'exact#':>8}{'n':>6}"]
    for tag, v in summary["per_tag"].items():
        lines.append(f"{tag:<15}{v['strict']:>8.1%}  {ci(v['strict'], v['n']):<17}{v['geneval']:>8.1%}"
                     f"{v['exact_count']:>8.1%}{v['n']:>6}")
    n = summary["n_images"]
    lines.append(f"{'overall':<15}{summary['overall_strict']:>8.1%}  {ci(summary['overall_strict'], n):<17}"
                 f"{summary['overall_geneval']:>8.1%}{summary['exact_count']:>8.1%}{n:>6}")
    return "\n".join(lines)
