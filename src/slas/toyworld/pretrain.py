"""Pretrain the ShapesWorld model on renders with the rectified-flow loss.

Reproducible from its seed: batch ``k`` is drawn from generators seeded with
``(seed, k)``, so the data and noise never depend on wall time, and a resumed
run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import functools
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from slas.toyworld import model as toymodel
from slas.toyworld.renderer import render
from slas.toyworld.world import TAGS, all_prompts

DEFAULTS = {
    # steps, batch, lr: chosen so that size M trains in < 90 min on 2 CPU cores
    # M: 3000 steps. Continuing at this constant lr diverged between steps 3000
    # and 3100 (loss 0.068 -> 0.87, runs/pretrain_M.log of the shipped model).
    "M": dict(steps=3000, batch=64, lr=1.5e-3),
    "S": dict(steps=5000, batch=64, lr=2e-3),
    # L: 1.5x M's width. The 2x-width net diverged at lr 1e-3 (step ~1550) and learnt
    # slowly at 5e-4. lr scaled as 1/width from M gives 1e-3 here, which diverged at
    # step 2247 (100-step mean loss 0.065 -> 0.135, runs/pretrain_L_part1.log), so the
    # lr halves at step 2000, the last saved state before that.
    "L": dict(steps=3000, batch=64, lr=1e-3, halve_at=2000),
}
# The dtype of the final checkpoint: what each size ships in. L's 9.4M parameters are 18.9 MB in fp16; int8
# with per-row scales is 9.7 MB, about M's 8.5 MB (benchmarks/int8_check.py measures what it costs).
SHIP_DTYPE = {"S": torch.float16, "M": torch.float16, "L": torch.int8}
WARMUP = 200
EMA_DECAY = 0.999
SAVE_EVERY = 500
# The resumable state is also saved at least this often, so that an interrupted
# L run (5 s a step) loses minutes, not the 40 minutes of SAVE_EVERY steps.
SAVE_MINUTES = 10.0
# A run whose 100-step mean loss rises above DIVERGE_FACTOR x its best 100-step mean
# has diverged (M at lr 1.5e-3: 0.068 -> 0.87; L at 1e-3: 0.071 -> 0.164 -> 1.09).
# It stops before saving, so its resumable state stays at the last healthy step.
DIVERGE_FACTOR = 2.0
WINDOW = 100


@functools.cache
def _prompts_by_tag() -> dict[str, list[dict]]:
    return {t: [m for m in all_prompts() if m["tag"] == t] for t in TAGS}


def batch_for_step(seed: int, step: int, batch: int) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompts, x0 [B, 3, H, W] in [-1, 1], noise [B, 3, H, W] and sigma [B] of one step."""
    rng = random.Random(seed * 1_000_003 + step)
    by_tag = _prompts_by_tag()
    metas = [rng.choice(by_tag[rng.choice(TAGS)]) for _ in range(batch)]  # tag-balanced
    imgs = np.stack([render(m, rng.getrandbits(31)) for m in metas])
    x0 = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    noise = torch.randn(x0.shape, generator=g)
    # Half logit-normal (SD3), half uniform: logit-normal alone almost never
    # draws sigma < 0.05, and the low-noise steps then leave visible grain.
    sigma = torch.where(torch.rand(batch, generator=g) < 0.5, torch.sigmoid(torch.randn(batch, generator=g)),
                        torch.rand(batch, generator=g))
    return [m["prompt"] for m in metas], x0, noise, sigma


def lr_at(step: int, lr: float, halve_at: int | None = None) -> float:
    """Linear warmup, then constant (halved from step ``halve_at`` on, if given): the weights after k steps do
    not depend on the planned total, so ``--steps k`` reproduces any intermediate snapshot."""
    return lr * min(1.0, (step + 1) / WARMUP) * (0.5 if halve_at is not None and step >= halve_at else 1.0)


def pretrain(out: str | os.PathLike, size: str = "M", steps: int | None = None, batch: int | None = None,
             lr: float | None = None, seed: int = 0, save_every: int = SAVE_EVERY, stop_at: int | None = None,
             log=print) -> Path | None:
    """Train from scratch (or resume from ``out/state``) and write ``out`` as a checkpoint dir.

    ``stop_at`` ends the run after that many steps with its state saved (a
    planned interruption); calling again resumes. Returns ``out`` when done."""
    d = DEFAULTS[size]
    steps, batch, lr = steps or d["steps"], batch or d["batch"], lr or d["lr"]
    halve_at = d.get("halve_at")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = toymodel.build(size)
    ema = toymodel.build(size)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    start, elapsed0, best = 0, 0.0, float("inf")  # best: lowest WINDOW-step mean loss after warmup
    state_dir = out / "state"
    if (state_dir / "meta.json").is_file():
        from safetensors.torch import load_file

        meta = json.loads((state_dir / "meta.json").read_text())
        # The LR is constant after warmup, so a run may be extended: only the
        # size, seed and batch must match.
        if meta["size"] != size or meta["seed"] != seed or meta.get("batch", batch) != batch:
            raise ValueError(f"{state_dir} belongs to another run ({meta}); use a fresh --out")
        if meta["step"] > steps:
            raise ValueError(f"{state_dir} is at step {meta['step']}, beyond --steps {steps}")
        model.load_state_dict(load_file(str(state_dir / "model.safetensors")))
        ema.load_state_dict(load_file(str(state_dir / "ema.safetensors")))
        opt.load_state_dict(torch.load(state_dir / "optim.pt", weights_only=True))
        start, elapsed0 = meta["step"], meta["elapsed_s"]
        best = meta.get("best_loss") or best
        log(f"resuming from step {start}")
    log(f"pretraining ShapesWorld model {size}: {toymodel.count_parameters(model):,} parameters, "
        f"{steps} steps x batch {batch}, lr {lr}, seed {seed}")
    t0 = time.time() - elapsed0  # elapsed time counts earlier, interrupted parts of the run
    last_save = t_resume = time.time()
    losses: list[float] = []

    def save(done: int) -> float:
        _save_state(state_dir, model, ema, opt, done, time.time() - t0, size, seed, batch, best)
        return time.time()

    for step in range(start, steps):
        prompts, x0, noise, sigma = batch_for_step(seed, step, batch)
        s = sigma.view(-1, 1, 1, 1)
        x = (1 - s) * x0 + s * noise
        v = model.velocity(x, sigma, model.encode(prompts))
        loss = torch.nn.functional.mse_loss(v, noise - x0)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, lr, halve_at)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(EMA_DECAY, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=False):
                pe.lerp_(pm, 1 - decay)
        losses.append(loss.item())
        done = step + 1
        if len(losses) >= WINDOW and done > WARMUP + WINDOW:
            recent = float(np.mean(losses[-WINDOW:]))
            if recent > DIVERGE_FACTOR * best:
                raise ValueError(
                    f"pretraining diverged at step {done}: the mean loss of the last {WINDOW} steps is {recent:.4f}, "
                    f"over {DIVERGE_FACTOR:g}x the best {best:.4f}. The state in {state_dir} was not overwritten; "
                    f"rerun with a lower --lr (now {lr:g}) to resume from it")
            best = min(best, recent)
        if done % 100 == 0 or done == steps:
            el = time.time() - t0
            # the rate of this process only: el includes the earlier parts, done - start does not
            eta = (time.time() - t_resume) / (done - start) * (steps - done)
            log(f"step {done}/{steps} loss {np.mean(losses[-100:]):.4f} lr {lr_at(step, lr, halve_at):.2e} "
                f"elapsed {el / 60:.1f} min eta {eta / 60:.1f} min")
        if done == stop_at and done < steps:
            save(done)
            log(f"stopped at step {done}; run again to resume")
            return None
        if done % save_every == 0 or done == steps:
            last_save = save(done)
            if done < steps:
                toymodel.save(ema, out / "snapshots" / f"step_{done:05d}", dtype=torch.float16)
        elif time.time() - last_save > SAVE_MINUTES * 60:
            last_save = save(done)
    wall = time.time() - t0
    info = {"steps": steps, "batch": batch, "lr": lr, "halve_at": halve_at, "seed": seed, "wall_time_s": round(wall, 1),
            "final_loss": float(np.mean(losses[-100:])) if losses else None}
    toymodel.save(ema, out, dtype=SHIP_DTYPE[size], extra={"pretrain": info})
    log(f"done in {wall / 60:.1f} min; wrote {out}")
    return out


def _save_state(state_dir: Path, model, ema, opt, step: int, elapsed: float, size: str, seed: int, batch: int,
                best_loss: float) -> None:
    from safetensors.torch import save_file

    state_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(state_dir / "model.safetensors.tmp"))
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, str(state_dir / "ema.safetensors.tmp"))
    torch.save(opt.state_dict(), state_dir / "optim.pt.tmp")
    for name in ("model.safetensors", "ema.safetensors", "optim.pt"):
        os.replace(state_dir / (name + ".tmp"), state_dir / name)
    meta = {"step": step, "elapsed_s": elapsed, "size": size, "seed": seed, "batch": batch,
            "best_loss": best_loss if np.isfinite(best_loss) else None}
    (state_dir / "meta.json.tmp").write_text(json.dumps(meta))
    os.replace(state_dir / "meta.json.tmp", state_dir / "meta.json")
