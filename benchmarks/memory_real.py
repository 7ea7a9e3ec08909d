"""FLUX.1-dev and SD1.4 at their real widths through the real recipe: per-phase peak memory measured on the CPU, a
fitted memory model, and the predicted per-GPU peak of the paper's recipes (docs/real-models.md).

1. The published configs (benchmarks/configs/, ``real_arch``) are counted on the meta device.
2. Real-width, reduced-depth models with random weights (``real_arch.flux_folder`` / ``sd_folder``: FLUX with 1-3
   single blocks, SD1.4's two outer levels with 1-3 layers; the real VAEs; one-layer text encoders of the real output
   widths) are trained for one iteration of ``ppo_sde`` (and, without ``--quick``, of ``nft``) by ``slas train``
   under ``torchrun --nproc_per_node 2`` (gloo, fp32), FLUX with FSDP2 and gradient checkpointing as
   configs/flux_dancegrpo.yaml, SD with DDP as configs/sd14_dancegrpo.yaml, at reduced resolution, token count and
   batch, with ``run.log_memory``: every phase's peak resident set, the larger of the two processes.
3. ``memory_model.fit`` fits each phase on the shallower variants; the deepest (FLUX 0+3, SD 3 layers) is predicted
   from them and measured: the fit error is the larger relative error of its peak.
4. ``memory_model.predict_gpu`` evaluates the fit for the GPU recipes, in bf16 under FSDP2's MixedPrecisionPolicy
   (module docstring of memory_model.py: which terms are fp32, which scale with the compute dtype, the margins).
5. Without ``--quick``: the communication of the sharded gradients, FSDP2 reduce-scattering every micro-batch
   against the accumulation it replaced (one reduce-scatter per optimizer step, ``set_requires_gradient_sync``),
   counted and timed in the recipe (``dist.reduce_scatter_single``), and the checkpoint load of a resumed run.

    .venv/bin/python benchmarks/memory_real.py --quick            # 7 runs, about 12 minutes on 2 busy cores
    .venv/bin/python benchmarks/memory_real.py                    # every run, about 45 minutes
    .venv/bin/python benchmarks/memory_real.py --comm-only        # step 5's communication alone: 2 runs
    .venv/bin/python benchmarks/memory_real.py --against TREE     # FLUX 0+1 per phase with TREE's slas, then this one's

The last line: ``flux-dev full W=8: A GiB/GPU | flux-dev lora r128 W=1: B GiB | sd14 full W=1: C GiB | fit error: E%``.
Everything lands in ``--out`` (models, runs, results.json); models are built once and reused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import memory_model as mm  # noqa: E402
import real_arch  # noqa: E402

PROMPTS = ["a photo of a red cat", "a blue dog on a green mat", "two yellow birds", "a white circle left of a square"]
TARGETS = {"flux_full": 70, "flux_lora": 70, "sd_full": 40, "fit": 10}  # GiB, GiB, GiB, %
CPU = dict(world=2, prompts=2, group=2, steps=2, micro_batch=4, batch=2)  # N = 4 samples, 2 per process, 4 pairs


@dataclass(frozen=True)
class Variant:
    """FLUX: ``a`` double + ``b`` single blocks; SD: the first ``a`` levels with ``b`` layers each; at ``res`` px
    (FLUX: ``seq`` T5 tokens)."""

    kind: str
    a: int
    b: int
    res: int
    seq: int = 0

    @property
    def model(self) -> str:
        return f"flux_{self.a}_{self.b}" if self.kind == "flux" else f"sd_{self.a}x{self.b}"

    @property
    def name(self) -> str:
        return f"{self.model}_{self.res}px"

    @property
    def label(self) -> str:
        depth = f"{self.a}+{self.b} blocks" if self.kind == "flux" else f"{self.a} levels x {self.b} layers"
        return f"{self.kind.upper()} {depth}, {self.res} px" + (f", {self.seq} text tokens" if self.seq else "")


FLUX_FIT = [Variant("flux", 0, 1, 64, 16), Variant("flux", 0, 2, 64, 16), Variant("flux", 0, 1, 192, 32),
            Variant("flux", 0, 2, 192, 32)]
FLUX_CHECK = Variant("flux", 0, 3, 64, 16)
SD_FIT = [Variant("sd", 2, 1, 128), Variant("sd", 2, 2, 128), Variant("sd", 2, 1, 192), Variant("sd", 2, 2, 192)]
SD_CHECK = Variant("sd", 2, 3, 128)


# ----------------------------------------------------------------------------
# Runs of the recipe
# ----------------------------------------------------------------------------


def overrides(v: Variant, objective: str, folder: Path, reward: Path, prompts: Path, out: Path) -> list[str]:
    """The shipped DanceGRPO config of ``v.kind`` at the CPU's sizes (``CPU``), full fine-tuning, one iteration."""
    ov = {
        "model.path": folder, "model.resolution": v.res, "model.device": "cpu", "model.embed_cache": "null",
        "model.lora_rank": 0, "reward.weights": "{clip_score: 1.0}", "reward.batch_size": 8,
        "reward.options": f"{{clip_score: {{model_path: {reward}}}}}", "data.prompts": prompts,
        "data.eval_prompts": prompts, "sample.steps": CPU["steps"], "sample.batch_size": CPU["batch"],
        "train.prompts_per_iter": CPU["prompts"], "train.group_size": CPU["group"],
        "train.micro_batch": CPU["micro_batch"], "train.updates_per_iter": 1, "train.timestep_fraction": 1.0,
        "train.train_last_step": "true", "train.iterations": 1, "eval.every": 0, "eval.max_prompts": CPU["world"],
        "eval.steps": 1, "run.log_memory": "true", "run.out_dir": out, "run.checkpoint_every": 1,
    }
    if v.kind == "flux":
        ov |= {"model.max_sequence_length": v.seq, "dist.strategy": "fsdp"}
    if objective == "nft":  # docs/real-models.md: the forward-process objectives on a real backbone
        ov |= {"train.objective": "nft", "sample.eta": 0, "sample.same_noise_in_group": "false",
               "forward.timesteps": CPU["steps"]}
    return [f"{k}={val}" for k, val in ov.items()]


def launch(argv: list[str], comm: Path | None = None, sync_once: bool = False, timeout: float = 3600,
           src: Path = ROOT / "src") -> float:
    """``slas <argv>`` (the package in ``src``) under ``torchrun --nproc_per_node 2`` through this file's child mode;
    returns the wall seconds. A failed run raises with the end of its log."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(CPU["world"]),
           "--master_port", str(29500 + os.getpid() % 1000), str(Path(__file__).resolve()), "--child"]
    cmd += ["--comm", str(comm)] if comm else []
    cmd += ["--sync-once"] if sync_once else []
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    t0 = time.perf_counter()
    p = subprocess.run([*cmd, "--", *argv], env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode:
        raise RuntimeError(f"slas {' '.join(argv[:3])} ... failed:\n{(p.stdout + p.stderr)[-3000:]}")
    return time.perf_counter() - t0


def measured(run: Path, resumed: bool = False) -> dict[str, float]:
    """Each phase's peak in bytes, the larger of the two processes: ``load`` and (resumed) ``resume`` from the first
    row this process wrote, every other phase from the trained iteration's row."""
    from slas.recipe.metrics import read_metrics

    rows = read_metrics(run)
    first, last = rows[0], rows[-1]
    out = {p: last[f"memory/{p}_max_mib"] * mm.MIB for p in mm.PHASES if f"memory/{p}_max_mib" in last}
    out.pop("resume", None)
    if not resumed:
        out["load"] = first["memory/load_max_mib"] * mm.MIB
    else:
        out["resume"] = last["memory/resume_max_mib"] * mm.MIB
    return out


# ----------------------------------------------------------------------------
# The setups of the model
# ----------------------------------------------------------------------------


def params(v: Variant) -> tuple[int, int, int]:
    """(trained parameters, the largest block's, the parameters outside the blocks) of the variant's denoiser."""
    if v.kind == "flux":
        m = real_arch.build("flux", num_layers=v.a, num_single_layers=v.b)
        blocks = [real_arch.n_params(b) for b in [*m.transformer_blocks, *m.single_transformer_blocks]]
        return real_arch.n_params(m), max(blocks), real_arch.n_params(m) - sum(blocks)
    return real_arch.n_params(real_arch.build("sd14_unet", **real_arch.sd_overrides(v.a, v.b))), 0, 0


def cpu_setup(v: Variant, objective: str, steady: bool = False) -> mm.Setup:
    """The CPU run of ``v`` in the model's terms (fp32, 2 processes, ``CPU``'s batch)."""
    trained, block, root = params(v)
    n, mb, b = CPU["prompts"] * CPU["group"] // CPU["world"], CPU["micro_batch"], CPU["batch"]
    if v.kind == "flux":
        tokens, cfg, shape = (v.res // 16) ** 2 + v.seq, 1, (16, v.res // 8, v.res // 8)
    else:  # the UNet's CFG batch: both branches, in training too (cfg_detach_uncond false); nft trains CFG-free
        tokens, cfg, shape = (v.res // 8) ** 2, 2, (4, v.res // 8, v.res // 8)
    traj = n * (CPU["steps"] + 1) * shape[0] * shape[1] * shape[2] * 4
    return mm.Setup(kind=v.kind, strategy="fsdp" if v.kind == "flux" else "ddp", world=CPU["world"],
                    objective=objective, trained=trained, gpu=False, depth=v.a + v.b if v.kind == "flux" else v.b,
                    block=block, root=root, ckpt_width=3072 if v.kind == "flux" else 0, tokens=tokens,
                    pixels=v.res**2, train_images=mb * (1 if objective == "nft" else cfg),
                    roll_images=b * cfg, eval_images=cfg, decode_images=min(n, 4), trajectory=traj, steady=steady)


def gpu_setups(counts: dict[str, int]) -> dict[str, mm.Setup]:
    """The three recipes of the final line, one GPU's share: configs/flux_dancegrpo.yaml (W=8, full), the same with
    DanceGRPO's LoRA r128 on one GPU, configs/sd14_dancegrpo.yaml on one GPU; HPS-v2.1 in fp16 on the GPU
    (reward.options.hps.device cuda), the VAE in bf16, the text encoders offloaded (model.text_encoder_offload) and
    brought over in bf16 to encode."""
    hps = {"vae": 2 * counts["flux_vae"], "hps": 2 * counts["hps_vit_h_14"]}
    hps_act = 24 * 257 * 5120 * 2 * 3  # ViT-H-14 scoring 24 images at 224 px: the widest no-grad tensors, fp16
    flux_tokens, flux_px = 45 * 45 + 512, 720 * 720  # 720 px: 90 x 90 latent packed 2 x 2; T5 512 tokens
    t5 = 2 * (counts["t5_xxl"] + counts["clip_l"]) + 16 * 512 * (2 * 4096 + 10240) * 2  # + 16 prompts' activations
    flux = mm.Setup(kind="flux", strategy="fsdp", world=8, objective="ppo_sde", trained=counts["flux"], gpu=True,
                    depth=57, block=counts["flux_double_block"], root=counts["flux_outside_blocks"],
                    ckpt_width=3072, tokens=flux_tokens,
                    pixels=flux_px, train_images=4, roll_images=4, eval_images=4, decode_images=4,
                    trajectory=24 * 17 * 16 * 90 * 90 * 4, frozen=hps, encode=t5, reward=hps_act)
    lora = mm.Setup(kind="flux", strategy="one", world=1, objective="ppo_sde", trained=counts["flux_lora128"],
                    gpu=True, depth=57, frozen_base=counts["flux"], ckpt_width=3072, tokens=flux_tokens,
                    pixels=flux_px, train_images=4,
                    roll_images=4, eval_images=4, decode_images=4, trajectory=192 * 17 * 16 * 90 * 90 * 4,
                    frozen=hps, encode=t5, reward=hps_act, autocast_cache=True)
    sd = mm.Setup(kind="sd", strategy="one", world=1, objective="ppo_sde", trained=counts["sd14_unet"], gpu=True,
                  depth=2 * mm.SD_LEVEL_FACTOR, tokens=64 * 64, pixels=512 * 512, train_images=8, roll_images=8,
                  eval_images=8, decode_images=4, trajectory=512 * 51 * 4 * 64 * 64 * 4,
                  frozen={"vae": 2 * counts["flux_vae"], "hps": 2 * counts["hps_vit_h_14"]},
                  encode=2 * counts["clip_l"] + 32 * 77 * 3072 * 2, reward=hps_act, autocast_cache=True)
    return {"flux_full": flux, "flux_lora": lora, "sd_full": sd}


# ----------------------------------------------------------------------------
# The child: slas under torchrun, instrumented
# ----------------------------------------------------------------------------


def child(comm: str | None, sync_once: bool, argv: list[str]) -> int:
    """Run ``slas <argv>`` in this torchrun process. ``comm``: count and time FSDP2's reduce-scatters and all-gathers
    (calls, bytes of the unsharded tensor, seconds) into ``comm.<rank>.json``. ``sync_once``: the gradient
    accumulation the sharded path replaced, for the comparison only (one reduce-scatter per optimizer step, full-size
    unsharded gradients held between micro-batches)."""
    import torch.distributed as dist

    stats: dict[str, list[float]] = {}

    def counted(name: str, unsharded: int):
        fn = getattr(dist, name)

        def call(*args, **kwargs):
            t0 = time.perf_counter()
            work = fn(*args, **kwargs)
            if work is not None:
                work.wait()
            t = (list(args) + [kwargs.get("output"), kwargs.get("input")])[unsharded]
            s = stats.setdefault(name, [0, 0, 0.0])
            s[0], s[1], s[2] = s[0] + 1, s[1] + t.numel() * t.element_size(), s[2] + time.perf_counter() - t0
            return work

        setattr(dist, name, call)

    if comm:
        counted("reduce_scatter_single", 1)  # (output, input): the input is the unsharded gradient
        counted("all_gather_single", 0)  # (output, input): the output is the unsharded parameter
    if sync_once:
        from slas.recipe.parallel import ParallelDenoiser

        def accumulate(self, sync: bool):  # the accumulation before the sharded path (git history of parallel.py)
            if self.sharded:
                self.denoiser.set_requires_gradient_sync(sync)
            yield

        ParallelDenoiser.accumulate = contextlib.contextmanager(accumulate)
    from slas.apps.cli import main

    code = main(argv)
    if comm:
        Path(f"{comm}.{os.environ.get('RANK', '0')}.json").write_text(json.dumps(stats))
    return code


# ----------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------


def gib(b: float) -> str:
    return f"{b / mm.GIB:.2f}"


def phase_table(title: str, rows: dict[str, dict[str, float]], unit: str = "GiB") -> None:
    """Rows (name -> {phase: bytes}) as a markdown table, phases in the recipe's order, and each row's peak."""
    phases = [p for p in mm.PHASES if any(p in r for r in rows.values())]
    print(f"\n{title} ({unit})\n")
    print("| | " + " | ".join(phases) + " | peak |")
    print("|---" * (len(phases) + 2) + "|")
    for name, r in rows.items():
        cells = [gib(r[p]) if p in r else "" for p in phases]
        print(f"| {name} | " + " | ".join(cells) + f" | **{gib(max(r.values()))}** |")


def rel_error(pred: dict[str, float], meas: dict[str, float]) -> tuple[float, float]:
    """(error of the peak, largest error of a phase), in % of the measurement."""
    peak = abs(max(pred[p] for p in meas) - max(meas.values())) / max(meas.values()) * 100
    return peak, max(abs(pred[p] - meas[p]) / meas[p] * 100 for p in meas)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="ppo_sde only, 3 + 3 fitted variants and the 2 checks")
    ap.add_argument("--comm-only", action="store_true",
                    help="only the gradients' communication: every micro-batch against once per step (2 runs)")
    ap.add_argument("--against", type=Path, metavar="TREE",
                    help="before / after: FLUX 0+1 at 64 px (ppo_sde, nft) run with the slas of the checkout TREE, "
                         "then with this one's (4 runs)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "memory_real")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--comm", help=argparse.SUPPRESS)
    ap.add_argument("--sync-once", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("argv", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sys.exit(child(args.comm, args.sync_once, args.argv))
    t_start = time.perf_counter()
    os.environ.update(TRANSFORMERS_VERBOSITY="error", DIFFUSERS_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1")
    counts = real_arch.counts()
    print("parameters, counted on the meta device from benchmarks/configs/ (millions):")
    for k, v in counts.items():
        print(f"  {k:22s} {v / 1e6:10.2f}")

    out = args.out
    (out / "models").mkdir(parents=True, exist_ok=True)
    prompts = out / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    reward = out / "models" / "clip"
    if not reward.is_dir():
        real_arch.clip_reward(reward, PROMPTS)

    def folder(v: Variant) -> Path:
        path = out / "models" / v.model
        if not (path / "model_index.json").is_file():
            shutil.rmtree(path, ignore_errors=True)
            build = real_arch.flux_folder if v.kind == "flux" else real_arch.sd_folder
            build(path, v.a, v.b, PROMPTS)
        return path

    def run(v: Variant, objective: str, tag: str = "", **kw) -> tuple[dict[str, float], float, Path]:
        cfg = ROOT / "configs" / ("flux_dancegrpo.yaml" if v.kind == "flux" else "sd14_dancegrpo.yaml")
        run_dir = out / "runs" / f"{v.name}_{objective}{tag}"
        shutil.rmtree(run_dir, ignore_errors=True)
        ov = overrides(v, objective, folder(v), reward, prompts, run_dir) + kw.pop("extra", [])
        wall = launch(["train", "--no-progress", "--config", str(cfg), *ov], **kw)
        print(f"  {v.label}, {objective}{tag}: {wall:.0f} s", flush=True)
        if (v, objective, tag) != (FLUX_FIT[0], "ppo_sde", ""):  # that one is resumed (without --quick)
            shutil.rmtree(run_dir / "checkpoints")  # GBs each
        return measured(run_dir), wall, run_dir

    run.out = out
    if args.against:
        before_after(args.against.resolve(), out, folder(FLUX_FIT[0]), reward, prompts)
        return
    if args.comm_only:
        comm_cost(run, counts)
        return
    fit_sets = {"flux": (FLUX_FIT[:3] if args.quick else FLUX_FIT, FLUX_CHECK),
                "sd": (SD_FIT[:3] if args.quick else SD_FIT, SD_CHECK)}
    objectives = ["ppo_sde"] if args.quick else ["ppo_sde", "nft"]
    print(f"\nruns (2 processes each, gloo, fp32; {out / 'runs'}):")
    results, fits, errors, dirs = {}, {}, {}, {}
    for kind, (fit_vs, check) in fit_sets.items():
        data = {}
        for v in fit_vs:
            for o in ["ppo_sde"] if v.res != fit_vs[0].res else objectives:
                data[v, o], _, dirs[v, o] = run(v, o)
        fits[kind] = mm.fit([(cpu_setup(v, o), m) for (v, o), m in data.items() if o == "ppo_sde"])
        check_m = {o: run(check, o)[0] for o in objectives}
        table = {f"{v.label}, {o}": m for (v, o), m in data.items()}
        for o, m in check_m.items():
            pred = mm.predict_cpu(fits[kind], cpu_setup(check, o))
            table[f"**{check.label}, {o}** (check)"] = m
            table[f"predicted from the fit, {o}"] = {p: pred[p] for p in m}
            errors[f"{kind} {o}"] = rel_error(pred, m)
        phase_table(f"{kind.upper()}: measured per-phase peak resident set per process (max over the 2 ranks)", table)
        results[kind] = {"runs": {f"{v.name} {o}": m for (v, o), m in data.items()},
                         "check": {o: m for o, m in check_m.items()},
                         "fit": {p: {"const": f.const, **f.coef} for p, f in fits[kind].items()}}

    print("\nfit error on the deepest variant, predicted from the shallower ones (peak | worst phase):")
    for k, (peak, worst) in errors.items():
        print(f"  {k}: {peak:.1f}% | {worst:.1f}%")
    fit_error = max(peak for peak, _ in errors.values())

    if not args.quick:
        results["resume"] = resume_check(dirs[FLUX_FIT[0], "ppo_sde"], data_of(results))
        results["comm"] = comm_cost(run, counts)
    shutil.rmtree(dirs[FLUX_FIT[0], "ppo_sde"] / "checkpoints", ignore_errors=True)

    gpu = gpu_setups(counts)
    preds = {k: mm.predict_gpu(fits[s.kind], s) for k, s in gpu.items()}
    names = {"flux_full": "FLUX.1-dev full FT, W=8, DanceGRPO 720 px (per GPU)",
             "flux_lora": "FLUX.1-dev LoRA r128, W=1", "sd_full": "SD1.4 full FT, W=1, DanceGRPO 512 px"}
    phase_table("predicted allocated memory per GPU (bf16 MixedPrecisionPolicy / autocast; before the margins)",
                {names[k]: v for k, v in preds.items()})
    figures = {k: mm.gpu_figure(v) / mm.GIB for k, v in preds.items()}
    print(f"\nper GPU = {mm.GPU_FRAGMENTATION:.2f} x the largest phase + {mm.GPU_CONTEXT / mm.GIB:.1f} GiB "
          f"(allocator, CUDA context): " + ", ".join(f"{names[k]}: {v:.1f} GiB" for k, v in figures.items()))
    options(fits, gpu, counts)
    ok = {k: figures[k] <= TARGETS[k] for k in figures} | {"fit": fit_error <= TARGETS["fit"]}
    print("targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in ok.items()))
    results |= {"gpu": {k: {p: b / mm.GIB for p, b in v.items()} for k, v in preds.items()}, "figures": figures,
                "fit_error": fit_error, "errors": errors, "counts": counts,
                "seconds": time.perf_counter() - t_start}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"\n{time.perf_counter() - t_start:.0f} s wall ({os.getloadavg()[0]:.1f} load average now); the runs used "
          f"{cpu.ru_utime + cpu.ru_stime:.0f} s of CPU, {(cpu.ru_utime + cpu.ru_stime) / 120:.1f} minutes on 2 idle "
          f"cores; {out / 'results.json'}")
    print(f"flux-dev full W=8: {figures['flux_full']:.1f} GiB/GPU | flux-dev lora r128 W=1: {figures['flux_lora']:.1f} GiB "
          f"| sd14 full W=1: {figures['sd_full']:.1f} GiB | fit error: {fit_error:.1f}%")


def options(fits: dict, gpu: dict[str, mm.Setup], counts: dict[str, int]) -> None:
    """What the memory options change in the GPU figure of FLUX.1-dev's full fine-tune (W=8) and SD1.4's (W=1)."""
    flux, sd = gpu["flux_full"], gpu["sd_full"]
    # without gradient checkpointing every block keeps what one block recomputes with it
    no_ckpt = {p: mm.PhaseFit(f.const, f.coef | ({"x_train_blocks": f.coef.get("x_train", 0.0)} if p == "train" else {}))
               for p, f in fits["flux"].items()}
    t5 = 2 * (counts["t5_xxl"] + counts["clip_l"])
    rows = [
        ("FLUX.1-dev full, W=8, as configs/flux_dancegrpo.yaml", fits["flux"], flux, 0.0),
        ("  model.gradient_checkpointing=false", no_ckpt, replace(flux, ckpt_width=0), 0.0),
        ("  model.text_encoder_offload=false (T5-XXL, CLIP-L resident in bf16)", fits["flux"],
         replace(flux, frozen=flux.frozen | {"t5": t5}), 0.0),
        ("  dist.gather_rollout=true (the whole model gathered in bf16 while sampling)", fits["flux"], flux,
         2 * counts["flux"]),
        ("  train.micro_batch=1", fits["flux"], replace(flux, train_images=1), 0.0),
        ("  train.ema_decay=0.995 (an EMA of the shards)", fits["flux"], replace(flux, ema=True), 0.0),
        ("  train.objective=nft (its old policy)", fits["flux"], replace(flux, objective="nft"), 0.0),
        ("  16 GPUs (W=16)", fits["flux"], replace(flux, world=16, trajectory=flux.trajectory // 2), 0.0),
        ("SD1.4 full, W=1, as configs/sd14_dancegrpo.yaml", fits["sd"], sd, 0.0),
        ("  train.micro_batch=1", fits["sd"], replace(sd, train_images=2), 0.0),
        ("  model.cfg_detach_uncond=true (no-grad unconditional branch)", fits["sd"], replace(sd, train_images=4), 0.0),
        ("  train.prompts_per_iter=8 (a quarter of the trajectory)", fits["sd"],
         replace(sd, trajectory=sd.trajectory // 4), 0.0),
    ]
    print("\nwhat the options change (GiB per GPU, with the margins):\n")
    print("| setting | GiB | change |\n|---|---|---|")
    base = None
    for name, f, s, rollout_extra in rows:
        phases = mm.predict_gpu(f, s)
        phases["rollout"] += rollout_extra
        fig = mm.gpu_figure(phases) / mm.GIB
        base = fig if not name.startswith(" ") else base
        print(f"| {name} | {fig:.1f} | {'' if not name.startswith(' ') else f'{fig - base:+.1f}'} |")


def data_of(results: dict) -> dict[str, float]:
    """The measured phases of FLUX 0+1 at 64 px, ppo_sde."""
    return results["flux"]["runs"][f"{FLUX_FIT[0].name} ppo_sde"]


def resume_check(done: Path, first: dict[str, float]) -> dict:
    """The checkpoint load of a resumed run (``done``: FLUX 0+1's one-iteration run, resumed for a second one)."""
    v = FLUX_FIT[0]
    run_dir = done.parent / f"{done.name}_resumed"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(done, run_dir)
    t0 = time.perf_counter()
    launch(["train", "--no-progress", "--resume", str(run_dir), "train.iterations=2"])
    resumed = measured(run_dir, resumed=True)
    print(f"  {v.label}, ppo_sde, resumed for a second iteration: {time.perf_counter() - t0:.0f} s", flush=True)
    phase_table("FLUX 0+1, 64 px, ppo_sde: the first iteration, and the second after a resume (measured)",
                {"iteration 1": first, "resumed, iteration 2": resumed})
    return {"first": first, "resumed": resumed}


def before_after(tree: Path, out: Path, folder: Path, reward: Path, prompts: Path) -> None:
    """The per-phase peaks of FLUX 0+1 at 64 px, ppo_sde and nft, with the package and configs of the checkout
    ``tree`` (before a change) and of this one (after it)."""
    v, rows = FLUX_FIT[0], {}
    for name, root in (("before", tree), ("after", ROOT)):
        for o in ("ppo_sde", "nft"):
            run_dir = out / "runs" / f"{v.name}_{o}_{name}"
            shutil.rmtree(run_dir, ignore_errors=True)
            cfg = root / "configs" / "flux_dancegrpo.yaml"
            wall = launch(["train", "--no-progress", "--config", str(cfg),
                           *overrides(v, o, folder, reward, prompts, run_dir)], src=root / "src")
            print(f"  {v.label}, {o}, {name} ({root}): {wall:.0f} s", flush=True)
            rows[f"{name}, {o}"] = measured(run_dir)
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    phase_table(f"{v.label}: before ({tree}) and after ({ROOT}), measured", rows)


def comm_cost(run, counts: dict[str, int]) -> dict:
    """The sharded gradients' communication: FLUX 0+1 at 64 px with micro-batches of one pair (4 per process and
    optimizer step), reduce-scattered every micro-batch (the recipe) and once per optimizer step (the accumulation
    it replaced), counted and timed in the recipe."""
    v = FLUX_FIT[0]
    comm, mem = {}, {}
    for mode in ("every micro-batch", "once per step"):
        path = run.out / "runs" / f"comm_{mode.split()[0]}"
        m, wall, rd = run(v, "ppo_sde", f"_comm_{mode.split()[0]}", extra=["train.micro_batch=1"], comm=path,
                          sync_once=mode == "once per step")
        from slas.recipe.metrics import read_metrics

        comm[mode] = json.loads(Path(f"{path}.0.json").read_text()) | {"train_s": read_metrics(rd)[-1]["time/train_s"]}
        mem[mode] = m
    rs = {k: c["reduce_scatter_single"] for k, c in comm.items()}
    print("\ngradient reduce-scatter per optimizer step, rank 0 (FLUX 0+1 fp32, 4 micro-batches of 1 pair per process):")
    print("| | calls | GiB reduce-scattered | seconds in reduce-scatter | train phase s | train peak GiB |")
    print("|---|---|---|---|---|---|")
    for k in comm:
        print(f"| {k} | {rs[k][0]} | {rs[k][1] / mm.GIB:.2f} | {rs[k][2]:.1f} | {comm[k]['train_s']:.1f} | "
              f"{gib(mem[k]['train'])} |")
    a, b = rs["every micro-batch"], rs["once per step"]
    print(f"ratio every / once: {a[0] / b[0]:.2f}x calls, {a[1] / b[1]:.2f}x bytes, {a[2] / b[2]:.2f}x seconds; "
          f"train phase {comm['every micro-batch']['train_s'] / comm['once per step']['train_s']:.2f}x; "
          f"train peak {gib(mem['every micro-batch']['train'] - mem['once per step']['train'])} GiB")
    # the GPU recipe: per rank 24 samples x 9 pairs / 3 optimizer steps / micro-batch 4 = 18 micro-batches per step
    full = 4 * counts["flux"] * 7 / 8  # fp32 gradients of FLUX.1-dev, ring reduce-scatter over 8 ranks: sent per rank
    print(f"FLUX.1-dev W=8, DanceGRPO: 18 micro-batches per optimizer step: {18 * full / 1e9:.0f} GB sent per rank "
          f"per step instead of {full / 1e9:.0f} GB (fp32 reduce_dtype), overlapped with the backward by FSDP2")
    return {"comm": comm, "memory": mem}


if __name__ == "__main__":
    main()
