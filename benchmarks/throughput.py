"""Throughput of the GRPO engine against the same engine configured DanceGRPO-style, on one ShapesWorld model size.

Both run the real recipe (``slas.recipe.train.train``) for a few iterations on the same config; only the batching differs:

- ``slas``: rollout micro-batch ``sample.batch_size`` 0 (all N samples per forward), ``train.micro_batch`` 64
  (sample, timestep) pairs per forward/backward with per-sample timestep vectors, rewards in batches of 256;
- ``dance`` (DanceGRPO, DanceGRPO train_grpo_flux.py:326-367, 387-432, 571-608): rollout batch 1, one forward/backward per
  (sample, timestep), rewards one image at a time.

Each runs in a fresh process (its own peak RSS); iteration 1 is warm-up, and each phase's time (``time/*`` in
metrics.jsonl) is the minimum over the later iterations (robust to other jobs on a shared machine). FLOPs per
image-step (forward) and per trained pair (forward + backward) are counted with
``torch.utils.flop_counter.FlopCounterMode``; achieved GFLOP/s are compared with a measured fp32 matmul peak (the
best of a few 2048^3 sgemms in this process, same thread count, before and after the runs). ``rollout_mfu`` is the
whole rollout phase (sampler math and decoding included); ``rollout_forward_mfu`` a bare batched forward of the
rollout batch.

    .venv/bin/python benchmarks/throughput.py --model M [--json runs/throughput_M.json] [--extras]

``--extras`` adds the engine with ``model.gradient_checkpointing``, and torch.compile (``model.compile``) measured
on the bare batched forward (rollout) and forward + backward (a train micro-batch): steady-state speedup and the
compile time, which on 2 CPU cores is minutes (the default run stays under 5 minutes for S and M without it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

VARIANTS = {
    "slas": {"sample.batch_size": 0, "train.micro_batch": 64, "reward.batch_size": 256},
    "dance": {"sample.batch_size": 1, "train.micro_batch": 1, "reward.batch_size": 1},
    "ckpt": {"sample.batch_size": 0, "train.micro_batch": 64, "reward.batch_size": 256,
             "model.gradient_checkpointing": "true"},
}


def prompts(args, variant: str) -> int:
    return args.dance_prompts or args.prompts if variant == "dance" else args.prompts


def overrides(args, ckpt: str, out: str, variant: str) -> list[str]:
    ov = {
        "model.checkpoint": ckpt, "run.out_dir": out, "train.iterations": args.iterations,
        "train.prompts_per_iter": prompts(args, variant), "train.group_size": args.group,
        # DanceGRPO's schedule: every step stochastic, 60% of the trainable steps trained per sample
        "sample.steps": args.steps, "sample.sde_window": "[]", "train.timestep_fraction": 0.6,
        "train.updates_per_iter": 2, "reward.weights": "{toy_score: 1.0}",
        # evaluation (iteration 0 and the end) is not timed here: keep it minimal
        "eval.every": 0, "eval.max_prompts": 1, "eval.images_per_tag": 0, "eval.steps": 1,
        "eval.grid_prompts": "[a photo of a red circle]", "monitor.enabled": "false", "run.checkpoint_every": 1000,
    } | VARIANTS[variant]
    return [f"{k}={v}" for k, v in ov.items()]


def child(spec: dict) -> None:
    """One engine run in this process; prints its last iteration's phase times and the peak RSS as JSON."""
    torch.set_num_threads(spec["threads"])
    from slas.config import load_config
    from slas.recipe.metrics import read_metrics
    from slas.recipe.train import train

    t0 = time.perf_counter()
    run = train(load_config(None, spec["overrides"]), progress=False, log=lambda s: None)
    wall = time.perf_counter() - t0
    rows = read_metrics(run)[1:]  # [0]: evaluation
    timed = rows[1:] or rows  # iteration 1 is warm-up (kernel selection for new shapes, allocator)
    keys = ("time/rollout_s", "time/reward_s", "time/train_s")
    print(json.dumps({"times": {k: min(r[k] for r in timed) for k in keys}, "first": {k: rows[0][k] for k in keys},
                      "wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_variant(args, ckpt: str, variant: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec = {"threads": args.threads, "overrides": overrides(args, ckpt, str(Path(tmp) / "run"), variant)}
        out = subprocess.run([sys.executable, __file__, "--_child", json.dumps(spec)], capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
        if out.returncode:
            raise SystemExit(f"{variant} run failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def matmul_peak_gflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def model_flops(model, batch: int) -> tuple[float, float, float]:
    """(forward FLOPs per image, forward + backward FLOPs per image, seconds of one no-grad forward of ``batch``)."""
    from torch.utils.flop_counter import FlopCounterMode

    from slas.toyworld import all_prompts

    prompts = [m["prompt"] for m in all_prompts()]
    prompts = (prompts * (batch // len(prompts) + 1))[:batch]
    with torch.no_grad():
        cond = model.encode(prompts)
    x, sigma = torch.randn(batch, 3, 32, 32), torch.rand(batch)
    two = {k: v[:2] for k, v in cond.items()}
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.velocity(x[:2], sigma[:2], two)
    fwd = fc.get_total_flops() / 2
    with FlopCounterMode(display=False) as fc:
        model.velocity(x[:2], sigma[:2], two).square().mean().backward()
    fwd_bwd = fc.get_total_flops() / 2
    with torch.no_grad():
        model.velocity(x, sigma, cond)  # warm-up (kernel selection for this shape)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            model.velocity(x, sigma, cond)
            best = min(best, time.perf_counter() - t0)
    return fwd, fwd_bwd, best


def compile_gain(model, n: int, micro: int) -> dict:
    """torch.compile of the denoiser (as ``model.compile`` does): steady-state speedup of the rollout forward (B = n,
    no grad) and of a train micro-batch's forward + backward (B = micro), and the seconds the first calls took."""
    from slas.toyworld import all_prompts

    prompts = [m["prompt"] for m in all_prompts()]
    with torch.no_grad():
        cond = model.encode((prompts * (max(n, micro) // len(prompts) + 1))[: max(n, micro)])

    def fwd():
        with torch.no_grad():
            model.velocity(torch.randn(n, 3, 32, 32), torch.rand(n), {k: v[:n] for k, v in cond.items()})

    def fwd_bwd():
        model.velocity(torch.randn(micro, 3, 32, 32), torch.rand(micro),
                       {k: v[:micro] for k, v in cond.items()}).square().mean().backward()

    def best(f):
        f()
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        return min(times)

    eager = (best(fwd), best(fwd_bwd))
    model.unet.compile()
    t0 = time.perf_counter()
    fwd()
    c_fwd = time.perf_counter() - t0
    t0 = time.perf_counter()
    fwd_bwd()
    c_bwd = time.perf_counter() - t0
    compiled = (best(fwd), best(fwd_bwd))
    return {"rollout_forward_speedup": eager[0] / compiled[0], "train_fwd_bwd_speedup": eager[1] / compiled[1],
            "compile_s_rollout_forward": c_fwd, "compile_s_train": c_bwd,
            "eager_s": list(eager), "compiled_s": list(compiled)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["S", "M", "L", "XL"], default="M")
    ap.add_argument("--json", metavar="PATH", help="write the results here")
    ap.add_argument("--prompts", type=int, default=4, help="P prompts per iteration")
    ap.add_argument("--group", type=int, default=8, help="G samples per prompt (N = P x G)")
    ap.add_argument("--dance-prompts", type=int, default=0,
                    help="P of the DanceGRPO-style run (default --prompts). Its throughput does not depend on N "
                         "(every forward is one image), so a smaller P keeps the benchmark short at large --prompts")
    ap.add_argument("--steps", type=int, default=10, help="T sampler steps")
    ap.add_argument("--iterations", type=int, default=3,
                    help="GRPO iterations per run (the first is warm-up; phase times are the minimum over the rest)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    ap.add_argument("--extras", action="store_true", help="also gradient checkpointing and torch.compile")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        return child(json.loads(args._child))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from slas.toyworld import model as toymodel

    t_start = time.perf_counter()
    n, t_steps = args.prompts * args.group, args.steps
    k = max(1, int((t_steps - 1) * 0.6))  # trained steps per sample (the last step is never trained)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "M":  # the shipped, pretrained model: realistic images for the verifier
            ckpt = str(toymodel.default_checkpoint())
            model = toymodel.load()
        else:  # random init (L is not shipped; S stays random as in docs/performance.md): same FLOPs, noise images
            model = toymodel.build(args.model)
            ckpt = str(Path(tmp) / args.model)
            toymodel.save(model, ckpt)
        peak = matmul_peak_gflops()
        fwd, fwd_bwd, t_fwd = model_flops(model, n)
        names = ["slas", "dance"] + (["ckpt"] if args.extras else [])
        res = {v: run_variant(args, ckpt, v) for v in names}
        compiled = compile_gain(model, n, 64) if args.extras else None
        del model
        peak = max(peak, matmul_peak_gflops())

    def rates(r: dict, n: int) -> dict:
        t = r["times"]
        return {
            "rollout_steps_images_per_s": n * t_steps / t["time/rollout_s"],
            "rollout_images_per_s": n / t["time/rollout_s"],
            "train_pairs_per_s": n * k / t["time/train_s"],
            "reward_images_per_s": n / t["time/reward_s"],
            "rollout_gflops": n * t_steps * fwd / t["time/rollout_s"] / 1e9,
            "train_gflops": n * k * fwd_bwd / t["time/train_s"] / 1e9,
            "iteration_s": t["time/rollout_s"] + t["time/reward_s"] + t["time/train_s"],
            "rollout_s": t["time/rollout_s"], "reward_s": t["time/reward_s"], "train_s": t["time/train_s"],
            "peak_rss_mb": r["peak_rss_mb"], "run_wall_s": r["wall_s"],
        }

    out = {v: rates(r, prompts(args, v) * args.group) for v, r in res.items()}
    s, d = out["slas"], out["dance"]
    summary = {
        "model": args.model, "threads": args.threads, "N": n, "N_dance": prompts(args, "dance") * args.group,
        "T": t_steps, "K": k,
        "params": sum(p.numel() for p in toymodel.build(args.model).unet.parameters()),
        "matmul_peak_gflops": peak, "fwd_gflop_per_image_step": fwd / 1e9, "fwd_bwd_gflop_per_pair": fwd_bwd / 1e9,
        "rollout_speedup": s["rollout_steps_images_per_s"] / d["rollout_steps_images_per_s"],
        "train_speedup": s["train_pairs_per_s"] / d["train_pairs_per_s"],
        "reward_speedup": s["reward_images_per_s"] / d["reward_images_per_s"],
        "iteration_speedup": d["iteration_s"] / s["iteration_s"] * n / (prompts(args, "dance") * args.group),
        "rollout_mfu": s["rollout_gflops"] / peak,
        "rollout_forward_mfu": n * fwd / t_fwd / 1e9 / peak,
        "train_mfu": s["train_gflops"] / peak,
        "reward_share_of_iteration": s["reward_s"] / s["iteration_s"],
        "variants": out, "compile": compiled, "benchmark_wall_s": time.perf_counter() - t_start,
    }
    print(f"ShapesWorld {args.model} ({summary['params']:,} UNet params), N={n} (P={args.prompts} x G={args.group}; "
          f"DanceGRPO-style N={prompts(args, 'dance') * args.group}), T={t_steps}, K={k} trained steps/sample, "
          f"{args.threads} threads; fp32 matmul peak {peak:.1f} GFLOP/s")
    cols = list(out)
    print(f"{'':34}" + "".join(f"{c:>12}" for c in cols) + f"{'slas/dance':>12}")
    lines = [("rollout steps x images / s", "rollout_steps_images_per_s", True),
             ("rollout images / s", "rollout_images_per_s", True),
             ("train (sample, t) pairs / s", "train_pairs_per_s", True),
             ("reward images / s", "reward_images_per_s", True),
             ("rollout s / iteration", "rollout_s", False), ("reward s / iteration", "reward_s", False),
             ("train s / iteration", "train_s", False), ("iteration s (3 phases)", "iteration_s", False),
             ("rollout GFLOP/s", "rollout_gflops", True), ("train GFLOP/s", "train_gflops", True),
             ("peak RSS MB", "peak_rss_mb", False)]
    scale = {c: n / (prompts(args, c) * args.group) for c in cols}  # per-iteration times at the engine's N
    for label, key, higher in lines:
        per_iter = key in ("rollout_s", "reward_s", "train_s", "iteration_s")
        vals = {c: out[c][key] * (scale[c] if per_iter else 1) for c in cols}
        ratio = vals["slas"] / vals["dance"] if higher else vals["dance"] / vals["slas"]
        print(f"{label:34}" + "".join(f"{vals[c]:>12.2f}" for c in cols) + f"{ratio:>11.2f}x")
    if scale["dance"] != 1:
        print(f"(DanceGRPO-style per-iteration times scaled from its N={prompts(args, 'dance') * args.group} to N={n})")
    print(f"rollout MFU {summary['rollout_mfu']:.1%} of the measured peak (bare batched forward "
          f"{summary['rollout_forward_mfu']:.1%}), train MFU {summary['train_mfu']:.1%}; rewards are "
          f"{summary['reward_share_of_iteration']:.1%} of the engine's iteration; benchmark "
          f"{summary['benchmark_wall_s']:.0f} s")
    if "ckpt" in out:
        print(f"gradient checkpointing: train {out['ckpt']['train_pairs_per_s'] / s['train_pairs_per_s']:.2f}x the "
              f"pairs/s, peak RSS {out['ckpt']['peak_rss_mb']:.0f} MB vs {s['peak_rss_mb']:.0f} MB")
    if compiled:
        print(f"torch.compile: rollout forward {compiled['rollout_forward_speedup']:.2f}x, train forward+backward "
              f"{compiled['train_fwd_bwd_speedup']:.2f}x, after {compiled['compile_s_rollout_forward']:.0f} s + "
              f"{compiled['compile_s_train']:.0f} s of compiling")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
