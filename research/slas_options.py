"""SLAS's open options on real ShapesWorld reward batches, without training: the advantage scale each option gives,
how often ``adv_clip`` binds, how many samples get a zero advantage, and how far the options' advantages disagree.

    .venv/bin/python research/slas_options.py [--checkpoint toy_M | --run RUN] [--batches 8] [--reward toy_score]
        [--lam 4] [--md PATH]

Each batch is one iteration of the default recipe's rollout (``train.prompts_per_iter`` random train-split prompts x
``train.group_size`` samples, the deterministic ``sample.steps`` ODE, fresh noise per sample) from the shipped model
(``--checkpoint``) or a finished run's final weights (``--run``: the trained policy's reward distribution, where many
groups are all-correct). The rewards of every batch go through every estimator and option in ``OPTIONS``
(``slas.algo.advantages.compute_with_stats``, ``advantage.adv_clip`` 5 as in the recipe). Per option, over all
samples of all batches: mean |A| after the clip, its ratio to SLAS at its defaults, the fraction of samples the clip
binds on (|A| > adv_clip before clipping), the fraction with A = 0, the correlation with the default's advantages,
and, for ``train.objective: nft``, the mean optimality probability's distance from 1/2 (``r = clamp(A / r_scale / 2 +
1/2, 0, 1)``: how hard the loss pushes) and the fraction of samples where r saturates at 0 or 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from slas.algo import advantages  # noqa: E402

# name -> (estimator, params); the first is the reference (SLAS at its defaults)
OPTIONS: dict[str, tuple[str, dict]] = {
    "slas (defaults: gamma 1, centered, before, no recenter)": ("slas", {}),
    "slas normalize: after": ("slas", {"normalize": "after"}),
    "slas batch_std_of: rewards": ("slas", {"batch_std_of": "rewards"}),
    "slas recenter: true": ("slas", {"recenter": True}),
    "slas gamma 0.5": ("slas", {"gamma": 0.5}),
    "slas gamma 2": ("slas", {"gamma": 2.0}),
    "grpo (DanceGRPO)": ("grpo", {}),
    "grpo_global_std": ("grpo_global_std", {}),
    "drgrpo": ("drgrpo", {}),
}


def option_rows(batches: list[tuple[torch.Tensor, torch.Tensor]], adv_clip: float = 5.0, r_scale: float = 5.0,
                options: dict[str, tuple[str, dict]] = OPTIONS) -> list[dict]:
    """One dict per option over ``batches`` of (rewards [N] float64, group ids [N]): the quantities of the table."""
    advs, clips = {}, {}
    for name, (est, params) in options.items():
        a, c = [], []
        for r, g in batches:
            raw, _ = advantages.compute_with_stats(est, r, g, adv_clip=None, **params)  # [N] before the clip
            a.append(raw.clamp(-adv_clip, adv_clip))
            c.append(raw.abs() > adv_clip)
        advs[name], clips[name] = torch.cat(a).double(), torch.cat(c)
    ref = advs[next(iter(options))]
    rows = []
    for name, a in advs.items():
        r_opt = (a / r_scale / 2 + 0.5).clamp(0, 1)  # DiffusionNFT's optimality probability (r_map linear)
        nonzero = (a != 0) & (ref != 0)
        corr = float(np.corrcoef(a[nonzero].numpy(), ref[nonzero].numpy())[0, 1]) if nonzero.sum() > 2 else float("nan")
        rows.append({"option": name, "abs_mean": float(a.abs().mean()),
                     "ratio": float(a.abs().mean() / ref.abs().mean()) if ref.abs().mean() > 0 else float("nan"),
                     "clip_frac": float(clips[name].double().mean()), "zero_frac": float((a == 0).double().mean()),
                     "corr": corr, "push": float((r_opt - 0.5).abs().mean()),
                     "r_saturated": float(((r_opt == 0) | (r_opt == 1)).double().mean())})
    return rows


def table(rows: list[dict]) -> list[str]:
    lines = ["| option | mean abs(A) | x defaults | adv_clip binds | A = 0 | corr. with defaults | nft: mean abs(r - 1/2) "
             "| nft: r at 0 or 1 |", "|---|---|---|---|---|---|---|---|"]
    for x in rows:
        lines.append(f"| {x['option']} | {x['abs_mean']:.3f} | {x['ratio']:.2f} | {100 * x['clip_frac']:.1f}% "
                     f"| {100 * x['zero_frac']:.1f}% | {x['corr']:.3f} | {x['push']:.3f} | {100 * x['r_saturated']:.1f}% |")
    return lines


def rollout_batches(backbone, cfg, n_batches: int, reward_fn, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n_batches`` rollouts of the recipe's shape from ``backbone``, scored by ``reward_fn``."""
    from slas.policy.generate import generate
    from slas.toyworld import split

    t, s = cfg.train, cfg.sample
    train = split("train")
    rng = np.random.default_rng(seed)
    out = []
    for b in range(n_batches):
        metas = [train[i] for i in rng.choice(len(train), t.prompts_per_iter, replace=False)]
        prompts = [m["prompt"] for m in metas for _ in range(t.group_size)]
        metas_n = [m for m in metas for _ in range(t.group_size)]
        seeds = [1_000_000 * (b + 1) + i for i in range(len(prompts))]  # distinct from the evaluation's seeds
        images = generate(backbone, prompts, seeds, steps=s.steps, shift=s.shift)
        r = torch.from_numpy(np.asarray(reward_fn(images, prompts, metas_n)["total"], dtype=np.float64))
        out.append((r, torch.arange(t.prompts_per_iter).repeat_interleave(t.group_size)))
        print(f"batch {b + 1}/{n_batches}: reward mean {float(r.mean()):.3f}", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", default="toy_M", help="a shipped ShapesWorld model or checkpoint directory")
    src.add_argument("--run", help="a finished `slas train` run: its final (EMA) weights")
    ap.add_argument("--batches", type=int, default=8, help="rollout batches (iterations' worth of samples)")
    ap.add_argument("--reward", default="toy_score", help="the reward: toy_score (gold) or toy_biased")
    ap.add_argument("--lam", type=float, default=4.0, help="toy_biased's bias weight")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--md", help="also write the table here")
    args = ap.parse_args()
    if args.batches < 1:
        sys.exit("--batches must be >= 1")
    from slas import rewards
    from slas.config import load_config

    cfg = load_config(None)  # the default recipe: its batch shape, rollout, adv_clip and nft r_scale
    if args.run:
        from slas.recipe.run_dir import RunError, load_run

        try:
            backbone = load_run(args.run).backbone
        except (RunError, FileNotFoundError, ValueError) as e:
            sys.exit(f"error: {e}")
    else:
        from slas.toyworld.backbone import ToyBackbone

        backbone = ToyBackbone.from_checkpoint(args.checkpoint)
    options = {"toy_biased": {"lam": args.lam}} if args.reward == "toy_biased" else {}
    try:
        reward_fn = rewards.build({args.reward: 1.0}, options=options)
    except (KeyError, ValueError) as e:
        sys.exit(f"error: {e}")
    torch.set_grad_enabled(False)
    batches = rollout_batches(backbone, cfg, args.batches, reward_fn, args.seed)
    n = sum(len(r) for r, _ in batches)
    head = (f"{args.run or args.checkpoint}, reward {args.reward}{f' lam {args.lam:g}' if options else ''}: "
            f"{args.batches} batches x {cfg.train.prompts_per_iter} prompts x {cfg.train.group_size} = {n} samples, "
            f"adv_clip {cfg.advantage.adv_clip:g}, nft r_scale {cfg.forward.r_scale:g}")
    text = "\n".join([head, "", *table(option_rows(batches, cfg.advantage.adv_clip, cfg.forward.r_scale))]) + "\n"
    print(text)
    if args.md:
        Path(args.md).write_text(text)


if __name__ == "__main__":
    main()
