"""What int8 storage costs a ShapesWorld checkpoint (the shipped L is stored in int8, S and M in fp16).

Loads CHECKPOINT (fp32 weights after loading), stores it both ways, and prints:
- the file sizes and their ratio;
- the relative RMS error of the int8 model's velocity on a fixed noisy batch;
- the verifier on the same prompts and seeds (split ``eval``, one image each) for both: strict accuracy,
  the share of images whose strict verdict changes, and the mean absolute pixel difference.

    .venv/bin/python benchmarks/int8_check.py runs/pretrain_L [--max-prompts 0] [--quantize-all]

Give it an fp16 checkpoint or a pretraining output directory, whose ``state/ema.safetensors`` holds the fp32
weights: an int8 checkpoint alone has already paid the rounding.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from slas.policy.generate import generate, seeded_noise
from slas.toyworld import model as toymodel
from slas.toyworld import split
from slas.toyworld.backbone import ToyBackbone
from slas.toyworld.evaluate import balanced_subset, plan, summarize
from slas.toyworld.verifier import verify
from slas.toyworld.world import CANVAS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--max-prompts", type=int, default=0, help="balanced subset of `eval` (0: all 300)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quantize-all", action="store_true",
                    help="int8 for every matrix and kernel, without the fp16 exceptions (INT8_KEEP, INT8_MIN_NUMEL)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.quantize_all:
        toymodel.INT8_KEEP, toymodel.INT8_MIN_NUMEL = (), 0
    ref = toymodel.load(args.checkpoint)
    ema = toymodel.resolve_checkpoint(args.checkpoint) / "state" / "ema.safetensors"
    if ema.is_file():  # a pretraining output dir: its fp32 EMA is what the final checkpoint was stored from
        from safetensors.torch import load_file

        ref.load_state_dict(load_file(str(ema)))
    elif ref.config.get("weights_dtype") == "int8":
        raise SystemExit(f"{args.checkpoint} is already int8; give the fp16 checkpoint or the pretraining "
                         "directory (with state/ema.safetensors) it was made from")
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {}
        for name, dtype in (("fp16", torch.float16), ("int8", torch.int8)):
            toymodel.save(ref, Path(tmp) / name, dtype=dtype)
            sizes[name] = (Path(tmp) / name / "model.safetensors").stat().st_size
        q = toymodel.load(Path(tmp) / "int8")
        ref = toymodel.load(Path(tmp) / "fp16")  # both sides as shipped: fp16 vs int8 storage
    print(f"{args.checkpoint}: {toymodel.count_parameters(ref):,} parameters")
    print(f"file: fp16 {sizes['fp16'] / 1e6:.1f} MB, int8 {sizes['int8'] / 1e6:.1f} MB "
          f"({sizes['fp16'] / sizes['int8']:.2f}x smaller)")

    entries = balanced_subset(split("eval"), args.max_prompts)
    metas, seeds = plan(entries, 1)
    prompts = [m["prompt"] for m in metas]
    with torch.no_grad():  # one noisy batch at sigmas spread over (0, 1)
        n = min(64, len(prompts))
        x0, noise = (seeded_noise(list(range(n)), (3, CANVAS, CANVAS)).clamp(-1, 1),
                     seeded_noise(list(range(1000, 1000 + n)), (3, CANVAS, CANVAS)))
        sigma = torch.linspace(0.02, 0.98, n)
        x = (1 - sigma.view(-1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1) * noise
        v_ref = ref.velocity(x, sigma, ref.encode(prompts[:n]))
        v_q = q.velocity(x, sigma, q.encode(prompts[:n]))
    rel = float((v_q - v_ref).pow(2).mean().sqrt() / v_ref.pow(2).mean().sqrt())
    print(f"velocity: relative RMS error of int8 vs fp16 {rel:.2e}")

    t0 = time.time()
    out = {}
    for name, m in (("fp16", ref), ("int8", q)):
        images = generate(ToyBackbone(m), prompts, seeds)
        results = [verify(img, meta) for img, meta in zip(images, metas, strict=True)]
        out[name] = (images, np.array([r.correct for r in results]), summarize(results, metas)["overall_strict"])
    (im_a, ok_a, acc_a), (im_b, ok_b, acc_b) = out["fp16"], out["int8"]
    diff = np.abs(im_a.astype(np.int16) - im_b.astype(np.int16)).mean()
    print(f"eval, {len(metas)} images: strict (mean over tags, as `slas toyworld eval`) fp16 {acc_a:.1%}, "
          f"int8 {acc_b:.1%}; "
          f"verdict changed on {np.mean(ok_a != ok_b):.1%}; mean |pixel difference| {diff:.2f} of 255 "
          f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
