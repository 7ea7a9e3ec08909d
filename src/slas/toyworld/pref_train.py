"""Train ``toy_pref``, the learned ShapesWorld reward model, on biased and noisy preference pairs.

``slas toyworld train-pref --out DIR`` regenerates the shipped ``slas/toyworld/checkpoints/toy_pref``:

1. **Samples**: the base model (the shipped ShapesWorld model M) draws groups of ``group`` images per prompt with
   the DanceGRPO flow SDE rollout sampler, every one of 10 steps stochastic at eta 0.5 (what an all-SDE recipe's
   RL scores at iteration 0), each image with its own initial noise. Training data: ``groups_per_prompt`` groups
   for every ``train`` prompt.
   Held out: one fresh group per ``train`` prompt, and one per ``test`` prompt (mostly out-of-domain).
2. **Pairs**: every two images of a group (same prompt) make a pair, ``C(group, 2)`` per group.
3. **Labels**: a simulated annotator prefers the image with the larger utility
   ``u = verify(image).score + BIAS_LAM * saturation(image)`` (the strict partial credit plus the saturation bias
   of ``toy_biased``; a tie is a fair coin), and the label is then flipped with probability ``LABEL_NOISE``.
4. **Model**: ``PrefModel`` trained with the Bradley-Terry loss ``-log sigmoid(r(winner) - r(loser))``, AdamW,
   fixed epochs (no early stopping on the held-out pairs, which only measure), mirrored pairs as augmentation.
5. **Report**: agreement with the verifier on held-out pairs: the fraction of pairs whose strict scores differ in
   which the model ranks the higher-scoring image higher. Written into ``config.json``.

Every random draw comes from a generator seeded by ``seed``, so the result is reproducible for one torch build
and thread count (float sums in a convolution may differ across thread counts).
"""

from __future__ import annotations

import math
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from slas.toyworld.image_stats import saturation
from slas.toyworld.proxies import DEFAULT_LAM, PrefModel, mirror_prompt, pref_scores, save_pref, to_input, tokenize

BIAS_LAM = DEFAULT_LAM  # annotator's saturation bias (the same feature and weight as toy_biased's default)
LABEL_NOISE = 0.15  # probability that a label is flipped
# 6 groups of 4 per train prompt: 2,808 images, 4,212 pairs. In a draft on 1,872 images, 5-10 epochs ranked held-out
# pairs as well as 20-80 did; more epochs only fit the training pairs.
# max_prompts: a tag-balanced subset of each split (0 = all; tests use a few).
DEFAULTS = dict(groups_per_prompt=6, group=4, sample_steps=10, eta=0.5, epochs=10, batch=64, lr=2e-3,
                weight_decay=1e-4, max_prompts=0)


def sample_groups(backbone, prompts: list[str], group: int, seed: int, steps: int, eta: float,
                  chunk: int = 128, log=print) -> np.ndarray:
    """uint8 [len(prompts) * group, H, W, 3]: ``group`` SDE samples of every prompt, prompt-major."""
    from slas.algo.samplers import sampler_for
    from slas.algo.samplers.rollout import rollout
    from slas.policy.base import index_cond

    # fixed here, not read from the config defaults, so that the shipped checkpoint stays reproducible
    sampler = sampler_for(backbone.prediction, steps, family="dance", shift=1.0, reduce="mean", noise_pool=1)
    flat = [p for p in prompts for _ in range(group)]
    out = []
    t0 = time.time()
    for k, lo in enumerate(range(0, len(flat), chunk)):
        batch = flat[lo : lo + chunk]
        g = torch.Generator().manual_seed(seed * 1_000_003 + k)
        cond = backbone.encode_prompts(batch)
        ids = torch.arange(len(batch))
        noise = torch.randn(len(batch), *backbone.sample_shape, generator=g)
        ro = rollout(lambda x, t, idx, cond=cond: backbone.predict(x, t, index_cond(cond, idx)), noise, sampler,
                     eta=eta, generator=g, prompt_ids=ids, group_ids=ids)
        out.append(backbone.decode(ro.x0))
        log(f"  sampled {lo + len(batch)}/{len(flat)} images ({time.time() - t0:.0f} s)")
    return np.concatenate(out)


def group_pairs(n_groups: int, group: int) -> np.ndarray:
    """[n_groups * C(group, 2), 2] image indices of every pair inside a group."""
    within = list(combinations(range(group), 2))
    return np.array([(g * group + i, g * group + j) for g in range(n_groups) for i, j in within], dtype=np.int64)


def annotate(pairs: np.ndarray, score: np.ndarray, sat: np.ndarray, rng: np.random.Generator,
             lam: float = BIAS_LAM, noise: float = LABEL_NOISE) -> np.ndarray:
    """1.0 where the first image of a pair is preferred: the larger ``score + lam * sat``, ties a coin, then
    each label flipped with probability ``noise``."""
    u = score + lam * sat
    du = u[pairs[:, 0]] - u[pairs[:, 1]]
    coin = rng.random(len(pairs)) < 0.5
    label = np.where(du > 0, True, np.where(du < 0, False, coin))
    flip = rng.random(len(pairs)) < noise
    return (label ^ flip).astype(np.float64)


def agreement(r: np.ndarray, score: np.ndarray, pairs: np.ndarray) -> tuple[float, int]:
    """Fraction of pairs with different scores that ``r`` orders like ``score`` (a tie in r counts half), and
    how many such pairs there are."""
    ds = score[pairs[:, 0]] - score[pairs[:, 1]]
    dr = r[pairs[:, 0]] - r[pairs[:, 1]]
    keep = np.abs(ds) > 1e-9
    if not keep.any():
        return math.nan, 0
    hit = np.where(dr[keep] == 0, 0.5, (np.sign(dr[keep]) == np.sign(ds[keep])).astype(np.float64))
    return float(hit.mean()), int(keep.sum())


def fit(images: np.ndarray, prompts: list[str], pairs: np.ndarray, labels: np.ndarray, seed: int, epochs: int,
        batch: int, lr: float, weight_decay: float, log=print) -> PrefModel:
    """Bradley-Terry fit: minimise ``BCE(r(a) - r(b), label)`` over the pairs. Each pair is seen mirrored
    (both images flipped left-right, "left"/"right" swapped in the prompt) with probability 1/2: the verifier's
    judgement is invariant to that, and it doubles the few thousand images."""
    torch.manual_seed(seed)
    model = PrefModel()
    x, ids = to_input(images), tokenize(prompts)  # [M, 3, H, W], [M, L]
    xm, idm = x.flip(-1), tokenize([mirror_prompt(p) for p in prompts])
    p, y = torch.from_numpy(pairs), torch.from_numpy(labels).float()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        order = torch.randperm(len(p), generator=g)
        total = 0.0
        for lo in range(0, len(p), batch):
            b = order[lo : lo + batch]
            both = torch.cat([p[b, 0], p[b, 1]])  # [2B] image indices: winners-or-losers, then the others
            flip = (torch.rand(len(b), generator=g) < 0.5).repeat(2)  # [2B] the same for both images of a pair
            xb = torch.where(flip[:, None, None, None], xm[both], x[both])
            ib = torch.where(flip[:, None], idm[both], ids[both])
            r = model(xb, ib)  # [2B]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(r[: len(b)] - r[len(b):], y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        if (epoch + 1) % 5 == 0 or epoch + 1 == epochs:
            log(f"  epoch {epoch + 1}/{epochs}: Bradley-Terry loss {total / len(p):.4f}")
    return model.eval()


def train_pref(out: str | Path, checkpoint: str | None = None, seed: int = 0, log=print, **overrides) -> dict:
    """Sample, label, fit and write ``out/model.safetensors`` + ``out/config.json``; returns the JSON record."""
    from slas.toyworld import split
    from slas.toyworld.backbone import ToyBackbone
    from slas.toyworld.evaluate import balanced_subset
    from slas.toyworld.verifier import verify

    h = DEFAULTS | overrides
    unknown = sorted(set(h) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown train_pref option(s) {unknown}; accepted: {sorted(DEFAULTS)}")
    t0 = time.time()
    backbone = ToyBackbone.from_checkpoint(checkpoint)
    backbone.module.eval()
    G = h["group"]
    train_p, test_p = (balanced_subset(split(s), h["max_prompts"]) for s in ("train", "test"))
    sets = {  # name -> (metas of the groups, sampling seed)
        "train": ([m for m in train_p for _ in range(h["groups_per_prompt"])], seed),
        "heldout_train_prompts": (train_p, seed + 1),
        "heldout_test_prompts": (test_p, seed + 2),
    }
    data = {}
    for name, (metas, s) in sets.items():
        log(f"{name}: {len(metas)} groups of {G}")
        images = sample_groups(backbone, [m["prompt"] for m in metas], G, s, h["sample_steps"], h["eta"], log=log)
        metas_n = [m for m in metas for _ in range(G)]
        score = np.array([verify(img, m).score for img, m in zip(images, metas_n, strict=True)])
        data[name] = (images, [m["prompt"] for m in metas_n], score, group_pairs(len(metas), G))
    images, prompts, score, pairs = data["train"]
    rng = np.random.default_rng(seed)
    labels = annotate(pairs, score, saturation(images), rng)
    t_fit = time.time()
    model = fit(images, prompts, pairs, labels, seed, h["epochs"], h["batch"], h["lr"], h["weight_decay"], log=log)
    raw = pref_scores(model, images, prompts)
    mean, std = float(raw.mean()), float(raw.std()) or 1.0
    report = {}
    for name, (imgs, ps, sc, pr) in data.items():
        acc, n = agreement(pref_scores(model, imgs, ps), sc, pr)
        report[name] = {"agreement_with_verifier": round(acc, 4), "pairs_with_different_scores": n,
                        "pairs": len(pr)}
        log(f"{name}: agreement with the verifier {acc:.1%} on {n} pairs with different strict scores")
    report["train"]["label_agreement_with_verifier"] = round(_label_agreement(labels, score, pairs), 4)
    info = {
        "norm": {"mean": mean, "std": std},  # toy_pref returns (r - mean) / std: z-scores over the training images
        "labels": {"bias_feature": "saturation", "bias_lam": BIAS_LAM, "label_noise": LABEL_NOISE,
                   "tie": "fair coin"},
        "train": h | {"seed": seed, "base_checkpoint": checkpoint or "shipped toy_M", "pairs": len(pairs),
                      "images": len(images), "fit_s": round(time.time() - t_fit, 1),
                      "wall_time_s": round(time.time() - t0, 1), "torch": torch.__version__,
                      "threads": torch.get_num_threads()},
        "agreement": report,
        "n_params": sum(p.numel() for p in model.parameters()),
    }
    save_pref(model, Path(out), info)
    log(f"wrote {out} ({info['n_params']:,} parameters) in {(time.time() - t0) / 60:.1f} min")
    return info


def _label_agreement(labels: np.ndarray, score: np.ndarray, pairs: np.ndarray) -> float:
    """How often the (biased, noisy) training labels agree with the verifier, on pairs with different scores."""
    ds = score[pairs[:, 0]] - score[pairs[:, 1]]
    keep = np.abs(ds) > 1e-9
    return float(((ds[keep] > 0) == (labels[keep] > 0.5)).mean()) if keep.any() else math.nan
