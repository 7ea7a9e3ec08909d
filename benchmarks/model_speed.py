"""Forward and forward+backward time of the ShapesWorld model sizes on this machine.

Prints seconds per batch and ratios against size M, plus the ratio of the
space-to-depth (12 x 16 x 16) UNet against the same UNet run at full 32 x 32
resolution, the choice documented in slas/toyworld/model.py.

    .venv/bin/python benchmarks/model_speed.py [--batch 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from slas.toyworld import all_prompts
from slas.toyworld import model as toymodel


def bench(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    prompts = [m["prompt"] for m in all_prompts()][: args.batch]
    prompts = (prompts * (args.batch // len(prompts) + 1))[: args.batch]
    x, sigma = torch.randn(args.batch, 3, 32, 32), torch.rand(args.batch)
    rows = {}
    for size in ("M", "S"):
        m = toymodel.build(size)
        cond = m.encode(prompts)
        cond = {k: v.detach() for k, v in cond.items()}

        def fwd(m=m, cond=cond):
            with torch.no_grad():
                m.velocity(x, sigma, cond)

        def fwd_bwd(m=m, cond=cond):
            m.velocity(x, sigma, cond).pow(2).mean().backward()

        rows[size] = (toymodel.count_parameters(m), bench(fwd, args.repeats), bench(fwd_bwd, args.repeats))
    print(f"batch {args.batch}, {torch.get_num_threads()} threads")
    print(f"{'size':<6}{'params':>12}{'fwd s':>9}{'fwd+bwd s':>11}{'fwd vs M':>10}")
    for size, (n, f, fb) in rows.items():
        print(f"{size:<6}{n:>12,}{f:>9.3f}{fb:>11.3f}{f / rows['M'][1]:>10.2f}")

    # The same UNet layout at full resolution (3 x 32 x 32, no space-to-depth).
    from diffusers import UNet2DConditionModel

    cfg = toymodel.SIZES["M"]
    full = UNet2DConditionModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
                                block_out_channels=cfg["block_out_channels"], down_block_types=cfg["down_block_types"],
                                up_block_types=cfg["up_block_types"], cross_attention_dim=cfg["text_hidden"],
                                attention_head_dim=cfg["heads"], norm_num_groups=8)
    m = toymodel.build("M")
    cond = {k: v.detach() for k, v in m.encode(prompts).items()}

    def fwd_full():
        with torch.no_grad():
            full(x, sigma * 1000, encoder_hidden_states=cond["hidden"], encoder_attention_mask=cond["mask"])

    t_full = bench(fwd_full, args.repeats)
    print(f"M at full 32x32 resolution: fwd {t_full:.3f} s = {t_full / rows['M'][1]:.2f}x the space-to-depth model")


if __name__ == "__main__":
    main()
