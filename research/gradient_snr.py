"""How much signal is in one iteration's policy gradient? Cosine between independent estimates.

Draws 8 training prompts, then for each of three seeds rolls out 8 prompts x 8 samples with the
config's sampler (same start noise within a group), scores them, computes GRPO advantages and the
policy gradient at ratio 1 over the config's trainable steps. Two independent estimates of the same
expected gradient have cosine ~ |g|^2 / (|g|^2 + noise^2 / N): near 0 means one iteration's update is
mostly noise (and Adam moves every weight by ~lr anyway), near 1 means it is mostly signal.
A brightness reward (a global, prompt-agnostic direction) is the reference.

    .venv/bin/python research/gradient_snr.py [--rewards bright,toy_score,toy_correct] [--same-prompts 0|1] \
        [config overrides, e.g. sample.noise_pool=8 sample.eta=0.1]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from slas import rewards
from slas.algo import advantages
from slas.algo.samplers import flow_sigmas, flow_step_with_logprob
from slas.algo.samplers.rollout import rollout
from slas.algo.samplers.schedule import step_etas, trainable_steps
from slas.config import load_config
from slas.policy.base import index_cond
from slas.recipe.builders import build_backbone
from slas.toyworld import split

P, G = 8, 8


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rewards", default="bright,toy_score,toy_correct",
                    help="comma-separated; a weighted sum is written toy_score:1+toy_clean:2")
    ap.add_argument("--same-prompts", type=int, default=1, help="1: every estimate uses the same 8 prompts")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = load_config(None, args.overrides)
    s = cfg.sample
    bb = build_backbone(cfg)
    m = bb.module
    params = [p for p in m.parameters() if p.requires_grad]
    train = split("train")
    pid = torch.arange(P).repeat_interleave(G)  # [N]
    sig = flow_sigmas(s.steps, s.shift)  # [T+1]
    steps = trainable_steps(s.steps, s.sde_window, train_last_step=cfg.train.train_last_step)

    def gradient(seed: int, reward: str) -> tuple[torch.Tensor, float]:
        pick = np.random.default_rng(0 if args.same_prompts else 100 + seed).choice(len(train), P, replace=False)
        metas = [train[i] for i in pick]
        cond = bb.encode_prompts([x["prompt"] for x in metas])
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(P, *bb.sample_shape, generator=g).repeat_interleave(G, 0)  # [N, C, H, W]
        m.eval()
        ro = rollout(lambda x, sg, idx: bb.predict(x, sg, index_cond(cond, pid[idx])), noise, sig, family=s.family,
                     eta=step_etas(s.steps, s.sde_window, s.eta), reduce=s.reduce, generator=g, prompt_ids=pid, group_ids=pid,
                     noise_pool=s.noise_pool)
        images = bb.decode(ro.x0)  # [N, H, W, 3]
        mn = [metas[i] for i in pid.tolist()]
        if reward == "bright":
            r = torch.from_numpy(images.astype(np.float64).mean((1, 2, 3)) / 255)
        else:
            weights = {k: float(w) for k, w in (part.split(":") if ":" in part else (part, 1) for part in reward.split("+"))}
            r = torch.from_numpy(rewards.build(weights)(images, [x["prompt"] for x in mn], mn)["total"])
        adv = advantages.compute("grpo", r, pid).float()  # [N]
        m.zero_grad(set_to_none=True)
        n = len(pid)
        for t in steps:
            v = bb.predict(ro.latents[:, t], sig[t].expand(n), index_cond(cond, pid))
            out = flow_step_with_logprob(s.family, v, ro.latents[:, t], sig[t].expand(n), sig[t + 1].expand(n),
                                         eta=s.eta, prev_sample=ro.latents[:, t + 1], reduce=s.reduce,
                                         noise_pool=s.noise_pool)
            (-(adv * out.log_prob).mean() / len(steps)).backward()
        return torch.cat([p.grad.flatten() for p in params]), float(r.mean())

    print(f"sampler {s.family} eta {s.eta} noise_pool {s.noise_pool} sde_window {s.sde_window or 'all'} | "
          f"{'same' if args.same_prompts else 'different'} prompts per estimate | {P}x{G} samples")
    for reward in args.rewards.split(","):
        gs = [gradient(seed, reward) for seed in range(args.seeds)]
        pairs = [(i, j) for i in range(len(gs)) for j in range(i + 1, len(gs))]
        cos = [float(torch.nn.functional.cosine_similarity(gs[i][0], gs[j][0], dim=0)) for i, j in pairs]
        # Adam sees each coordinate divided by its RMS: the same cosine after that per-coordinate scaling
        rms = torch.stack([x[0] for x in gs]).pow(2).mean(0).sqrt().clamp_min(1e-30)
        ncos = [float(torch.nn.functional.cosine_similarity(gs[i][0] / rms, gs[j][0] / rms, dim=0)) for i, j in pairs]
        print(f"{reward:12s} reward {np.mean([x[1] for x in gs]):.3f} | pairwise cos "
              f"{' '.join(f'{c:+.3f}' for c in cos)} | mean {np.mean(cos):+.3f} | per-coordinate-normalised "
              f"mean {np.mean(ncos):+.3f}")


if __name__ == "__main__":
    main()
