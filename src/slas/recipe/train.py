"""The GRPO recipe: SAMPLE -> SCORE -> ADVANTAGE -> TRAIN -> LOG/CHECKPOINT.

One loop that reads top to bottom. It knows nothing about
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
``rows`` of it, and gathers rewards for the advantage (slas.recipe.parallel). With
one process ``rows`` is the whole batch and nothing is wrapped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import Tensor

from slas import rewards
from slas.algo import advantages
from slas.algo.losses import (
    awm_loss,
    awm_weighted_error,
    gaussian_kl,
    kl_loss,
    nft_loss,
    nft_optimality,
    ppo_clip_loss,
    velocity_kl,
)
from slas.algo.samplers.rollout import rollout
from slas.algo.samplers.schedule import step_etas, trainable_steps
from slas.config import Config, ConfigError, derived
from slas.policy.base import index_cond
from slas.policy.common import cfg_free
from slas.policy.generate import EVAL_SEED_LIMIT
from slas.recipe import checkpoint
from slas.recipe import parallel as distributed
from slas.recipe.builders import PromptSampler, build_backbone, build_sampler, eval_prompts, lr_lambda, train_prompts
from slas.recipe.evaluation import before_after, change_lines, evaluate, proportion_text
from slas.recipe.metrics import MetricsLog
from slas.recipe.parallel import swapped_params
from slas.recipe.run_dir import RunDir

# prompt embeddings kept in memory (on the CPU) across iterations; FLUX's T5 at 512 tokens is 4-8 MB a prompt
COND_CACHE_PROMPTS = 1024


def iteration_seed(seed: int, it: int) -> int:
    """The seed of iteration ``it``'s generator: every random draw of the iteration comes from it. A hash of
    (seed, it) in [EVAL_SEED_LIMIT, 2**32), above the evaluation seeds' domain, so no rollout ever starts from an
    evaluation's noise."""
    h = int.from_bytes(hashlib.blake2b(f"{seed}:{it}".encode(), digest_size=4).digest(), "little")
    return EVAL_SEED_LIMIT + h % EVAL_SEED_LIMIT


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
# Ctrl-C / SIGTERM: stop at the end of the iteration, with a checkpoint of it
# ----------------------------------------------------------------------------


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped ``train`` after an iteration, whose checkpoint it saved (``checkpoint``; None on
    ranks other than 0). The CLI exits with ``exit_code``: 128 + the signal's number (130 SIGINT, 143 SIGTERM)."""

    def __init__(self, signum: int, checkpoint: Path | None):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum, self.checkpoint, self.exit_code = signum, checkpoint, 128 + signum


class _Interrupts:
    """The training loop's SIGINT / SIGTERM handlers (``arm``: in the main thread only). The first signal sets
    ``signum``: the loop finishes the iteration, saves it and raises ``TrainingInterrupted``. A second one aborts at
    once (``KeyboardInterrupt``, nothing saved). ``restore`` puts the previous handlers back."""

    def __init__(self):
        self.signum: int | None = None
        self.iteration, self.main, self.previous = 0, True, {}

    def arm(self, main: bool) -> None:
        self.main = main
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self.previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        if self.main:  # straight to stderr: print() is not safe inside a signal handler
            os.write(2, f"\n{signal.Signals(signum).name}: finishing iteration {self.iteration}, then saving a "
                        "checkpoint of it (press Ctrl-C again to abort without saving)\n".encode())


# ----------------------------------------------------------------------------
# The recipe
# ----------------------------------------------------------------------------


def train(cfg: Config, resume: bool = False, progress: bool = True, log=print) -> Path:
    """Train ``cfg`` (``resume``: continue ``cfg.run.out_dir`` from its newest intact checkpoint); returns the run
    directory. SIGINT / SIGTERM during the iterations stops after the current one, saves a checkpoint of it and
    raises ``TrainingInterrupted``: ``--resume`` then continues exactly as if it had not stopped."""
    interrupts = _Interrupts()
    try:
        return _train(cfg, resume, progress, log, interrupts)
    finally:
        interrupts.restore()


def _train(cfg: Config, resume: bool, progress: bool, log, interrupts: _Interrupts) -> Path:
    from tqdm import tqdm

    world = distributed.init(cfg.dist.strategy, cfg.dist.timeout_min)  # torchrun's process group, or rank 0 of 1
    log = log if world.is_main else (lambda msg: None)
    out = Path(cfg.run.out_dir)
    paths = RunDir(out)
    if not resume and paths.latest() is not None:
        raise ConfigError(f"{out} already holds a run; resume it with `slas train --resume {out}` "
                          "or choose another run.out_dir")
    # --resume: the newest intact checkpoint (rank 0 checks its files; a corrupt one is skipped with a warning line)
    found = world.broadcast_object(checkpoint.latest_intact(paths.checkpoints, warn=log) if resume and world.is_main else None)
    if resume and found is None:
        log(f"nothing to resume in {out}: it holds no checkpoint (it stopped before saving one); "
            "training it from iteration 0")
    elif found is not None and found[1]["iteration"] >= cfg.train.iterations:
        done = found[1]["iteration"]
        log(f"{out} is finished: its last checkpoint {found[0].name} is at iteration {done} of train.iterations "
            f"{cfg.train.iterations}; to train it further: slas train --resume {out} train.iterations=N (N > {done})")
        distributed.shutdown(world)
        return out
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
    eval_entries = eval_prompts(cfg)  # data.eval_prompts with the rewards' metadata, or None (the world's evaluation)
    step_fn = build_sampler(cfg, backbone, s.steps)  # schedule + the step shared by rollout and re-scoring
    P, G = t.prompts_per_iter, t.group_size
    N = P * G
    rows = world.share(N, "train.prompts_per_iter x train.group_size")  # this process's samples of the batch
    trainable = torch.tensor(trainable_steps(s.steps, s.sde_window, train_last_step=t.train_last_step))  # [S] with a log-prob
    K = derived(cfg)["trained_steps_per_sample"]
    etas = step_etas(s.steps, s.sde_window, s.eta)  # [T] eta inside the SDE window, 0 outside
    cond_cache: dict[str, dict[str, torch.Tensor]] = {}

    # everything above validated the config, prompts and rewards: only now is the run directory made
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        paths.config.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    start = 0
    ckpt = found[0] if found is not None else None
    if ckpt is not None:
        state = checkpoint.load(ckpt, module, optimizer, scheduler, ema, sharded=policy.sharded, old=old, state=found[1])
        start, sampler.position = state["iteration"], state["sampler_position"]
        log(f"resumed {out} from {ckpt} (iteration {start} of {t.iterations})")
    metrics = MetricsLog(out, cfg, keep_upto=start if ckpt is not None else None, main=world.is_main)
    n_params = sum(p.numel() for p in params)
    log(f"run {out}: {t.objective} + {cfg.advantage.estimator} | {n_params:,} trainable params | "
        + " | ".join(f"{k}={v}" for k, v in derived(cfg).items()))

    def encode(prompts: list[str], grad: bool = False) -> dict[str, torch.Tensor]:
        """Conditioning [len(prompts), ...]; with a trained text encoder, encoded afresh (with gradients when
        ``grad``: each micro-batch builds its own graph), else from the cache of frozen embeddings."""
        if cfg.model.train_text_encoder:
            with torch.set_grad_enabled(grad):
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
            return evaluate(backbone, cfg, out, iteration, eval_entries, score_fn, metrics.rows)

    def reference():
        return backbone.reference() or swapped_params(module, ref)

    if start == 0:
        t0 = time.time()
        row = {"iteration": 0, **run_eval(0), "time/eval_s": time.time() - t0}
        metrics.write(row)
        if "eval/gold_accuracy" in row:
            log(f"iteration 0 (base model): held-out strict {proportion_text(row, 'eval/gold_accuracy')}, "
                f"GenEval rules {row['eval/geneval_accuracy']:.1%}, exact count {row['eval/exact_count']:.1%}")
        elif "eval/reward_mean" in row:
            log(f"iteration 0 (base model): held-out reward {row['eval/reward_mean']:.4f}")

    bar = tqdm(range(start + 1, t.iterations + 1), initial=start, total=t.iterations, desc="train",
               disable=not progress or not world.is_main, dynamic_ncols=True)
    interrupts.arm(world.is_main)  # from here on, Ctrl-C / SIGTERM saves the iteration it interrupts
    for it in bar:
        interrupts.iteration = it
        g = torch.Generator().manual_seed(iteration_seed(seed, it))
        row: dict = {"iteration": it}

        # ---- 1. SAMPLE: P prompts x G rollouts, batched across samples -------
        t0 = time.time()
        module.eval()
        metas = sampler.next(P)
        prompt_ids = torch.arange(P).repeat_interleave(G)  # [N]
        group_ids = prompt_ids.clone()  # [N] one group per prompt slot
        cond = encode([m["prompt"] for m in metas])  # [P, ...]
        shape = backbone.sample_shape
        if s.same_noise_in_group:  # shared within a group only (DG train_grpo_flux.py:333-350 shares it per rank)
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
        if t.objective == "nft":  # the push on nft's r over the informative samples (non-zero advantage)
            inf = adv != 0
            push = (nft_optimality(adv[inf].float(), f.r_scale, f.r_map) - 0.5).abs()
            adv_stats["r_push_informative"] = float(push.mean()) if inf.any() else 0.0
        # [N] the samples the loss averages over; Flow-GRPO also drops zero advantages (train_sd3.py:796-817), but
        # by re-sampling per rank, which weights ranks unequally: here the step stays the exact mean over all ranks
        used = finite & (adv != 0) if t.drop_zero_advantage else finite
        adv = adv[rows].float().to(device)  # [n] this process's samples
        weight = used[rows].float().to(device)  # [n]

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
                step_used = int(used[n_idx[span]].sum())  # the pairs of this optimizer step in the loss, every rank's
                for j, mb in enumerate(batches):
                    n, ts = mb.n, mb.ts  # [M] this process's samples, their step indices
                    tm = step_fn.model_time(ts)  # [M] the backbone's time input (sigma, or DDPM timestep)
                    c = (encode([metas[i]["prompt"] for i in ro.prompt_ids[n].tolist()], grad=True)
                         if cfg.model.train_text_encoder else index_cond(cond, ro.prompt_ids[n]))
                    w = weight[n] if mb.pairs else torch.zeros_like(weight[n])  # a padding micro-batch counts for nothing
                    # each loss is the mean over its micro-batch's used pairs; scaled by their number over the
                    # optimizer step's used pairs (all ranks), the step's gradient is the exact mean over those
                    # pairs (x processes, because DDP / FSDP average over ranks)
                    scale = (w > 0).sum() * world.size / max(step_used, 1)
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
                            (loss * scale).backward()
                        _accumulate(acc, st, mb.pairs, N * K)
                        continue
                    x, x_next = latents[n, ts], latents[n, ts + 1]  # [M, C, H, W]
                    with policy.accumulate(sync=j == len(batches) - 1):  # reduce gradients once per optimizer step
                        step_out = step_fn.step(policy(x, tm, c), x, ts, eta=s.eta, prev_sample=x_next)
                        loss, st = ppo_clip_loss(step_out.log_prob, old_log_probs[n, ts], adv[n], t.clip_range, weight=w,
                                                 sync_stats=False)
                        if t.kl_beta > 0:
                            with torch.no_grad(), reference():
                                ref_mean = step_fn.step(backbone.predict(x, tm, c), x, ts, eta=s.eta,
                                                        prev_sample=x_next).mean
                            dt = -step_fn.dt(ts).to(device) if t.kl_form == "flow_grpo" else None
                            kl = gaussian_kl(step_out.mean, ref_mean, step_out.std, form=t.kl_form, dt=dt, reduce=s.reduce)
                            kl_l, kst = kl_loss(kl, t.kl_beta, weight=w, sync_stats=False)
                            loss = loss + kl_l
                            st = st | kst
                        (loss * scale).backward()
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
            "train/centered_std": adv_stats["centered_std"],  # SLAS's sigma_B, whatever the estimator
            "train/informative_frac": adv_stats["informative_frac"],
            "train/adv_abs_mean_informative": adv_stats["adv_abs_mean_informative"],
            **({"train/r_push_informative": adv_stats["r_push_informative"]} if "r_push_informative" in adv_stats else {}),
            "train/n_nonfinite_rewards": adv_stats["n_nonfinite"],
            "train/n_in_loss": int(used.sum()),  # samples the loss averages over (all ranks)
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
            metrics.plot(paths.curves)
        # a world's monitor (rank 0) may ask to stop: e.g. ShapesWorld's, when the gold falls while the proxy rises
        # Ctrl-C / SIGTERM (rank 0's, for every rank) stops here, after saving this iteration (the last one ends as usual)
        stop, signum = world.broadcast_object((row.get("monitor/early_stop", 0.0) > 0, interrupts.signum))
        interrupted = signum is not None and not last and not stop
        if last or stop or interrupted or it % cfg.run.checkpoint_every == 0:
            saved = checkpoint.save(paths.checkpoints, it, module, optimizer, scheduler, ema,
                                    {"sampler_position": sampler.position}, keep=cfg.run.keep_checkpoints, group=world,
                                    sharded=policy.sharded, old=old)
        if interrupted:
            bar.close()
            log(f"interrupted by {signal.Signals(signum).name} after iteration {it} of {t.iterations}: saved {saved}; "
                f"continue with `slas train --resume {out}`")
            distributed.shutdown(world)
            raise TrainingInterrupted(signum, saved)
        if stop:
            log(f"early stop at iteration {it}: the monitor saw the gold fall while the proxy rose "
                f"({paths.early_stop})")
            break
        # the last evaluation's value (eval.every apart), not nan on the iterations between evaluations
        shown = next(({k: r[k]} for r in reversed(metrics.rows) for k in ("eval/gold_accuracy", "eval/reward_mean")
                      if k in r), {})
        bar.set_postfix(reward=f"{row['train/reward_mean']:.3f}",
                        **{"gold" if k == "eval/gold_accuracy" else "eval": f"{v:.3f}" for k, v in shown.items()})
    bar.close()
    if start >= t.iterations:  # nothing ran (resumed a finished run): the loop's last eval drew it otherwise
        metrics.plot(paths.curves)
    first = next((r for r in metrics.rows if "eval/gold_accuracy" in r), None)
    final = metrics.rows[-1]
    if first is not None and "eval/gold_accuracy" in final:
        for line in change_lines(first, final):  # each with its n and Wilson interval; "not resolved" when so
            log(line)
    extra = ""
    if world.is_main and first is not None and first["iteration"] != final["iteration"]:
        if before_after(paths, first["iteration"], final["iteration"]):
            extra = f", {paths.before_after.name}"
    log(f"run directory: {out} (metrics.jsonl, curves.png{extra}, samples/, checkpoints/)")
    distributed.shutdown(world)
    return out
