"""The GRPO recipe: ``setup(cfg)`` builds the state, ``loop`` reads SAMPLE -> SCORE -> ADVANTAGE -> TRAIN ->
LOG / CHECKPOINT -> EVALUATE, top to bottom.

It knows nothing about the backbone (``slas.policy`` adapters), the reward (``slas.rewards`` registry) or the
objective's loss (``slas.recipe.objectives``); the estimator is one config switch (``advantage.estimator``).

Notation: P prompts per iteration, G samples per prompt, N = P*G, T sampler steps, K trained pairs per sample.

Determinism: every random draw of iteration ``i`` comes from a generator seeded with ``(seed, i)``, and the prompt
order is a pure function of the stream's position. A checkpoint therefore holds all the state that the future
depends on, and a resumed run reproduces the uninterrupted one bit for bit.

Many processes (``torchrun ... -m slas train``): the batch is global; each rank draws the global iteration's
randomness, rolls out and trains its rows ``rows`` of it, and gathers rewards for the advantage
(slas.recipe.parallel). With one process ``rows`` is the whole batch and nothing is wrapped.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from slas.algo import advantages
from slas.algo.samplers.rollout import rollout
from slas.algo.samplers.schedule import step_etas
from slas.config import Config, ConfigError, derived
from slas.config.paths import check_paths
from slas.policy.base import index_cond
from slas.policy.generate import EVAL_SEED_LIMIT
from slas.recipe import checkpoint, failures, threads
from slas.recipe import parallel as distributed
from slas.recipe.builders import (
    build_backbone,
    build_objective,
    build_optimizer,
    build_reward,
    build_sampler,
    eval_prompts,
    train_prompts,
)
from slas.recipe.evaluation import before_after, change_lines, evaluate_iteration, evaluate_reward, proportion_text
from slas.recipe.memory import PhaseMemory
from slas.recipe.metrics import MetricsLog
from slas.recipe.objectives import Batch, Objective
from slas.recipe.parallel import ParallelDenoiser, ProcessGroup
from slas.recipe.prompts import PromptEncoder, PromptStream
from slas.recipe.run_dir import RunDir
from slas.recipe.run_lock import RunLock


def _quiet(msg: str) -> None:
    """The log of ranks other than 0."""


def iteration_seed(seed: int, it: int) -> int:
    """The seed of iteration ``it``'s generator: every random draw of the iteration comes from it. A hash of
    (seed, it) in [EVAL_SEED_LIMIT, 2**32), above the evaluation seeds' domain, so no rollout ever starts from an
    evaluation's noise."""
    h = int.from_bytes(hashlib.blake2b(f"{seed}:{it}".encode(), digest_size=4).digest(), "little")
    return EVAL_SEED_LIMIT + h % EVAL_SEED_LIMIT


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
# Setup
# ----------------------------------------------------------------------------


@dataclass
class TrainState:
    """Everything the loop uses, built once by ``setup``."""

    cfg: Config
    pg: ProcessGroup  # the torchrun processes (rank 0 of 1 without torchrun)
    run: RunDir
    backbone: object  # the slas.policy adapter
    denoiser: ParallelDenoiser  # what TRAIN calls: DDP, FSDP2-sharded or as is
    sampler: object  # the diffusion sampler: schedule + the step shared by rollout and re-scoring
    etas: list[float]  # [T] the SDE noise scale of each step (0: an ODE step)
    objective: Objective
    score_fn: object  # the reward: images, prompts, metas -> {name: [n]}
    stream: PromptStream  # training's prompts
    encoder: PromptEncoder
    eval_entries: list[dict] | None  # data.eval_prompts with the rewards' metadata, or None (the world's evaluation)
    metrics: MetricsLog
    rows: slice  # this process's samples of the global batch
    start: int  # the iteration the loop starts after (0, or the checkpoint's)
    adv_state: dict  # the estimator's running statistics ({} for a stateless one), carried from iteration to iteration
    memory: PhaseMemory  # run.log_memory: the peak memory of each phase
    warned_wait: bool = False  # _warn_slow_wait said its line

    def save(self, it: int) -> Path | None:
        """Checkpoint iteration ``it`` (every rank calls it; rank 0 returns the directory); with run.log_memory its
        peak joins iteration ``it``'s metrics row."""
        o = self.objective
        with self.memory.phase("save"):
            saved = checkpoint.save(self.run.checkpoints, it, self.backbone.module, o.optimizer, o.scheduler, o.ema,
                                    {"sampler_position": self.stream.position, "advantage_state": self.adv_state},
                                    keep=self.cfg.run.keep_checkpoints,
                                    group=self.pg, sharded=self.denoiser.sharded, old=o.old)
        self.metrics.amend(self.memory.row(self.pg))
        return saved

    def evaluate_policy(self, it: int) -> dict:
        """The evaluation of iteration ``it`` with the EMA weights swapped in; {} on ranks other than 0. Sharded
        (FSDP) with data.eval_prompts: every rank generates its share, one block unsharded at a time; else rank 0
        evaluates (FSDP: after every rank joined the all-gather of the whole weights)."""
        self.backbone.module.eval()
        with self.memory.phase("eval"), torch.no_grad(), self.denoiser.swapped(self.objective.ema or {}):
            if self.denoiser.sharded and self.eval_entries is not None:
                return evaluate_reward(self.backbone, self.cfg, self.run.root, it, self.eval_entries, self.score_fn,
                                       pg=self.pg)
            with self.denoiser.gathered():
                if not self.pg.is_main:
                    return {}
                return evaluate_iteration(self.backbone, self.cfg, self.run.root, it, self.eval_entries,
                                          self.score_fn, self.metrics.rows)


def setup(cfg: Config, resume: bool, log) -> TrainState | None:
    """Build the run's state (resumed from its newest intact checkpoint when ``resume``); None when the run is
    already finished. The files the config names, the prompts and the rewards are checked before the backbone loads,
    and the config is written only after all of them."""
    check_paths(cfg)  # every model, reward and prompt file is there: a missing one never costs a model load
    pg = distributed.init(cfg.dist.strategy, cfg.dist.timeout_min)
    log = log if pg.is_main else _quiet
    run = RunDir(cfg.run.out_dir)
    if not resume and run.latest() is not None:
        raise ConfigError(f"{run.root} already holds a run; resume it with `slas train --resume {run.root}` "
                          "or choose another run.out_dir")
    # --resume: the newest intact checkpoint (rank 0 checks its files; a corrupt one is skipped with a warning line)
    found = pg.broadcast_object(checkpoint.latest_intact(run.checkpoints, warn=log) if resume and pg.is_main else None)
    if resume and found is None:
        log(f"nothing to resume in {run.root}: it holds no checkpoint (it stopped before saving one); "
            "training it from iteration 0")
    elif found is not None and found[1]["iteration"] >= cfg.train.iterations:
        done = found[1]["iteration"]
        log(f"{run.root} is finished: its last checkpoint {found[0].name} is at iteration {done} of train.iterations "
            f"{cfg.train.iterations}; to train it further: slas train --resume {run.root} train.iterations=N (N > {done})")
        pg.shutdown()
        return None
    # torch threads: run.threads, or the usable cores shared among this machine's processes; a line if they are busy
    n_threads = threads.configure(cfg.run.threads, "run.threads=N", int(os.environ.get("LOCAL_WORLD_SIZE", "1")), log)
    memory = PhaseMemory(cfg.run.log_memory, cfg.model.device)
    with memory.phase("load"):  # the reward, the backbone (its shards), the optimizer, the objective's copies
        score_fn = build_reward(cfg)  # rewards and prompts before the backbone, the largest load
        stream = PromptStream(train_prompts(cfg), cfg.run.seed)
        eval_entries = eval_prompts(cfg)
        torch.manual_seed(cfg.run.seed)
        random.seed(cfg.run.seed)

        backbone = build_backbone(cfg, sharded=cfg.dist.strategy == "fsdp")
        denoiser = ParallelDenoiser(backbone, pg, cfg.dist.strategy, compile=cfg.model.compile,
                                    gather_rollout=cfg.dist.gather_rollout,
                                    compute_dtype=getattr(backbone, "dtype", torch.float32))
        named = {k: p for k, p in backbone.module.named_parameters() if p.requires_grad}
        optimizer, scheduler = build_optimizer(cfg, list(named.values()))
        sampler = build_sampler(cfg, backbone, cfg.sample.steps)
        rows = pg.share(cfg.train.prompts_per_iter * cfg.train.group_size, "train.prompts_per_iter x train.group_size")
        objective = build_objective(cfg, backbone=backbone, denoiser=denoiser, sampler=sampler, pg=pg, rows=rows,
                                    optimizer=optimizer, scheduler=scheduler, named=named, memory=memory)

    # everything above validated the config, prompts and rewards: only now is the config written (the folder is the
    # run lock's, which removes it again when a start fails)
    if pg.is_main:
        run.root.mkdir(parents=True, exist_ok=True)
        run.config.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    start, adv_state = 0, {}
    if found is not None:
        with memory.phase("resume"):
            state = checkpoint.load(found[0], backbone.module, optimizer, scheduler, objective.ema,
                                    sharded=denoiser.sharded, old=objective.old, state=found[1])
        start, stream.position = state["iteration"], state["sampler_position"]
        adv_state = state.get("advantage_state", {})  # absent in checkpoints of stateless runs before it was saved
        log(f"resumed {run.root} from {found[0]} (iteration {start} of {cfg.train.iterations})")
    metrics = MetricsLog(run.root, cfg, keep_upto=start if found is not None else None, main=pg.is_main, warn=log)
    n_params = sum(p.numel() for p in named.values())
    log(f"run {run.root}: {cfg.train.objective} + {cfg.advantage.estimator} | {n_params:,} trainable params | "
        f"{n_threads} torch threads | "
        + " | ".join(f"{k}={v}" for k, v in derived(cfg).items()))
    etas = step_etas(cfg.sample.steps, cfg.sample.sde_window, cfg.sample.eta)  # [T] eta in the SDE window, else 0
    return TrainState(cfg, pg, run, backbone, denoiser, sampler, etas, objective, score_fn, stream,
                      PromptEncoder(backbone, cfg.model.train_text_encoder), eval_entries, metrics, rows, start,
                      adv_state, memory)


# ----------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------


def train(cfg: Config, resume: bool = False, progress: bool = True, log=print) -> Path:
    """Train ``cfg`` (``resume``: continue ``cfg.run.out_dir`` from its newest intact checkpoint); returns the run
    directory. SIGINT / SIGTERM during the iterations stops after the current one, saves a checkpoint of it and
    raises ``TrainingInterrupted``: ``--resume`` then continues exactly as if it had not stopped.

    A fresh start that fails before its first checkpoint leaves nothing behind. A full disk, or another torchrun
    process that died or stalled, is a ``RunFailure`` that says what happened and where the run can resume from
    (slas.recipe.failures)."""
    interrupts = _Interrupts()
    run = RunDir(cfg.run.out_dir)
    try:
        with RunLock(run) as lock:  # one run per folder, for the run's lifetime (rank 0 holds it)
            # taken under the lock: what a failed start removes is its own, never a running one's
            before = None if resume else failures.ABSENT if run.root in lock.made else failures.snapshot(run.root)
            try:
                state = setup(cfg, resume, log)
                if state is None:
                    return Path(cfg.run.out_dir)
                return loop(state, progress, log if state.pg.is_main else _quiet, interrupts)
            except BaseException as e:
                removed = before is not None and failures.undo_failed_start(run, before)
                failure = failures.explain(e, run, cfg, removed)
                if failure is None:
                    raise
                raise failure from e
    finally:
        interrupts.restore()


def loop(st: TrainState, progress: bool, log, interrupts: _Interrupts) -> Path:
    """Iterations ``st.start + 1 .. train.iterations`` (and the base model's evaluation when starting at 0)."""
    from tqdm import tqdm

    cfg, pg, backbone, objective, mem = st.cfg, st.pg, st.backbone, st.objective, st.memory.phase
    P, G = cfg.train.prompts_per_iter, cfg.train.group_size
    N = P * G
    if st.start == 0:
        t0 = time.time()
        row = {"iteration": 0, **st.evaluate_policy(0), "time/eval_s": time.time() - t0}
        _warn_slow_wait(st, row["time/eval_s"], log)
        st.metrics.write(row | st.memory.row(pg))
        _log_base(row, log)
    bar = tqdm(range(st.start + 1, cfg.train.iterations + 1), initial=st.start, total=cfg.train.iterations,
               desc="train", disable=not progress or not pg.is_main, dynamic_ncols=True)
    interrupts.arm(pg.is_main)  # from here on, Ctrl-C / SIGTERM saves the iteration it interrupts
    for it in bar:
        interrupts.iteration = it
        g = torch.Generator().manual_seed(iteration_seed(cfg.run.seed, it))
        row: dict = {"iteration": it}

        # ---- 1. SAMPLE: P prompts x G rollouts, batched across samples --------------------------------------
        t0 = time.time()
        backbone.module.eval()
        metas = st.stream.next(P)
        prompts = [m["prompt"] for m in metas]
        prompt_ids = torch.arange(P).repeat_interleave(G)  # [N]; one group per prompt slot
        with mem("encode"):
            cond = st.encoder(prompts)  # [P, ...]
        if cfg.sample.same_noise_in_group:  # within a group only (DanceGRPO train_grpo_flux.py:333-350: per rank)
            noise = torch.randn(P, *backbone.sample_shape, generator=g).repeat_interleave(G, dim=0)  # [N, C, H, W]
        else:
            noise = torch.randn(N, *backbone.sample_shape, generator=g)
        with mem("rollout"), st.denoiser.swapped(objective.rollout_weights()), st.denoiser.sampling():
            # this process integrates its rows; step noise is drawn for all N
            ids = prompt_ids[st.rows]  # [n]
            ro = rollout(lambda x, tm, idx, c=cond, ids=ids: backbone.predict(x, tm, index_cond(c, ids[idx])),
                         noise[st.rows].to(backbone.device), st.sampler, eta=st.etas, generator=g, prompt_ids=ids,
                         group_ids=ids, batch_size=cfg.sample.batch_size, global_size=N, offset=st.rows.start,
                         keep_trajectory=objective.keep_trajectory)
        with mem("decode"):
            images = backbone.decode(ro.x0)  # uint8 [n, H, W, 3], kept in memory
        row["time/rollout_s"] = time.time() - t0

        # ---- 2. SCORE: batched, in memory; every rank's scores --------------------------------------------
        t0 = time.time()
        metas_n = [metas[i] for i in ro.prompt_ids.tolist()]
        with mem("reward"):
            scores = pg.gather_arrays(st.score_fn(images, [m["prompt"] for m in metas_n], metas_n))
        r = torch.from_numpy(scores["total"])  # [N] float64
        row["time/reward_s"] = time.time() - t0

        # ---- 3. ADVANTAGE over the global batch (a stateful estimator's running statistics carried along) ----
        adv, adv_stats, st.adv_state = advantages.compute_with_state(
            cfg.advantage.estimator, r, pg.gather(ro.group_ids), st.adv_state, adv_clip=cfg.advantage.adv_clip,
            **cfg.advantage.params)
        adv_stats |= objective.advantage_stats(adv)
        finite = advantages.finite_mask(r)  # [N]: NaN/inf rewards never reach the loss
        # [N] the samples the loss averages over; Flow-GRPO also drops zero advantages (train_sd3.py:796-817), but
        # by re-sampling per rank, which weights ranks unequally: here the step stays the exact mean over all ranks
        used = finite & (adv != 0) if cfg.train.drop_zero_advantage else finite

        # ---- 4. TRAIN: the objective's optimizer steps over K (sample, step) pairs per sample ---------------
        t0 = time.time()
        batch = Batch(ro, cond, prompts, adv[st.rows].float().to(backbone.device),
                      used[st.rows].float().to(backbone.device), used, g, it,
                      (lambda p: st.encoder(p, grad=True)) if cfg.model.train_text_encoder else None)
        train_stats = objective.update(batch)
        row["time/train_s"] = time.time() - t0

        # ---- 5. LOG / CHECKPOINT / EVALUATE -----------------------------------------------------------------
        row |= _train_row(r, finite, used, adv_stats, train_stats)
        row |= {f"reward/{name}": float(np.nanmean(scores[name])) for name in cfg.reward.weights}
        last = it == cfg.train.iterations
        if last or (cfg.eval.every and it % cfg.eval.every == 0):
            t0 = time.time()
            row |= st.evaluate_policy(it)
            row["time/eval_s"] = time.time() - t0
            _warn_slow_wait(st, row["time/eval_s"], log)
        st.metrics.write(row | st.memory.row(pg))
        if any(k.startswith("eval/") for k in row):
            st.metrics.plot(st.run.curves)
        # a world's monitor (rank 0) may ask to stop: e.g. ShapesWorld's, when the gold falls while the proxy rises;
        # Ctrl-C / SIGTERM (rank 0's, for every rank) stops here, after saving this iteration
        stop, signum = pg.broadcast_object((row.get("monitor/early_stop", 0.0) > 0, interrupts.signum))
        interrupted = signum is not None and not last and not stop
        if last or stop or interrupted or it % cfg.run.checkpoint_every == 0:
            saved = st.save(it)
        if interrupted:
            bar.close()
            log(f"interrupted by {signal.Signals(signum).name} after iteration {it} of {cfg.train.iterations}: saved "
                f"{saved}; continue with `slas train --resume {st.run.root}`")
            st.denoiser.close()
            pg.shutdown()
            raise TrainingInterrupted(signum, saved)
        if stop:
            log(f"early stop at iteration {it}: the monitor saw the gold fall while the proxy rose ({st.run.early_stop})")
            break
        bar.set_postfix(**_postfix(row, st.metrics.rows))
    bar.close()
    _finish(st, log)
    return st.run.root


# ----------------------------------------------------------------------------
# What the loop logs
# ----------------------------------------------------------------------------


def _train_row(r: torch.Tensor, finite: torch.Tensor, used: torch.Tensor, adv_stats: dict, train_stats: dict) -> dict:
    """One iteration's ``train/*`` metrics: the reward, the advantages' diagnostics and the objective's."""
    row = {
        "train/reward_mean": float(r[finite].mean()) if finite.any() else float("nan"),
        "train/reward_std": float(r[finite].std()) if finite.sum() > 1 else 0.0,
        "train/adv_abs_mean": adv_stats["adv_abs_mean"],
        "train/adv_mean": adv_stats["adv_mean"],  # signed, the net push: 0 whenever each group's advantages sum to 0
        "train/adv_clip_frac": adv_stats["clip_frac"],
        "train/zero_std_groups": adv_stats["zero_std_groups"],
        "train/centered_std": adv_stats["centered_std"],  # SLAS's sigma_B, whatever the estimator
        "train/batch_std": adv_stats["batch_std"],  # the sigma the estimator divided by (0 for per-group stds)
        "train/informative_frac": adv_stats["informative_frac"],
        "train/adv_abs_mean_informative": adv_stats["adv_abs_mean_informative"],
        **({"train/r_push_informative": adv_stats["r_push_informative"]} if "r_push_informative" in adv_stats else {}),
        "train/n_nonfinite_rewards": adv_stats["n_nonfinite"],
        "train/n_in_loss": int(used.sum()),  # samples the loss averages over (all ranks)
    }
    # the objective's loss diagnostics (losses.PPO_STATS / NFT_STATS / AWM_STATS; kl_mean is train/kl)
    row |= {f"train/{'kl' if k == 'kl_mean' else k}": v for k, v in train_stats.items() if k != "adv_mean"}
    return row


def _warn_slow_wait(st: TrainState, seconds: float, log) -> None:
    """Rank 0 evaluates alone while the other processes wait for it in a collective, which fails after
    dist.timeout_min: warn (once) when an evaluation takes more than half of that."""
    limit = st.cfg.dist.timeout_min * 60
    if st.pg.size > 1 and seconds > limit / 2 and not st.warned_wait:
        st.warned_wait = True
        log(f"warning: this evaluation took {seconds:.0f} s, more than half of dist.timeout_min "
            f"({st.cfg.dist.timeout_min:g} min): the other torchrun processes wait for it in a collective and stop "
            "after that long; raise dist.timeout_min")


def _postfix(row: dict, rows: list[dict]) -> dict:
    """The progress bar's: the training reward and the last evaluation's value (not nan between evaluations)."""
    shown = next(({k: r[k]} for r in reversed(rows) for k in ("eval/gold_accuracy", "eval/reward_mean") if k in r), {})
    return {"reward": f"{row['train/reward_mean']:.3f}",
            **{"gold" if k == "eval/gold_accuracy" else "eval": f"{v:.3f}" for k, v in shown.items()}}


def _log_base(row: dict, log) -> None:
    if "eval/gold_accuracy" in row:
        log(f"iteration 0 (base model): held-out strict {proportion_text(row, 'eval/gold_accuracy')}, "
            f"GenEval rules {row['eval/geneval_accuracy']:.1%}, exact count {row['eval/exact_count']:.1%}")
    elif "eval/reward_mean" in row:
        log(f"iteration 0 (base model): held-out reward {row['eval/reward_mean']:.4f}")


def _finish(st: TrainState, log) -> None:
    """The closing lines: each evaluation proportion before and after, the before/after figure, the run's files."""
    rows = st.metrics.rows
    if st.start >= st.cfg.train.iterations:  # nothing ran (resumed a finished run): the loop's last eval drew it
        st.metrics.plot(st.run.curves)
    first = next((r for r in rows if "eval/gold_accuracy" in r), None)
    final = rows[-1]
    if first is not None and "eval/gold_accuracy" in final:
        for line in change_lines(first, final):  # each with its n and Wilson interval; "not resolved" when so
            log(line)
    extra = ""
    if st.pg.is_main and first is not None and first["iteration"] != final["iteration"]:
        if before_after(st.run, first["iteration"], final["iteration"]):
            extra = f", {st.run.before_after.name}"
    log(f"run directory: {st.run.root} (metrics.jsonl, curves.png{extra}, samples/, checkpoints/)")
    st.denoiser.close()
    st.pg.shutdown()
