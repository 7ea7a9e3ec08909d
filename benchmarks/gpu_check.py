"""The prepared GPU check (run it through benchmarks/gpu_check.sh): the real architectures at their real width on one
GPU, random weights, through ``slas train`` with ``run.log_memory``.

- FLUX.1-dev's transformer at its real width with ``--flux-blocks`` D + S blocks (default 3 + 6, 1.94 B parameters:
  full fine-tuning holds 16 bytes per parameter, 31 GB, and 39 GB inside the optimizer step; more blocks would leave
  nft's training phase, with its old policy and the swapped copy, too close to 80 GB and its checkpoints too slow for
  the 8 minutes), FSDP2 in one process (bf16 MixedPrecisionPolicy, the path of the 8-GPU recipe), gradient
  checkpointing, the real VAE, one-layer text encoders of the real widths;
- the full SD1.4 UNet (860 M), one process (DDP's path without a wrapper), bf16 autocast, CFG in training;
- the reward: a random CLIP of HPS-v2.1's ViT-H-14 size in fp16 on the GPU (``clip_score``), as HPS-v2.1 runs;
- one iteration each of ``ppo_sde`` and ``nft`` at 512 and 720 px: 4 samples (1 prompt x 4), 4 sampler steps,
  12 trained pairs in micro-batches of 4 (DanceGRPO's FLUX ``train.micro_batch``), evaluation of 4 prompts.

For every run it prints the peak CUDA memory of each phase (allocated; reserved; ``run.log_memory``) against
``memory_model.predict_gpu`` of the same setup (fits from ``--fits``, written by benchmarks/memory_real.py), the
iteration's time (rollout + reward + train) and the MFU of the rollout and training phases (benchmarks/throughput.py's
conventions: model FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode``, here on the meta device, over a
bf16 matmul peak measured in this process; the training FLOPs exclude the checkpointing recompute).

    bash benchmarks/gpu_check.sh [--flux-blocks 3 6] [--fits runs/memory_real/results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import memory_model as mm  # noqa: E402
import memory_real  # noqa: E402
import real_arch  # noqa: E402

STEPS, PAIRS, MICRO, N = 4, 3, 4, 4  # sampler steps, trained pairs per sample, micro-batch, samples


def overrides(kind: str, res: int, objective: str, folder: Path, reward: Path, prompts: Path, out: Path) -> list[str]:
    ov = {
        "model.path": folder, "model.resolution": res, "model.device": "cuda", "model.embed_cache": "null",
        "model.lora_rank": 0, "reward.weights": "{clip_score: 1.0}", "reward.batch_size": 32,
        "reward.options": f"{{clip_score: {{model_path: {reward}, device: cuda, dtype: float16}}}}",
        "data.prompts": prompts, "data.eval_prompts": prompts, "sample.steps": STEPS, "sample.batch_size": MICRO,
        "train.prompts_per_iter": 1, "train.group_size": N, "train.micro_batch": MICRO, "train.updates_per_iter": 1,
        "train.timestep_fraction": 1.0, "train.train_last_step": "false", "train.iterations": 1, "eval.every": 0,
        "eval.max_prompts": 4, "eval.steps": STEPS, "run.log_memory": "true", "run.out_dir": out,
    }
    if kind == "flux":
        ov |= {"model.max_sequence_length": 512, "dist.strategy": "fsdp"}
    if objective == "nft":
        ov |= {"train.objective": "nft", "sample.eta": 0, "sample.same_noise_in_group": "false",
               "forward.timesteps": PAIRS}
    return [f"{k}={v}" for k, v in ov.items()]


def setup(kind: str, res: int, objective: str, blocks: tuple[int, int], counts: dict[str, int]) -> mm.Setup:
    """The run in the model's terms: one GPU, its first iteration."""
    frozen = {"vae": 2 * counts["flux_vae"], "reward": 2 * counts["hps_vit_h_14"]}
    if kind == "flux":
        trained, block, root = memory_real.params(memory_real.Variant("flux", *blocks, res))
        shape = (16, res // 8, res // 8)
        return mm.Setup(kind="flux", strategy="fsdp", world=1, objective=objective, trained=trained, gpu=True,
                        depth=sum(blocks), block=block, root=root, ckpt_width=3072, tokens=(res // 16) ** 2 + 512,
                        pixels=res * res,
                        train_images=MICRO, roll_images=MICRO, eval_images=MICRO, decode_images=4,
                        trajectory=N * (STEPS + 1) * shape[0] * shape[1] * shape[2] * 4, frozen=frozen, steady=False)
    cfg = 1 if objective == "nft" else 2
    return mm.Setup(kind="sd", strategy="one", world=1, objective=objective, trained=counts["sd14_unet"], gpu=True,
                    depth=2 * mm.SD_LEVEL_FACTOR, tokens=(res // 8) ** 2, pixels=res * res, train_images=MICRO * cfg,
                    roll_images=2 * MICRO, eval_images=2 * MICRO, decode_images=4,
                    trajectory=N * (STEPS + 1) * 4 * (res // 8) ** 2 * 4, frozen=frozen, autocast_cache=True,
                    steady=False)


def load_fits(path: Path) -> dict[str, dict[str, mm.PhaseFit]] | None:
    """The per-phase fits benchmarks/memory_real.py wrote, or None."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return {kind: {p: mm.PhaseFit(f.pop("const"), f) for p, f in data[kind]["fit"].items()} for kind in ("flux", "sd")}


def flops(kind: str, res: int, blocks: tuple[int, int]) -> tuple[float, float]:
    """(forward FLOPs of one image, forward + backward FLOPs of one image) of the denoiser at ``res``, counted on the
    meta device (shapes only)."""
    from torch.utils.flop_counter import FlopCounterMode

    h = res // 8
    if kind == "flux":
        m = real_arch.build("flux", num_layers=blocks[0], num_single_layers=blocks[1])
        with torch.device("meta"):
            tokens = (h // 2) ** 2
            ids = torch.zeros(tokens, 3)
            inputs = dict(hidden_states=torch.randn(1, tokens, 64), timestep=torch.rand(1),
                          guidance=torch.full((1,), 3.5), pooled_projections=torch.randn(1, 768),
                          encoder_hidden_states=torch.randn(1, 512, 4096), txt_ids=torch.zeros(512, 3), img_ids=ids,
                          return_dict=False)
    else:
        m = real_arch.build("sd14_unet")
        with torch.device("meta"):
            inputs = dict(sample=torch.randn(1, 4, h, h), timestep=torch.tensor([500]),
                          encoder_hidden_states=torch.randn(1, 77, 768), return_dict=False)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        m(**inputs)
    fwd = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        m(**inputs)[0].float().square().mean().backward()
    return fwd, fc.get_total_flops()


def matmul_peak(n: int = 8192, reps: int = 10) -> float:
    """The best bf16 matmul FLOP/s of ``reps`` n^3 products on this GPU."""
    a, b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16), torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    a @ b
    best = float("inf")
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flux-blocks", type=int, nargs=2, default=(3, 6), metavar=("DOUBLE", "SINGLE"))
    ap.add_argument("--fits", type=Path, default=ROOT / "runs" / "memory_real" / "results.json")
    ap.add_argument("--out", type=Path, default=Path("/dev/shm/slas_gpu_check") if Path("/dev/shm").is_dir()
                    else ROOT / "runs" / "gpu_check")
    ap.add_argument("--budget-s", type=float, default=450, help="start no run after this many seconds")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("error: the GPU check needs a CUDA GPU and torch sees none; the CPU's figures come from "
              "benchmarks/memory_real.py", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    os.environ.update(TRANSFORMERS_VERBOSITY="error", DIFFUSERS_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1")
    blocks = tuple(args.flux_blocks)
    counts = real_arch.counts()
    fits = load_fits(args.fits)
    peak = matmul_peak()
    gpu = torch.cuda.get_device_properties(0)
    print(f"{gpu.name}, {gpu.total_memory / mm.GIB:.1f} GiB; bf16 matmul peak measured {peak / 1e12:.0f} TFLOP/s; "
          f"predictions {'from ' + str(args.fits) if fits else 'unavailable (run benchmarks/memory_real.py first)'}")
    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    (out / "models").mkdir(parents=True)
    prompts = out / "prompts.txt"
    prompts.write_text("\n".join(memory_real.PROMPTS) + "\n")
    reward = real_arch.clip_reward(out / "models" / "reward", memory_real.PROMPTS, real=True, dtype=torch.float16)
    folders = {"flux": real_arch.flux_folder(out / "models" / "flux", *blocks, memory_real.PROMPTS),
               "sd": real_arch.sd_folder(out / "models" / "sd", real_arch.SD_LEVELS, 2, memory_real.PROMPTS)}
    print(f"models built: {time.perf_counter() - t0:.0f} s")
    rows = []
    for kind in ("flux", "sd"):
        fwd = {res: flops(kind, res, blocks) for res in (512, 720)}
        for res in (512, 720):
            for objective in ("ppo_sde", "nft"):
                if time.perf_counter() - t0 > args.budget_s:
                    print(f"budget of {args.budget_s:.0f} s spent: {kind} {res} px {objective} not run")
                    continue
                rows.append(run(kind, res, objective, blocks, folders[kind], reward, prompts, out, counts, fits,
                                fwd[res], peak))
    (out / "gpu_check.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{time.perf_counter() - t0:.0f} s in all; {out / 'gpu_check.json'}")
    return 0


def run(kind, res, objective, blocks, folder, reward, prompts, out, counts, fits, fwd, peak) -> dict:
    """One ``slas train`` iteration and its report line."""
    from slas.recipe.metrics import read_metrics

    cfg = ROOT / "configs" / ("flux_dancegrpo.yaml" if kind == "flux" else "sd14_dancegrpo.yaml")
    run_dir = out / f"{kind}_{res}_{objective}"
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "slas", "train", "--no-progress", "--config", str(cfg),
                        *overrides(kind, res, objective, folder, reward, prompts, run_dir)],
                       env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    model = f"FLUX {blocks[0]}+{blocks[1]}" if kind == "flux" else "SD1.4 UNet"
    name = f"{model}, {res} px, {objective}"
    if p.returncode:
        print(f"\n{name}: FAILED after {wall:.0f} s\n{(p.stdout + p.stderr)[-2000:]}")
        return {"name": name, "failed": True}
    r = read_metrics(run_dir)[-1]
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # tens of GB on /dev/shm
    phases = [ph for ph in mm.PHASES if f"memory/{ph}_mib" in r]
    alloc = {ph: r[f"memory/{ph}_mib"] * mm.MIB for ph in phases}
    pred = None
    if fits is not None:
        s = setup(kind, res, objective, blocks, counts)
        pred = mm.predict_gpu(fits[kind], s)
    step_s = r["time/rollout_s"] + r["time/reward_s"] + r["time/train_s"]
    cfg_mult = 2 if kind == "sd" else 1  # the UNet's CFG batch
    rollout_mfu = N * STEPS * cfg_mult * fwd[0] / r["time/rollout_s"] / peak
    train_pairs = N * PAIRS * (1 if objective == "nft" else cfg_mult)
    train_mfu = train_pairs * fwd[1] / r["time/train_s"] / peak
    print(f"\n{name}: {wall:.0f} s wall; iteration {step_s:.1f} s (rollout {r['time/rollout_s']:.1f}, reward "
          f"{r['time/reward_s']:.1f}, train {r['time/train_s']:.1f}); MFU rollout {rollout_mfu:.1%}, train "
          f"{train_mfu:.1%}")
    print("| phase | allocated GiB | reserved GiB | predicted GiB | allocated / predicted |")
    print("|---|---|---|---|---|")
    for ph in phases:
        pr = pred.get(ph) if pred else None
        print(f"| {ph} | {alloc[ph] / mm.GIB:.2f} | {r[f'memory/{ph}_reserved_mib'] / 1024:.2f} | "
              + (f"{pr / mm.GIB:.2f} | {alloc[ph] / pr:.2f} |" if pr else "- | - |"))
    return {"name": name, "wall_s": wall, "step_s": step_s, "rollout_mfu": rollout_mfu, "train_mfu": train_mfu,
            "allocated_gib": {k: v / mm.GIB for k, v in alloc.items()},
            "predicted_gib": {k: v / mm.GIB for k, v in (pred or {}).items()},
            "reserved_gib": {ph: r[f"memory/{ph}_reserved_mib"] / 1024 for ph in phases}}


if __name__ == "__main__":
    sys.exit(main())
