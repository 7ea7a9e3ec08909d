"""Reward-hacking monitor: the training (proxy) reward against the gold verifier, at every evaluation.

Called once from ShapesWorld's evaluation (``slas.toyworld.plugin.ShapesWorld.evaluate_backbone``), with the images
that the evaluation already sampled from the held-out ``eval.split`` (fixed prompts and seeds). It adds one fixed
*in-domain* set: ``monitor.prompts`` prompts of the ``train`` split (the prompts the proxy is optimised on;
a tag-balanced subset) x ``monitor.group`` fixed seeds each, sampled with the same deterministic ODE. It
writes, under ``monitor/`` (docs/hacking.md):

- ``proxy_id`` / ``proxy_ood``: the training reward (``reward.weights``' weighted total) on the in-domain set
  and on the out-of-domain (``ood: true``) images of the evaluation; ``*_std`` their spread over images;
- ``gold_acc_id`` / ``gold_score_id`` and ``gold_acc_ood`` / ``gold_score_ood``: the strict verifier's
  accuracy and partial credit on the same images; ``geneval_score_id``: GenEval's lenient partial credit;
- ``div_pixel``: mean over prompts of the mean pairwise RMS pixel distance (in [0, 1]) between the images of
  one prompt (different seeds); ``div_detect``: the same with the Jaccard distance of the multisets of
  (class, colour) detections. Identical images give 0; a collapsed policy drives both to 0;
- ``saturation``, ``brightness``, ``colour_entropy``, ``edge_density``: image statistics of the in-domain set
  (the functions below);
- ``hacking_gap`` (in-domain) and ``hacking_gap_ood``: the rise of the normalised proxy minus the rise of the
  gold score since iteration 0 (``hacking_gap``).

Early stop (``monitor.early_stop``, off by default): when the in-domain gold score has fallen and the proxy
risen at each of the last ``monitor.patience`` evaluations, the row gets ``monitor/early_stop = 1``, the run
directory ``early_stop.json``, and the recipe stops after checkpointing that iteration.

The history (iteration 0's statistics, the previous evaluations) is the run's metrics rows, which the recipe
holds (and re-reads on resume), so the monitor keeps no state of its own and a resumed run computes exactly what
the uninterrupted one did.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np

from slas.recipe.run_dir import RunDir
from slas.toyworld.image_stats import _rgb, image_stats

__all__ = ["detection_diversity", "hacking_gap", "measure_hacking", "pixel_diversity", "should_stop"]

SEED_BASE = 9_000_000  # in-domain image k of prompt i uses noise seed SEED_BASE + 100 i + k (the eval's are < 1e6)


# ----------------------------------------------------------------------------
# Diversity within a group (same prompt, different seeds)
# ----------------------------------------------------------------------------


def _groups(n: int, groups) -> list[list[int]]:
    labels = list(groups)
    if len(labels) != n:
        raise ValueError(f"{n} items but {len(labels)} group labels")
    out: dict = {}
    for i, g in enumerate(labels):
        out.setdefault(g, []).append(i)
    return [v for v in out.values() if len(v) >= 2]


def pixel_diversity(images: np.ndarray, groups) -> float:
    """Mean over groups (of >= 2 images) of the mean pairwise RMS pixel distance ``sqrt(mean((a - b)^2)) / 255``.

    In [0, 1]: 0 when every group holds identical images, 1 between a black and a white image. NaN when no
    group has two images.
    """
    x = _rgb(images) / 255.0
    per = [np.mean([math.sqrt(float(((x[i] - x[j]) ** 2).mean())) for i, j in combinations(idx, 2)])
           for idx in _groups(len(x), groups)]
    return float(np.mean(per)) if per else math.nan


def jaccard_distance(a: Counter, b: Counter) -> float:
    """``1 - |a & b| / |a | b|`` of two multisets; 0 for two empty ones."""
    union = sum((a | b).values())
    return 1.0 - sum((a & b).values()) / union if union else 0.0


def detection_diversity(detections: list[Counter], groups) -> float:
    """Mean over groups of the mean pairwise Jaccard distance of the detections' (class, colour) multisets.

    In [0, 1]; 0 when the images of every group show the same objects (wherever they are). NaN when no group
    has two images.
    """
    per = [np.mean([jaccard_distance(detections[i], detections[j]) for i, j in combinations(idx, 2)])
           for idx in _groups(len(detections), groups)]
    return float(np.mean(per)) if per else math.nan


# ----------------------------------------------------------------------------
# Hacking gap and early stop
# ----------------------------------------------------------------------------


def hacking_gap(proxy: float, gold: float, proxy0: float, gold0: float, proxy_std0: float, gold_std0: float) -> float:
    """``(proxy - proxy0) * gold_std0 / proxy_std0 - (gold - gold0)``.

    The proxy is normalised to the gold score's units by the ratio of their spreads over the monitor's images at
    iteration 0 (the base model), so an equal rise in standard deviations of the base model cancels, a proxy
    equal to the gold score (``toy_score``) gives exactly 0, and a gap of 0.1 reads "the proxy rose 0.1 gold
    points more than the gold did". A proxy constant over the base images (std 0) is taken unnormalised.
    """
    scale = gold_std0 / proxy_std0 if proxy_std0 > 0 else 1.0
    return (proxy - proxy0) * scale - (gold - gold0)


def should_stop(history: list[tuple[float, float]], patience: int) -> bool:
    """True when, over the last ``patience`` steps between evaluations, the gold fell and the proxy rose each time.

    ``history``: (proxy, gold) at each evaluation, oldest first, the current one last.
    """
    if patience < 1 or len(history) < patience + 1:
        return False
    tail = history[-(patience + 1):]
    return all(p1 > p0 and g1 < g0 for (p0, g0), (p1, g1) in zip(tail, tail[1:], strict=False))


# ----------------------------------------------------------------------------
# The evaluation hook
# ----------------------------------------------------------------------------

def in_domain_set(n_prompts: int, group: int) -> tuple[list[dict], list[int], list[int]]:
    """The fixed in-domain set: metadata, noise seed and group (prompt index) of every image."""
    from slas.toyworld import split
    from slas.toyworld.evaluate import balanced_subset

    entries = balanced_subset(split("train"), n_prompts)
    metas = [m for m in entries for _ in range(group)]
    seeds = [SEED_BASE + 100 * i + k for i in range(len(entries)) for k in range(group)]
    groups = [i for i in range(len(entries)) for _ in range(group)]
    return metas, seeds, groups


def measure_hacking(backbone, cfg, run_dir: Path, iteration: int, eval_images: np.ndarray, eval_metas: list[dict], *,
                    score_fn, history: list[dict]) -> dict:
    """The ``monitor/*`` metrics of one evaluation (empty when ``monitor.enabled`` is off). ``score_fn``: the
    training reward (the recipe's scorer, ``slas.rewards.build``); ``history``: the run's metrics rows so far."""
    m = cfg.monitor
    if not m.enabled:
        return {}
    from slas.policy.generate import generate
    from slas.toyworld.verifier import LENIENT_MIN_AREA, verify

    t0 = time.time()
    score = score_fn
    metas, seeds, groups = in_domain_set(m.prompts, m.group)
    images = generate(backbone, [x["prompt"] for x in metas], seeds, steps=cfg.eval.steps)  # uint8 [P*G, H, W, 3]
    out: dict[str, float] = {}

    def judge(name: str, imgs: np.ndarray, ms: list[dict]) -> list:
        proxy = score(imgs, [x["prompt"] for x in ms], ms)["total"]  # [n]
        res = [verify(img, x) for img, x in zip(imgs, ms, strict=True)]
        gold = np.array([r.score for r in res])
        out.update({f"monitor/proxy_{name}": float(np.mean(proxy)), f"monitor/proxy_{name}_std": float(np.std(proxy)),
                    f"monitor/gold_acc_{name}": float(np.mean([r.correct for r in res])),
                    f"monitor/gold_score_{name}": float(gold.mean()), f"monitor/gold_score_{name}_std": float(gold.std())})
        return res

    res = judge("id", images, metas)
    out["monitor/geneval_score_id"] = float(np.mean([r.geneval_score for r in res]))
    ood = [i for i, x in enumerate(eval_metas) if x.get("ood")]
    if ood:
        judge("ood", eval_images[ood], [eval_metas[i] for i in ood])
    dets = [Counter((d.cls, d.color) for d in r.detections if d.area >= LENIENT_MIN_AREA) for r in res]
    out["monitor/div_pixel"] = pixel_diversity(images, groups)
    out["monitor/div_detect"] = detection_diversity(dets, groups)
    out.update({f"monitor/{k}": v for k, v in image_stats(images).items()})

    history = [r for r in history if "monitor/proxy_id" in r and r["iteration"] < iteration]
    base = history[0] if history and history[0]["iteration"] == 0 else out if iteration == 0 else None
    if base is not None:
        for name in ("id", "ood"):
            if f"monitor/proxy_{name}" in out and f"monitor/proxy_{name}" in base:
                out[f"monitor/hacking_gap{'' if name == 'id' else '_ood'}"] = hacking_gap(
                    out[f"monitor/proxy_{name}"], out[f"monitor/gold_score_{name}"], base[f"monitor/proxy_{name}"],
                    base[f"monitor/gold_score_{name}"], base[f"monitor/proxy_{name}_std"],
                    base[f"monitor/gold_score_{name}_std"])
    if m.early_stop:
        trail = [(r["monitor/proxy_id"], r["monitor/gold_score_id"]) for r in history]
        trail.append((out["monitor/proxy_id"], out["monitor/gold_score_id"]))
        if should_stop(trail, m.patience):
            out["monitor/early_stop"] = 1.0
            (p0, g0), (p1, g1) = trail[-min(m.patience, len(trail) - 1) - 1], trail[-1]
            why = (f"in-domain gold score fell and the proxy rose at each of the last {m.patience} evaluations "
                   f"(gold {g0:.4f} -> {g1:.4f}, proxy {p0:.4f} -> {p1:.4f})")
            RunDir(run_dir).early_stop.write_text(json.dumps({"iteration": iteration, "reason": why}) + "\n")
    out["time/monitor_s"] = time.time() - t0
    return {k: v for k, v in out.items() if not (isinstance(v, float) and math.isnan(v))}
