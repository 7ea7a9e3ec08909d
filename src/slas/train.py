"""The GRPO recipe: SAMPLE -> SCORE -> ADVANTAGE -> TRAIN -> LOG/CHECKPOINT.

One loop that reads top to bottom (STYLE.md habit 1). It knows nothing about
the backbone (``slas.policy`` adapters) or the reward (``slas.rewards``
registry); the estimator is one config switch (``advantage.estimator``).

Notation: P prompts per iteration, G samples per prompt, N = P*G, T sampler
steps, K trained steps per sample.

Determinism: every random draw of iteration ``i`` comes from a generator
seeded with ``(seed, i)``, and the prompt order is a pure function of the
sampler position. A checkpoint therefore holds all the state that the future
depends on, and a resumed run reproduces the uninterrupted one bit for bit.

Many processes (``torchrun ... -m slas train``): the batch is global; each
rank draws the global iteration's randomness, rolls out and trains its rows
``rows`` of it, and gathers rewards for the advantage (slas.distributed). With
one process ``rows`` is the whole batch and nothing is wrapped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import Tensor

from . import advantages, checkpoint, distributed, rewards
from .config import Config, ConfigError
from .distributed import swapped_params
from .losses import (
    awm_loss,
    awm_weighted_error,
    gaussian_kl,
    kl_loss,
    nft_loss,
    nft_optimality,
    ppo_clip_loss,
    velocity_kl,
)
from .policy import adapter_class
from .policy.base import index_cond
from .policy.common import cfg_free
from .prompts import load_prompts
from .samplers import sampler_for
from .samplers.rollout import rollout

# ----------------------------------------------------------------------------
# Builders (the only place that maps config names to objects)
# ----------------------------------------------------------------------------

# prompt embeddings kept in memory (on the CPU) across iterations; FLUX's T5 at 512 tokens is 4-8 MB a prompt
COND_CACHE_PROMPTS = 1024


def build_backbone(cfg: Config):
    """The adapter named by model.backbone (slas.policy.ADAPTERS), built from the model section."""
    return adapter_class(cfg.model.backbone).from_config(cfg.model)


def build_sampler(cfg: Config, backbone, steps: int):
    """The backbone's sampler (flow SDE for velocity, DDIM for epsilon): schedule + the one step function
    that rollout and re-scoring share."""
    s = cfg.sample
    return sampler_for(backbone.prediction, steps, family=s.family, shift=s.shift, reduce=s.reduce,
                       noise_pool=s.noise_pool, alphas_cumprod=getattr(backbone, "alphas_cumprod", None))


def train_prompts(cfg: Config) -> list[dict]:
    """data.prompts, or the ShapesWorld train split when it is null."""
    if cfg.data.prompts is None:
        from .toyworld import split

        return split("train")
    return load_prompts(cfg.data.prompts)


class PromptSampler:
    """Epoch-shuffled prompts; the state is one integer (the position)."""

    def __init__(self, prompts: list[dict], seed: int, position: int = 0):
        self.prompts, self.seed, self.position = prompts, seed, position
        self._epoch, self._order = -1, []

    def next(self, k: int) -> list[dict]:
        out = []
        for _ in range(k):
            epoch, i = divmod(self.position, len(self.prompts))
            if epoch != self._epoch:  # the order of an epoch is a pure function of (seed, epoch)
                self._epoch, self._order = epoch, list(range(len(self.prompts)))
                random.Random(self.seed * 7919 + epoch).shuffle(self._order)
            out.append(self.prompts[self._order[i]])
            self.position += 1
        return out


def lr_lambda(cfg: Config):
    t = cfg.train
    total = t.iterations * t.updates_per_iter
    warm = t.warmup_iters * t.updates_per_iter

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if t.lr_schedule == "cosine":
            frac = (step - warm) / max(1, total - warm)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
        return 1.0

    return f


def pair_noise(seed: int, keys: Tensor, shape: tuple[int, ...]) -> Tensor:
    """[M, *shape] standard normal noise of the forward-process pairs ``keys`` [M] (sample * T + level): a pure
    function of (seed, key), so it does not depend on micro-batching, the number of processes or when it is drawn
    (AWM's old error and its training step see the same x_t), and a resumed run redraws it exactly."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed + k)) for k in keys.tolist()])


def noised_pairs(sampler, x0: Tensor, ts: Tensor, seed: int, keys: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The forward-process pairs of clean samples x0 [M, ...] at step levels ts [M]: x_t [M, ...], the flow level
    t [M] and the target velocity eps - x0 [M, ...], with eps from ``pair_noise(seed, keys)``."""
    eps = pair_noise(seed, keys, tuple(x0.shape[1:])).to(x0.device)
    x_t, level = sampler.noised(x0, eps, ts)
    return x_t, level.to(x0.device), eps - x0.float()


def old_decay(cfg: Config, optimizer_steps: int) -> float:
    """Decay of the old-policy EMA after ``optimizer_steps`` steps: min(rate * steps, max) (DiffusionNFT
    train_nft_sd3.py:169-189 ``return_decay``; AWM ``kl_ema_decay_type: linear``)."""
    return min(cfg.forward.old_decay_rate * optimizer_steps, cfg.forward.old_decay_max)


def _accumulate(acc: dict[str, torch.Tensor], stats: dict[str, torch.Tensor], pairs: int, total: int) -> None:
    """Add one micro-batch's loss diagnostics (0-d tensors), weighted by its share of the iteration's pairs;
    ``ratio_max_dev`` is a max. Padding micro-batches (pairs 0) add nothing."""
    if not pairs:
        return
    for k, v in stats.items():
        if k == "ratio_max_dev":
            acc[k] = torch.maximum(acc[k], v.double()) if k in acc else v.double()
        else:
            acc[k] = acc.get(k, 0.0) + v.double() * pairs / total


# ----------------------------------------------------------------------------
# Logging helpers
# ----------------------------------------------------------------------------


class MetricsLog:
    """``metrics.jsonl`` (always) plus TensorBoard / W&B when configured. Ranks other than 0 (``main`` False)
    keep their rows in memory and write nothing."""

    def __init__(self, run_dir: Path, cfg: Config, keep_upto: int | None, main: bool = True):
        self.path = run_dir / "metrics.jsonl"
        self.main, self.rows = main, []
        self.tb = self.wandb = None
        if not main:
            return
        if keep_upto is None:
            self.path.write_text("")
        else:  # resume: drop lines written after the checkpoint we resume from
            lines = self.path.read_text().splitlines() if self.path.exists() else []
            kept = [ln for ln in lines if ln.strip() and json.loads(ln)["iteration"] <= keep_upto]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        self.rows = [json.loads(ln) for ln in self.path.read_text().splitlines()]
        if cfg.run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("run.tensorboard is on but tensorboard is not installed: "
                                  "pip install 'slas[tensorboard]'") from None
            self.tb = SummaryWriter(str(run_dir / "tb"))
        if cfg.run.wandb:
            try:
                import wandb
            except ImportError:
                raise ConfigError("run.wandb is on but wandb is not installed: pip install 'slas[wandb]'") from None
            self.wandb = wandb.init(dir=str(run_dir), mode=cfg.run.wandb_mode, config=cfg.to_dict(), resume="allow")

    def write(self, row: dict) -> None:
        if not self.main:
            self.rows.append(row)
            return
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows.append(row)
        step = row["iteration"]
        if self.tb is not None:
            for k, v in row.items():
                if k != "iteration":
                    self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(row, step=step)

    def plot(self, path: Path) -> None:
        if not self.main:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        # (title, [(metric, line label)]): a panel draws each of its metrics that the run logged
        panels = [("train reward", [("train/reward_mean", None)]),
                  ("strict gold accuracy", [("eval/gold_accuracy", "held-out (eval.split)"),
                                            ("eval/id/gold_accuracy", "in-domain (train prompts)")]),
                  ("held-out GenEval rules", [("eval/geneval_accuracy", None)]),
                  ("exact count", [("eval/exact_count", "held-out"), ("eval/id/exact_count", "in-domain")]),
                  ("held-out reward (deterministic)", [("eval/reward_mean", None)])]
        panels = [(title, [(k, lab) for k, lab in lines if any(k in r for r in self.rows)]) for title, lines in panels]
        panels = [(title, lines) for title, lines in panels if lines]
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3), squeeze=False)
        for ax, (title, lines) in zip(axes[0], panels, strict=False):
            for key, label in lines:
                pts = [(r["iteration"], r[key]) for r in self.rows if key in r]
                ax.plot(*zip(*pts, strict=False), marker="o" if key.startswith("eval") else None, ms=3, label=label)
            if any(label for _, label in lines):
                ax.legend(fontsize=7)
            ax.set_title(title)
            ax.set_xlabel("iteration")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)


def _evaluate(backbone, cfg: Config, run_dir: Path, iteration: int) -> dict:
    """Held-out ODE evaluation with fixed seeds, and a sample grid."""
    from PIL import Image

    from .evals import monitor
    from .toyworld import split
    from .toyworld.evaluate import balanced_subset, evaluate, generate, grid

    e = cfg.eval
    entries = balanced_subset(split(e.split), e.max_prompts)
    summary, ev_images, ev_metas = evaluate(backbone, entries, e.n_per_prompt, steps=e.steps,
                                            images_per_tag=e.images_per_tag)
    prompts = [p for p in e.grid_prompts for _ in range(4)]
    images = generate(backbone, prompts, list(range(len(prompts))), steps=e.steps)
    (run_dir / "samples").mkdir(exist_ok=True)
    Image.fromarray(grid(images, ncol=8)).save(run_dir / "samples" / f"iter_{iteration:06d}.png")
    out = {
        "eval/gold_accuracy": summary["overall_strict"],
        "eval/geneval_accuracy": summary["overall_geneval"],
        "eval/exact_count": summary["exact_count"],
        "eval/debris": summary["debris"],
        "eval/gold_score": summary["gold_score"],
        "eval/n_images": summary["n_images"],
    }
    out.update({f"eval/strict/{tag}": v["strict"] for tag, v in summary["per_tag"].items()})
    if e.in_domain_per_tag:  # the same protocol on fixed train-split prompts: what training sees
        ind, _, _ = evaluate(backbone, split("train"), steps=e.steps, images_per_tag=e.in_domain_per_tag)
        out.update({"eval/id/gold_accuracy": ind["overall_strict"], "eval/id/exact_count": ind["exact_count"],
                    "eval/id/debris": ind["debris"], "eval/id/n_images": ind["n_images"]})
    out.update(monitor.evaluate(backbone, cfg, run_dir, iteration, ev_images, ev_metas))  # proxy vs gold, diversity
    return out


def before_after(samples: Path, first: int, last: int, out: Path) -> bool:
    """Write the evaluation grids of iterations ``first`` and ``last`` (the same prompts and seeds) side by side,
    labelled, as ``out``; False when either grid is missing."""
    from PIL import Image, ImageDraw

    a, b = samples / f"iter_{first:06d}.png", samples / f"iter_{last:06d}.png"
    if not (a.is_file() and b.is_file()):
        return False
    ia, ib = Image.open(a).convert("RGB"), Image.open(b).convert("RGB")
    top, gap = 16, 12
    canvas = Image.new("RGB", (ia.width + gap + ib.width, top + max(ia.height, ib.height)), "white")
    canvas.paste(ia, (0, top))
    canvas.paste(ib, (ia.width + gap, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 2), f"before (iteration {first})", fill="black")
    draw.text((ia.width + gap + 2, 2), f"after (iteration {last})", fill="black")
    canvas.save(out)
    return True


@torch.no_grad()
def _evaluate_reward(backbone, cfg: Config, run_dir: Path, iteration: int, entries: list[dict], encode,
                     score_fn) -> dict:
    """Held-out deterministic samples (eta = 0: the ODE / DDIM sampler) of data.eval_prompts with fixed noise,
    scored with the training reward, and a grid of the first ones."""
    from PIL import Image

    from .toyworld.evaluate import grid, seeded_noise

    e = cfg.eval
    metas = [m for m in (entries[: e.max_prompts] if e.max_prompts else entries) for _ in range(e.n_per_prompt)]
    sampler = build_sampler(cfg, backbone, e.steps)
    bs = cfg.sample.batch_size or 16  # chunks bound the stored trajectories [B, T+1, ...]
    images = []
    for lo in range(0, len(metas), bs):
        chunk = metas[lo : lo + bs]
        cond = encode([m["prompt"] for m in chunk])  # [B, ...]
        noise = seeded_noise(list(range(lo, lo + len(chunk))), backbone.sample_shape).to(backbone.device)
        ids = torch.arange(len(chunk))
        ro = rollout(lambda x, t, idx, cond=cond: backbone.predict(x, t, index_cond(cond, idx)), noise, sampler,
                     eta=0.0, generator=torch.Generator().manual_seed(0), prompt_ids=ids, group_ids=ids)
        images.append(backbone.decode(ro.x0))
    images = np.concatenate(images)  # uint8 [M, H, W, 3]
    scores = score_fn(images, [m["prompt"] for m in metas], metas)
    (run_dir / "samples").mkdir(exist_ok=True)
    shown = images[:32]
    Image.fromarray(grid(shown, ncol=8, scale=2 if shown.shape[1] < 128 else 1)).save(
        run_dir / "samples" / f"iter_{iteration:06d}.png")
    out = {"eval/reward_mean": float(np.nanmean(scores["total"]))}
    out.update({f"eval/reward/{name}": float(np.nanmean(scores[name])) for name in cfg.reward.weights})
    return out


# ----------------------------------------------------------------------------
# The recipe
# ----------------------------------------------------------------------------


def train(cfg: Config, resume: bool = False, progress: bool = True, log=print) -> Path:
    from tqdm import tqdm

    world = distributed.init(cfg.dist.strategy, cfg.dist.timeout_min)  # torchrun's process group, or rank 0 of 1
    log = log if world.is_main else (lambda msg: None)
    run_dir = Path(cfg.run.out_dir)
    if not resume and checkpoint.latest(run_dir) is not None:
        raise ConfigError(f"{run_dir} already holds a run; resume it with `slas train --resume {run_dir}` "
                          "or choose another run.out_dir")
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    s, t, a = cfg.sample, cfg.train, cfg.advantage
    seed = cfg.run.seed
    torch.manual_seed(seed)
    random.seed(seed)

    backbone = build_backbone(cfg)
    module, device = backbone.module, backbone.device
    # what TRAIN calls: predict through DDP, or over FSDP2-sharded weights (dist.strategy); as is in one process
    policy = distributed.Policy(backbone, world, cfg.dist.strategy, compile=cfg.model.compile,
                                gather_rollout=cfg.dist.gather_rollout)
    named = {k: p for k, p in module.named_parameters() if p.requires_grad}
    params = list(named.values())
    optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    ema = {k: p.detach().clone() for k, p in named.items()} if t.ema_decay > 0 else None
    f = cfg.forward
    forward = t.objective != "ppo_sde"  # nft / awm: flow matching on the clean samples, no trajectories
    kl_beta = f.kl_beta if forward else t.kl_beta
    # KL reference: the adapter's own (LoRA switched off, no second copy), else a frozen copy of the start
    ref = {k: p.detach().clone() for k, p in named.items()} if kl_beta > 0 and backbone.reference() is None else None
    # the forward-process objectives' old policy v_old: an EMA of the policy, updated after each iteration
    old = {k: p.detach().clone() for k, p in named.items()} if forward else None
    score_fn = rewards.build(cfg.reward.weights, cfg.reward.batch_size, cfg.reward.options)
    sampler = PromptSampler(train_prompts(cfg), seed)
    eval_entries = load_prompts(cfg.data.eval_prompts) if cfg.data.eval_prompts else None
    step_fn = build_sampler(cfg, backbone, s.steps)  # schedule + the step shared by rollout and re-scoring
    P, G = t.prompts_per_iter, t.group_size
    N = P * G
    rows = world.share(N, "train.prompts_per_iter x train.group_size")  # this process's samples of the batch
    trainable = torch.tensor(cfg.trainable_steps())  # [S] step indices with a log-prob to train
    K = cfg.derived()["trained_steps_per_sample"]
    etas = cfg.step_etas()  # [T] eta inside the SDE window, 0 outside
    cond_cache: dict[str, dict[str, torch.Tensor]] = {}

    start = 0
    ckpt = world.broadcast_object(checkpoint.latest(run_dir)) if resume else None
    if ckpt is not None:
        state = checkpoint.load(ckpt, module, optimizer, scheduler, ema, sharded=policy.sharded, old=old)
        start, sampler.position = state["iteration"], state["sampler_position"]
        log(f"resumed {run_dir} from {ckpt.name}")
    metrics = MetricsLog(run_dir, cfg, keep_upto=start if ckpt is not None else None, main=world.is_main)
    n_params = sum(p.numel() for p in params)
    log(f"run {run_dir}: {t.objective} + {cfg.advantage.estimator} | {n_params:,} trainable params | "
        + " | ".join(f"{k}={v}" for k, v in cfg.derived().items()))

    def encode(prompts: list[str]) -> dict[str, torch.Tensor]:
        if cfg.model.train_text_encoder:
            return backbone.encode_prompts(prompts)
        missing = [p for p in dict.fromkeys(prompts) if p not in cond_cache]
        if missing:
            enc = backbone.encode_prompts(missing)
            for i, p in enumerate(missing):
                cond_cache[p] = {k: v[i : i + 1].detach().cpu() for k, v in enc.items()}
        out = {k: torch.cat([cond_cache[p][k] for p in prompts]).to(device) for k in cond_cache[prompts[0]]}
        while len(cond_cache) > COND_CACHE_PROMPTS:  # oldest first (dicts keep insertion order)
            cond_cache.pop(next(iter(cond_cache)))
        return out

    def run_eval(iteration: int) -> dict:
        """Rank 0 evaluates (FSDP: after every rank joined the all-gather of the weights); the others get {}."""
        module.eval()
        with torch.no_grad(), swapped_params(module, ema or {}), policy.gathered():
            if not world.is_main:
                return {}
            if eval_entries is not None:
                return _evaluate_reward(backbone, cfg, run_dir, iteration, eval_entries, encode, score_fn)
            return _evaluate(backbone, cfg, run_dir, iteration)

    def reference():
        return backbone.reference() or swapped_params(module, ref)

    if start == 0:
        t0 = time.time()
        row = {"iteration": 0, **run_eval(0), "time/eval_s": time.time() - t0}
        metrics.write(row)
        if "eval/gold_accuracy" in row:
            log(f"iteration 0 (base model): held-out strict {row['eval/gold_accuracy']:.1%}, "
                f"GenEval rules {row['eval/geneval_accuracy']:.1%}, exact count {row['eval/exact_count']:.1%}")
        elif "eval/reward_mean" in row:
            log(f"iteration 0 (base model): held-out reward {row['eval/reward_mean']:.4f}")

    bar = tqdm(range(start + 1, t.iterations + 1), initial=start, total=t.iterations, desc="train",
               disable=not progress or not world.is_main, dynamic_ncols=True)
    for it in bar:
        g = torch.Generator().manual_seed(seed * 1_000_003 + it)
        row: dict = {"iteration": it}

        # ---- 1. SAMPLE: P prompts x G rollouts, batched across samples -------
        t0 = time.time()
        module.eval()
        metas = sampler.next(P)
        prompt_ids = torch.arange(P).repeat_interleave(G)  # [N]
        group_ids = prompt_ids.clone()  # [N] one group per prompt slot
        cond = encode([m["prompt"] for m in metas])  # [P, ...]
        shape = backbone.sample_shape
        if s.same_noise_in_group:  # shared within a group only (ANCHORS §6.11)
            noise = torch.randn(P, *shape, generator=g).repeat_interleave(G, dim=0)  # [N, C, H, W]
        else:
            noise = torch.randn(N, *shape, generator=g)
        # DiffusionNFT samples with v_old (train_nft_sd3.py:640-660); PPO and AWM with the policy itself
        with swapped_params(module, old if t.objective == "nft" else {}), policy.sampling():
            # this process integrates its rows; step noise is drawn for all N
            ro = rollout(
                lambda x, tm, idx, cond=cond, pid=prompt_ids[rows]: backbone.predict(x, tm, index_cond(cond, pid[idx])),
                noise[rows].to(device), step_fn, eta=etas, generator=g, prompt_ids=prompt_ids[rows],
                group_ids=group_ids[rows], batch_size=s.batch_size, global_size=N, offset=rows.start,
                keep_trajectory=not forward,
            )
        # PPO: latents [n, T+1, C, H, W], old_log_probs [n, T]; forward objectives: x0 only. n = N / processes
        latents, old_log_probs = ro.latents, ro.log_probs
        images = backbone.decode(ro.x0)  # uint8 [n, H, W, 3], kept in memory
        row["time/rollout_s"] = time.time() - t0

        # ---- 2. SCORE: batched, in memory ------------------------------------
        t0 = time.time()
        metas_n = [metas[i] for i in ro.prompt_ids.tolist()]
        scores = world.gather_arrays(score_fn(images, [m["prompt"] for m in metas_n], metas_n))  # every rank's
        r = torch.from_numpy(scores["total"])  # [N] float64
        row["time/reward_s"] = time.time() - t0

        # ---- 3. ADVANTAGE over the global batch -------------------------------
        adv, adv_stats = advantages.compute_with_stats(a.estimator, r, world.gather(ro.group_ids),
                                                       adv_clip=a.adv_clip, **a.params)
        finite = advantages.finite_mask(r)  # [N]: NaN/inf rewards never reach the loss
        adv = adv[rows].float().to(device)  # [n] this process's samples
        weight = finite[rows].float().to(device)  # [n]

        # ---- 4. TRAIN: K (sample, step) pairs per sample, train.objective on each ---------
        t0 = time.time()
        module.train()
        if forward:  # K distinct noise levels of the schedule per sample, each with its own fresh noise
            steps_k = torch.rand(N, s.steps, generator=g).argsort(dim=1)[:, :K]  # [N, K]
            noise_seed = int(torch.randint(0, 2**62, (1,), generator=g))
        else:  # K random trainable transitions per sample
            steps_k = trainable[torch.rand(N, len(trainable), generator=g).argsort(dim=1)[:, :K]]  # [N, K]
        n_idx = torch.arange(N).repeat_interleave(K)  # [N*K]
        t_idx = steps_k.reshape(-1)  # [N*K]
        order = torch.randperm(N * K, generator=g)
        n_idx, t_idx = n_idx[order], t_idx[order]
        per_update = N * K // t.updates_per_iter
        acc: dict[str, torch.Tensor] = {}  # loss diagnostics, summed as tensors: no host sync per micro-batch
        grad_norms = []

        def velocity(weights, x_t, tm, c, ts):  # no-grad velocity under another policy's weights (a context)
            with torch.no_grad(), weights:
                return step_fn.velocity(backbone.predict(x_t, tm, c), x_t, ts)

        # forward-process objectives train the conditional velocity without CFG (DiffusionNFT)
        guidance = cfg_free(backbone) if forward else contextlib.nullcontext()
        with guidance:
            old_err = None  # AWM's ratio: each pair's matching error under the policy that sampled (before any update)
            if t.objective == "awm" and t.updates_per_iter > 1:
                old_err = torch.zeros(len(ro.x0), s.steps, dtype=torch.float64, device=device)  # [n, T]
                with torch.no_grad():
                    for mb in distributed.micro_batches(n_idx, t_idx, rows, t.micro_batch, world):
                        x_t, level, target = noised_pairs(step_fn, ro.x0[mb.n], mb.ts, noise_seed,
                                                          (mb.n + rows.start) * s.steps + mb.ts)
                        tm = step_fn.model_time(mb.ts)
                        v = step_fn.velocity(policy(x_t, tm, index_cond(cond, ro.prompt_ids[mb.n])), x_t, mb.ts)
                        old_err[mb.n, mb.ts] = awm_weighted_error(v, target, level, f.weighting, f.ghuber_power)

            for u in range(t.updates_per_iter):
                optimizer.zero_grad(set_to_none=True)
                span = slice(u * per_update, (u + 1) * per_update)
                batches = distributed.micro_batches(n_idx[span], t_idx[span], rows, t.micro_batch, world)
                for j, mb in enumerate(batches):
                    n, ts = mb.n, mb.ts  # [M] this process's samples, their step indices
                    tm = step_fn.model_time(ts)  # [M] the backbone's time input (sigma, or DDPM timestep)
                    c = index_cond(cond, ro.prompt_ids[n])
                    w = weight[n] if mb.pairs else torch.zeros_like(weight[n])  # a padding micro-batch counts for nothing
                    if forward:
                        with policy.accumulate(sync=j == len(batches) - 1):
                            x_t, level, target = noised_pairs(step_fn, ro.x0[n], ts, noise_seed,
                                                          (n + rows.start) * s.steps + ts)
                            # the other policies first: their forwards swap weights, which must not happen between the
                            # policy's forward and its backward
                            v_old = (velocity(swapped_params(module, old), x_t, tm, c, ts)
                                     if t.objective == "nft" or f.old_kl > 0 else None)
                            v_ref = velocity(reference(), x_t, tm, c, ts) if kl_beta > 0 else None
                            v = step_fn.velocity(policy(x_t, tm, c), x_t, ts)  # [M, C, H, W]
                            if t.objective == "nft":
                                r_opt = nft_optimality(adv[n], f.r_scale, f.r_map)  # [M]
                                loss, st = nft_loss(v, v_old, target, level, r_opt, f.beta, adaptive_weight=f.adaptive_weight,
                                                    loss_scale=f.loss_scale, weight=w, sync_stats=False)
                            else:
                                err = awm_weighted_error(v, target, level, f.weighting, f.ghuber_power)  # [M] fp64
                                loss, st = awm_loss(err, adv[n] / f.adv_scale,
                                                    old_err=None if old_err is None else old_err[n, ts],
                                                    clip_range=f.clip_range, weight=w, sync_stats=False,
                                                    fm_err=velocity_kl(v.detach(), target))
                                if f.old_kl > 0:
                                    okl, okst = kl_loss(velocity_kl(v, v_old), f.old_kl, weight=w, sync_stats=False)
                                    loss = loss + okl
                                    st = st | {"old_kl": okst["kl_mean"]}
                            if v_ref is not None:
                                kl_l, kst = kl_loss(velocity_kl(v, v_ref), kl_beta, weight=w, sync_stats=False)
                                loss = loss + kl_l
                                st = st | kst
                            (loss * (mb.pairs * world.size) / per_update).backward()
                        _accumulate(acc, st, mb.pairs, N * K)
                        continue
                    x, x_next = latents[n, ts], latents[n, ts + 1]  # [M, C, H, W]
                    with policy.accumulate(sync=j == len(batches) - 1):  # reduce gradients once per optimizer step
                        out = step_fn.step(policy(x, tm, c), x, ts, eta=s.eta, prev_sample=x_next)
                        loss, st = ppo_clip_loss(out.log_prob, old_log_probs[n, ts], adv[n], t.clip_range, weight=w,
                                                 sync_stats=False)
                        if t.kl_beta > 0:
                            with torch.no_grad(), reference():
                                ref_mean = step_fn.step(backbone.predict(x, tm, c), x, ts, eta=s.eta,
                                                        prev_sample=x_next).mean
                            dt = -step_fn.dt(ts).to(device) if t.kl_form == "flow_grpo" else None
                            kl = gaussian_kl(out.mean, ref_mean, out.std, form=t.kl_form, dt=dt, reduce=s.reduce)
                            kl_l, kst = kl_loss(kl, t.kl_beta, weight=w, sync_stats=False)
                            loss = loss + kl_l
                            st = st | kst
                        # the mean over this optimizer step's pairs; x processes, because DDP / FSDP average over ranks
                        (loss * (mb.pairs * world.size) / per_update).backward()
                    _accumulate(acc, st, mb.pairs, N * K)
                grad_norms.append(policy.clip_grad_norm_(params, t.max_grad_norm))
                optimizer.step()
                scheduler.step()
                if ema is not None:
                    with torch.no_grad():
                        for k, p in named.items():
                            ema[k].lerp_(p.detach(), 1 - t.ema_decay)
        if old is not None:  # v_old <- decay v_old + (1 - decay) policy (train_nft_sd3.py:1034-1039)
            decay = old_decay(cfg, it * t.updates_per_iter)
            with torch.no_grad():
                for k, p in named.items():
                    old[k].lerp_(p.detach(), 1 - decay)
        acc = {k: float(world.all_reduce(v, "max" if k == "ratio_max_dev" else "sum")) for k, v in acc.items()}
        row["time/train_s"] = time.time() - t0

        # ---- 5. LOG / CHECKPOINT ------------------------------------------------
        row.update({
            "train/reward_mean": float(r[finite].mean()) if finite.any() else float("nan"),
            "train/reward_std": float(r[finite].std()) if finite.sum() > 1 else 0.0,
            "train/adv_abs_mean": adv_stats["adv_abs_mean"],
            "train/adv_clip_frac": adv_stats["clip_frac"],
            "train/zero_std_groups": adv_stats["zero_std_groups"],
            "train/n_nonfinite_rewards": adv_stats["n_nonfinite"],
            # the objective's loss diagnostics (losses.PPO_STATS / NFT_STATS / AWM_STATS; kl_mean is train/kl)
            **{f"train/{'kl' if k == 'kl_mean' else k}": v for k, v in acc.items() if k != "adv_mean"},
            "train/grad_norm": float(np.mean([float(gn) for gn in grad_norms])),
            "train/lr": scheduler.get_last_lr()[0],
        })
        for name in cfg.reward.weights:
            row[f"reward/{name}"] = float(np.nanmean(scores[name]))
        last = it == t.iterations
        if last or (cfg.eval.every and it % cfg.eval.every == 0):
            t0 = time.time()
            row.update(run_eval(it))
            row["time/eval_s"] = time.time() - t0
        metrics.write(row)
        if any(k.startswith("eval/") for k in row):
            metrics.plot(run_dir / "curves.png")
        # slas.evals.monitor (rank 0): gold falling while the proxy rises
        stop = world.broadcast_object(row.get("monitor/early_stop", 0.0) > 0)
        if last or stop or it % cfg.run.checkpoint_every == 0:
            checkpoint.save(run_dir, it, module, optimizer, scheduler, ema, {"sampler_position": sampler.position},
                            keep=cfg.run.keep_checkpoints, world=world, sharded=policy.sharded, old=old)
        if stop:
            log(f"early stop at iteration {it}: the monitor saw the gold fall while the proxy rose "
                f"({run_dir / 'early_stop.json'})")
            break
        bar.set_postfix(reward=f"{row['train/reward_mean']:.3f}",
                        gold=f"{metrics.rows[-1].get('eval/gold_accuracy', float('nan')):.3f}")
    bar.close()
    if start >= t.iterations:  # nothing ran (resumed a finished run): the loop's last eval drew it otherwise
        metrics.plot(run_dir / "curves.png")
    first = next((r for r in metrics.rows if "eval/gold_accuracy" in r), None)
    final = metrics.rows[-1]
    if first is not None and "eval/gold_accuracy" in final:
        for key, what in (("eval/gold_accuracy", "held-out strict gold"), ("eval/id/gold_accuracy", "in-domain strict gold"),
                          ("eval/exact_count", "held-out exact count"), ("eval/debris", "held-out images with debris")):
            if key in first and key in final:
                log(f"{what}: {first[key]:.1%} (iteration {first['iteration']}) -> {final[key]:.1%} "
                    f"(iteration {final['iteration']})")
    extra = ""
    if world.is_main and first is not None and first["iteration"] != final["iteration"]:
        if before_after(run_dir / "samples", first["iteration"], final["iteration"], run_dir / "before_after.png"):
            extra = ", before_after.png"
    log(f"run directory: {run_dir} (metrics.jsonl, curves.png{extra}, samples/, checkpoints/)")
    distributed.shutdown(world)
    return run_dir
