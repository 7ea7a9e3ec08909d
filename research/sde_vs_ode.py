"""How good are the stochastic GRPO rollouts compared with the ODE samples the eval uses?

For the shipped model and the `train` prompts, sample with the DanceGRPO SDE at
several eta (decoding x0_hat of the last step, as the recipe does) and with
eta 0 (= Euler ODE), and print the strict gold rate, the strict partial credit
and the exact-count rate of each. Fixed seeds.

    .venv/bin/python research/sde_vs_ode.py [--steps 10] [--n 256] [--etas 0 0.1 0.3 0.5]
"""

from __future__ import annotations

import argparse
import random

import numpy as np
import torch

from slas.algo.samplers import flow_sigmas
from slas.algo.samplers.rollout import rollout
from slas.policy.base import index_cond
from slas.toyworld import split, verify
from slas.toyworld.backbone import ToyBackbone


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--etas", type=float, nargs="+", default=[0.0, 0.1, 0.3, 0.5])
    args = ap.parse_args()
    bb = ToyBackbone.from_checkpoint()
    rng = random.Random(0)
    metas = [rng.choice(split("train")) for _ in range(args.n)]
    cond = bb.encode_prompts([m["prompt"] for m in metas])
    sig = flow_sigmas(args.steps)
    print(f"{args.n} train prompts, {args.steps} steps; x0_hat of the last step is decoded")
    print(f"{'eta':>5}{'strict':>9}{'score':>8}{'exact#':>8}")
    for eta in args.etas:
        g = torch.Generator().manual_seed(0)
        noise = torch.randn(args.n, *bb.sample_shape, generator=g)
        family = "dance" if eta > 0 else "ode"
        ids = torch.arange(args.n)
        ro = rollout(lambda x, s, idx: bb.predict(x, s, index_cond(cond, idx)), noise, sig, family=family,
                     eta=eta, reduce="mean", generator=g, prompt_ids=ids, group_ids=ids, batch_size=128)
        res = [verify(img, m) for img, m in zip(bb.decode(ro.x0), metas, strict=True)]
        print(f"{eta:>5.2f}{np.mean([r.correct for r in res]):>9.1%}{np.mean([r.score for r in res]):>8.3f}"
              f"{np.mean([r.exact_count for r in res]):>8.1%}")


if __name__ == "__main__":
    main()
