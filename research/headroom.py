"""Is there room to improve the shipped model, and can the GRPO gradient see it?

Part A (headroom). Scale the affine parameters of the UNet's last GroupNorm (``unet.conv_norm_out``, 64
numbers) by ``c``: the predicted velocity grows by about ``c`` at every step (the output conv's bias aside),
so samples are extrapolated away from the noise. Sample ``--n`` train prompts with the Euler ODE (fixed seeds)
and print the strict gold, exact-count and strict partial credit for each ``c``. This is one direction
``u`` in weight space, reachable by any fine-tuning.

Part B (visibility). For ``--batches`` independent iterations of the config's recipe (its sampler, SDE window,
P x G, reward and estimator; default = the shipped default), compute the policy gradient at ratio 1 and
project it on ``u`` (unit vector). The mean over batches is the expected ascent along ``u``; its spread is the
noise of one iteration. ``t = mean / (std / sqrt(batches))``, and ``(2 std / mean)^2`` iterations are needed
before the summed gradient along ``u`` points the right way at 2 sigma. Compare the projection with the
gradient's norm: a gradient that is mostly noise moves every weight (Adam normalises each coordinate), and
leaves ``u`` alone.

    .venv/bin/python research/headroom.py [--n 384] [--scales 1 1.1 1.2 1.3 1.5] [--batches 8] [overrides]
"""

from __future__ import annotations

import argparse
import random

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
from slas.toyworld import split, verify


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=384, help="train prompts (with replacement, fixed) for part A")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.1, 1.2, 1.3, 1.5])
    ap.add_argument("--batches", type=int, default=8, help="independent iterations for part B (0 = skip)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = load_config(None, args.overrides)
    s, t = cfg.sample, cfg.train
    bb = build_backbone(cfg)
    m = bb.module.eval()
    norm = m.unet.conv_norm_out
    w0, b0 = norm.weight.detach().clone(), norm.bias.detach().clone()
    train = split("train")

    # ---- A. headroom along u ------------------------------------------------------------------
    rng = random.Random(0)
    metas = [rng.choice(train) for _ in range(args.n)]
    cond = bb.encode_prompts([x["prompt"] for x in metas])
    ids = torch.arange(args.n)
    print(f"A. {args.n} train prompts, Euler ODE {s.steps} steps; unet.conv_norm_out affine scaled by c")
    print(f"{'c':>5}{'strict':>9}{'exact#':>9}{'score':>8}")
    for c in args.scales:
        with torch.no_grad():
            norm.weight.copy_(w0 * c)
            norm.bias.copy_(b0 * c)
            g = torch.Generator().manual_seed(0)
            noise = torch.randn(args.n, *bb.sample_shape, generator=g)
            ro = rollout(lambda x, sg, idx: bb.predict(x, sg, index_cond(cond, idx)), noise, flow_sigmas(s.steps, s.shift),
                         family="ode", eta=0.0, reduce="mean", generator=g, prompt_ids=ids, group_ids=ids, batch_size=128)
        res = [verify(img, meta) for img, meta in zip(bb.decode(ro.x0), metas, strict=True)]
        print(f"{c:>5.2f}{np.mean([r.correct for r in res]):>9.1%}{np.mean([r.exact_count for r in res]):>9.1%}"
              f"{np.mean([r.score for r in res]):>8.3f}", flush=True)
    with torch.no_grad():
        norm.weight.copy_(w0)
        norm.bias.copy_(b0)
    if args.batches < 1:
        return

    # ---- B. the policy gradient along u -------------------------------------------------------------
    params = [p for p in m.parameters() if p.requires_grad]
    u = [torch.zeros_like(p) for p in params]
    for i, p in enumerate(params):
        if p is norm.weight:
            u[i] = w0.clone()
        elif p is norm.bias:
            u[i] = b0.clone()
    u_norm = torch.sqrt(sum((x * x).sum() for x in u))
    u = [x / u_norm for x in u]  # unit vector: d/dc of the parameters at c = 1, normalised
    P, G = t.prompts_per_iter, t.group_size
    sig = flow_sigmas(s.steps, s.shift)
    steps = trainable_steps(s.steps, s.sde_window, train_last_step=t.train_last_step)
    score = rewards.build(cfg.reward.weights, cfg.reward.batch_size, cfg.reward.options)
    pid = torch.arange(P).repeat_interleave(G)  # [N]
    proj, norms, rew = [], [], []
    for b in range(args.batches):
        pick = np.random.default_rng(1000 + b).choice(len(train), P, replace=False)
        mb = [train[i] for i in pick]
        c_b = bb.encode_prompts([x["prompt"] for x in mb])
        g = torch.Generator().manual_seed(b)
        noise = torch.randn(P, *bb.sample_shape, generator=g).repeat_interleave(G, 0)  # [N, C, H, W]
        m.eval()
        ro = rollout(lambda x, sg, idx, c_b=c_b: bb.predict(x, sg, index_cond(c_b, pid[idx])), noise, sig, family=s.family,
                     eta=step_etas(s.steps, s.sde_window, s.eta), reduce=s.reduce, generator=g, prompt_ids=pid, group_ids=pid)
        mn = [mb[i] for i in pid.tolist()]
        r = torch.from_numpy(score(bb.decode(ro.x0), [x["prompt"] for x in mn], mn)["total"])  # [N]
        adv = advantages.compute(cfg.advantage.estimator, r, pid, adv_clip=cfg.advantage.adv_clip,
                                 **cfg.advantage.params).float()
        m.zero_grad(set_to_none=True)
        n = len(pid)
        for st in steps:  # the recipe's surrogate at ratio 1: -mean(A * log p) over (sample, step) pairs
            v = bb.predict(ro.latents[:, st], sig[st].expand(n), index_cond(c_b, pid))
            out = flow_step_with_logprob(s.family, v, ro.latents[:, st], sig[st].expand(n), sig[st + 1].expand(n),
                                         eta=s.eta, prev_sample=ro.latents[:, st + 1], reduce=s.reduce,
                                         noise_pool=s.noise_pool)
            (-(adv * out.log_prob).mean() / len(steps)).backward()
        ascent = [-(p.grad if p.grad is not None else torch.zeros_like(p)) for p in params]
        proj.append(float(sum((a * x).sum() for a, x in zip(ascent, u, strict=True))))
        norms.append(float(torch.sqrt(sum((a * a).sum() for a in ascent))))
        rew.append(float(r.mean()))
        print(f"B. batch {b}: reward {rew[-1]:.3f} | ascent . u {proj[-1]:+.3e} | |ascent| {norms[-1]:.3e}", flush=True)
    mean, std = float(np.mean(proj)), float(np.std(proj, ddof=1))
    tstat = mean / (std / np.sqrt(len(proj))) if std > 0 else float("nan")
    need = (2 * std / mean) ** 2 if mean != 0 else float("inf")
    print(f"B. {len(proj)} iterations of {P}x{G} ({cfg.advantage.estimator}, {', '.join(cfg.reward.weights)}, "
          f"window {s.sde_window or 'all'}, eta {s.eta}): ascent . u = {mean:+.3e} +- {std:.3e} (t = {tstat:+.2f}); "
          f"|ascent . u| / |ascent| = {np.mean(np.abs(proj)) / np.mean(norms):.2e} (a random direction: "
          f"{1 / np.sqrt(sum(p.numel() for p in params)):.2e}); iterations for a 2-sigma sign along u: {need:.0f} "
          f"({'towards' if mean > 0 else 'away from'} the headroom, c > 1)")


if __name__ == "__main__":
    main()
