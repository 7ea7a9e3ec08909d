"""Policy objectives: what TRAIN does with one iteration's rollout and advantages (``train.objective``).

Every objective consumes the same advantages, behind one small interface:

- ``keep_trajectory``: whether the rollout must keep x_T..x_0 and the transitions' log-probs (PPO re-scores them;
  the forward-process objectives train on the clean samples alone);
- ``rollout_weights()``: the parameters to sample with (DiffusionNFT samples with its old policy);
- ``draw_pairs(N, g)``: the (sample, step) pairs of the iteration, in training order;
- ``prepare(batch, n_idx, t_idx)``: a no-grad pre-pass before the first optimizer step (AWM's old error);
- ``micro_batch_loss(batch, mb, cond, weight) -> (loss, stats)``: one micro-batch's loss;
- ``end_iteration(iteration)``: state updated once per iteration (the old policy's EMA).

``Objective.update`` runs the optimizer steps over those pairs, the same for every objective: micro-batches split
over ranks (slas.recipe.parallel), gradient accumulation, grad-norm clipping, the learning-rate schedule and the
EMA of the weights. A new objective is one subclass and one line ``slas.plugins.register_objective(name, cls)``.

Notation: N samples in the global batch, n this process's rows, K pairs per sample, M pairs in a micro-batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

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
from slas.algo.samplers.rollout import Rollout
from slas.algo.samplers.schedule import stratified_bounds, stratified_steps, trainable_steps
from slas.config import Config, derived
from slas.policy.base import index_cond
from slas.policy.common import cfg_free
from slas.recipe.memory import OFF, PhaseMemory
from slas.recipe.parallel import MicroBatch, ParallelDenoiser, ProcessGroup, swapped_params


@dataclass
class Batch:
    """One iteration's rollout as TRAIN sees it: this process's rows of the global batch."""

    rollout: Rollout  # x0 [n, C, H, W]; prompt_ids [n]; PPO: latents [n, T+1, C, H, W], log_probs [n, T]
    cond: dict[str, Tensor]  # [P, ...] the iteration's prompt conditioning
    prompts: list[str]  # [P] the iteration's prompts
    adv: Tensor  # [n] float32 on the device
    weight: Tensor  # [n] 1.0 for the samples the loss averages over, 0.0 for the rest
    used: Tensor  # [N] bool, every rank's samples: the ones in the loss
    generator: torch.Generator  # the iteration's generator: every random draw of TRAIN comes from it
    iteration: int
    encode: Callable[[list[str]], dict[str, Tensor]] | None = None  # a trained text encoder (with gradients)

    def conditioning(self, n: Tensor) -> dict[str, Tensor]:
        """[M, ...] the conditioning of samples ``n``; encoded afresh (each micro-batch its own graph) when the text
        encoder trains, else rows of the iteration's cache."""
        if self.encode is not None:
            return self.encode([self.prompts[i] for i in self.rollout.prompt_ids[n].tolist()])
        return index_cond(self.cond, self.rollout.prompt_ids[n])


def _accumulate(acc: dict[str, Tensor], stats: dict[str, Tensor], pairs: int, total: int) -> None:
    """Add one micro-batch's loss diagnostics (0-d tensors), weighted by its share of the iteration's pairs;
    ``ratio_max_dev`` is a max. Padding micro-batches (pairs 0) add nothing."""
    if not pairs:
        return
    for k, v in stats.items():
        if k == "ratio_max_dev":
            acc[k] = torch.maximum(acc[k], v.double()) if k in acc else v.double()
        else:
            acc[k] = acc.get(k, 0.0) + v.double() * pairs / total


def _copy(named: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: p.detach().clone() for k, p in named.items()}


class Objective:
    """The shared optimizer loop; subclasses say which pairs to train and their loss."""

    keep_trajectory = False

    def __init__(self, cfg: Config, *, backbone, denoiser: ParallelDenoiser, sampler, pg: ProcessGroup, rows: slice,
                 optimizer, scheduler, named: dict[str, torch.nn.Parameter], memory: PhaseMemory = OFF):
        self.cfg, self.backbone, self.denoiser, self.sampler, self.pg, self.rows = (cfg, backbone, denoiser, sampler,
                                                                                   pg, rows)
        self.optimizer, self.scheduler, self.named, self.memory = optimizer, scheduler, named, memory
        self.params = list(named.values())
        t = cfg.train
        self.ema = _copy(named) if t.ema_decay > 0 else None
        # the KL reference: the adapter's own (LoRA switched off, no second copy), else a frozen copy of the start
        self.ref = _copy(named) if self.kl_beta > 0 and backbone.reference() is None else None

    # ---- what a subclass says ---------------------------------------------------------------------------------

    @property
    def kl_beta(self) -> float:
        """Weight of the KL to the reference policy (0: no reference kept)."""
        return self.cfg.train.kl_beta

    @property
    def old(self) -> dict[str, Tensor] | None:
        """The old policy's weights (checkpointed), or None."""
        return None

    def pairs_per_sample(self) -> int:
        """K: the (sample, step) pairs trained per sample and iteration (slas.config.derived, which validation and
        the run's first log line use)."""
        return derived(self.cfg)["trained_steps_per_sample"]

    def rollout_weights(self) -> dict[str, Tensor]:
        """The parameters to sample with ({}: the policy's own)."""
        return {}

    def draw_pairs(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """The global sample ids [N*K] and step indices [N*K] of the pairs to train, in training order."""
        raise NotImplementedError

    def prepare(self, batch: Batch, n_idx: Tensor, t_idx: Tensor) -> None:
        """A no-grad pre-pass over the pairs before the first optimizer step."""

    def micro_batch_loss(self, batch: Batch, mb: MicroBatch, cond: dict[str, Tensor], weight: Tensor):
        """``(loss, stats)`` of micro-batch ``mb`` (``weight`` [M]: 0 masks a pair), gradients flowing into the
        policy; stats are 0-d detached tensors (read once per iteration)."""
        raise NotImplementedError

    def advantage_stats(self, adv: Tensor) -> dict[str, float]:
        """Extra per-iteration diagnostics of the global advantages [N]."""
        return {}

    def context(self):
        """The context of the whole TRAIN phase."""
        return contextlib.nullcontext()

    def end_iteration(self, iteration: int) -> None:
        """State updated once per iteration, after its last optimizer step."""

    # ---- shared ------------------------------------------------------------------------------------------------

    def reference(self):
        """The context in which the backbone is the KL reference policy."""
        return self.backbone.reference() or swapped_params(self.backbone.module, self.ref)

    def velocity(self, weights, x_t: Tensor, tm: Tensor, cond: dict[str, Tensor], ts: Tensor) -> Tensor:
        """[M, ...] no-grad velocity at x_t under another policy's weights (``weights``: a context)."""
        with torch.no_grad(), weights:
            return self.sampler.velocity(self.backbone.predict(x_t, tm, cond), x_t, ts)

    def update(self, batch: Batch) -> dict[str, float]:
        """TRAIN: ``train.updates_per_iter`` optimizer steps over the iteration's pairs; returns the loss diagnostics
        (averaged over the pairs, every rank's), ``grad_norm`` (mean over the steps) and ``lr``."""
        t = self.cfg.train
        self.backbone.module.train()
        n_idx, t_idx = self.draw_pairs(len(batch.used), batch.generator)  # [N*K] each
        total = len(n_idx)
        per_update = total // t.updates_per_iter
        acc: dict[str, Tensor] = {}  # loss diagnostics, summed as tensors: no host sync per micro-batch
        grad_norms = []
        phase = self.memory.phase  # run.log_memory: the peaks of the micro-batches ("train") and steps ("step")
        with self.context():
            with phase("train"):
                self.prepare(batch, n_idx, t_idx)
            for u in range(t.updates_per_iter):
                span = slice(u * per_update, (u + 1) * per_update)
                mbs = self.pg.micro_batches(n_idx[span], t_idx[span], self.rows, t.micro_batch)
                step_used = int(batch.used[n_idx[span]].sum())  # the pairs of this step in the loss, every rank's
                for j, mb in enumerate(mbs):
                    cond = batch.conditioning(mb.n)
                    w = batch.weight[mb.n] if mb.pairs else torch.zeros_like(batch.weight[mb.n])  # padding: nothing
                    # each loss is the mean over its micro-batch's used pairs; scaled by their number over the step's
                    # used pairs (all ranks), the step's gradient is the exact mean over those pairs (x processes,
                    # because DDP / FSDP average over ranks)
                    scale = (w > 0).sum() * self.pg.size / max(step_used, 1)
                    with phase("train"), self.denoiser.accumulate(sync=j == len(mbs) - 1):  # DDP: the last one
                        loss, st = self.micro_batch_loss(batch, mb, cond, w)
                        (loss * scale).backward()
                    _accumulate(acc, st, mb.pairs, total)
                with phase("step"):
                    grad_norms.append(self.denoiser.clip_grad_norm_(self.params, t.max_grad_norm))
                    self.optimizer.step()
                    # freed now, not before the next step: else one copy of the trained weights' size (the shards'
                    # under FSDP) stays through the next rollout, evaluation and checkpoint
                    self.optimizer.zero_grad(set_to_none=True)
                    self.scheduler.step()
                    if self.ema is not None:
                        with torch.no_grad():
                            for k, p in self.named.items():
                                self.ema[k].lerp_(p.detach(), 1 - t.ema_decay)
        with phase("step"):
            self.end_iteration(batch.iteration)
        stats = {k: float(self.pg.all_reduce(v, "max" if k == "ratio_max_dev" else "sum")) for k, v in acc.items()}
        stats["grad_norm"] = float(np.mean([float(gn) for gn in grad_norms]))
        stats["lr"] = self.scheduler.get_last_lr()[0]
        return stats


class PPOObjective(Objective):
    """PPO-clip on the log-probs of the stored SDE transitions (DanceGRPO, Flow-GRPO, DDPO), with an optional KL to
    the reference policy (train.kl_beta)."""

    keep_trajectory = True

    def __init__(self, cfg: Config, **parts):
        super().__init__(cfg, **parts)
        s = cfg.sample
        # [S] step indices with a log-prob to train
        self.trainable = torch.tensor(trainable_steps(s.steps, s.sde_window, train_last_step=cfg.train.train_last_step))

    def draw_pairs(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        k = self.pairs_per_sample()
        steps_k = self.trainable[torch.rand(n, len(self.trainable), generator=g).argsort(dim=1)[:, :k]]  # [N, K]
        return _shuffled(steps_k, g)

    def micro_batch_loss(self, batch: Batch, mb: MicroBatch, cond: dict[str, Tensor], weight: Tensor):
        s, t = self.cfg.sample, self.cfg.train
        n, ts = mb.n, mb.ts  # [M] this process's samples, their step indices
        tm = self.sampler.model_time(ts)  # [M] the backbone's time input (sigma, or DDPM timestep)
        x, x_next = batch.rollout.latents[n, ts], batch.rollout.latents[n, ts + 1]  # [M, C, H, W]
        step_out = self.sampler.step(self.denoiser(x, tm, cond), x, ts, eta=s.eta, prev_sample=x_next)
        loss, st = ppo_clip_loss(step_out.log_prob, batch.rollout.log_probs[n, ts], batch.adv[n], t.clip_range,
                                 weight=weight, sync_stats=False)
        if t.kl_beta > 0:
            with torch.no_grad(), self.reference():
                ref_mean = self.sampler.step(self.backbone.predict(x, tm, cond), x, ts, eta=s.eta,
                                             prev_sample=x_next).mean
            dt = -self.sampler.dt(ts).to(x.device) if t.kl_form == "flow_grpo" else None
            kl = gaussian_kl(step_out.mean, ref_mean, step_out.std, form=t.kl_form, dt=dt, reduce=s.reduce)
            kl_l, kst = kl_loss(kl, t.kl_beta, weight=weight, sync_stats=False)
            loss, st = loss + kl_l, st | kst
        return loss, st


def _shuffled(steps_k: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """[N, K] step indices per sample -> (sample ids, step indices) [N*K] in one random order."""
    n, k = steps_k.shape
    n_idx = torch.arange(n).repeat_interleave(k)  # [N*K]
    t_idx = steps_k.reshape(-1)  # [N*K]
    order = torch.randperm(n * k, generator=g)
    return n_idx[order], t_idx[order]


def pair_noise(seed: int, keys: Tensor, shape: tuple[int, ...]) -> Tensor:
    """[M, *shape] standard normal noise of the forward-process pairs ``keys`` [M] (sample * T + level): a pure
    function of (seed, key), so it does not depend on micro-batching, the number of processes or when it is drawn
    (AWM's old error and its training step see the same x_t), and a resumed run redraws it exactly."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed + k)) for k in keys.tolist()])


def old_decay(cfg: Config, optimizer_steps: int) -> float:
    """Decay of the old-policy EMA after ``optimizer_steps`` steps: 0 for the first ``flat`` steps, then
    min(rate * (steps - flat), max) (DiffusionNFT train_nft_sd3.py:169-189 ``return_decay``, flat 0 in its type 1 and
    75 in its type 2; AWM ``kl_ema_decay_type: linear``, train_sd3_awm.py:1410-1413)."""
    f = cfg.forward
    steps = optimizer_steps - f.old_decay_flat
    return 0.0 if steps < 0 else min(f.old_decay_rate * steps, f.old_decay_max)


class ForwardObjective(Objective):
    """The forward-process objectives (DiffusionNFT, AWM): flow matching on the clean samples, re-noised at K
    distinct levels of the sampler's schedule per sample, each with fresh noise, without CFG; an old policy v_old,
    an EMA of the policy updated after every iteration; an optional velocity KL to the reference (forward.kl_beta).
    Subclasses give the loss of the noised pairs (``pair_loss``)."""

    def __init__(self, cfg: Config, **parts):
        super().__init__(cfg, **parts)
        self._old = _copy(self.named)
        self.noise_seed = 0

    @property
    def kl_beta(self) -> float:
        return self.cfg.forward.kl_beta

    @property
    def old(self) -> dict[str, Tensor]:
        return self._old

    def context(self):
        return cfg_free(self.backbone)  # DiffusionNFT trains the conditional velocity without CFG

    def draw_pairs(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        f, steps = self.cfg.forward, self.cfg.sample.steps
        if f.time_sampling == "stratified":  # AWM's: one level per stratum of [1, int(T x time_fraction))
            steps_k = stratified_steps(n, stratified_bounds(steps, self.pairs_per_sample(), f.time_fraction), g)
        else:  # K distinct levels of all T (DiffusionNFT's per-sample permutation)
            steps_k = torch.rand(n, steps, generator=g).argsort(dim=1)[:, : self.pairs_per_sample()]  # [N, K]
        self.noise_seed = int(torch.randint(0, 2**62, (1,), generator=g))  # the pairs' noise: pair_noise(seed, key)
        return _shuffled(steps_k, g)

    def noised(self, x0: Tensor, n: Tensor, ts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The forward-process pairs of this process's samples ``n`` [M] (clean x0 [M, ...]) at step levels ``ts`` [M]:
        x_t [M, ...], the flow level t [M] and the target velocity eps - x0 [M, ...]."""
        keys = (n + self.rows.start) * self.cfg.sample.steps + ts  # global: the same pair on any number of ranks
        eps = pair_noise(self.noise_seed, keys, tuple(x0.shape[1:])).to(x0.device)
        x_t, level = self.sampler.noised(x0, eps, ts)
        return x_t, level.to(x0.device), eps - x0.float()

    def micro_batch_loss(self, batch: Batch, mb: MicroBatch, cond: dict[str, Tensor], weight: Tensor):
        n, ts = mb.n, mb.ts
        tm = self.sampler.model_time(ts)
        x_t, level, target = self.noised(batch.rollout.x0[n], n, ts)
        # the other policies first: their forwards swap weights, which must not happen between the policy's forward
        # and its backward
        v_old = self.velocity(swapped_params(self.backbone.module, self._old), x_t, tm, cond, ts) if self.uses_old else None
        v_ref = self.velocity(self.reference(), x_t, tm, cond, ts) if self.kl_beta > 0 else None
        v = self.sampler.velocity(self.denoiser(x_t, tm, cond), x_t, ts)  # [M, C, H, W]
        loss, st = self.pair_loss(batch, mb, v, v_old, target, level, weight)
        if v_ref is not None:
            kl_l, kst = kl_loss(velocity_kl(v, v_ref), self.kl_beta, weight=weight, sync_stats=False)
            loss, st = loss + kl_l, st | kst
        return loss, st

    @property
    def uses_old(self) -> bool:
        """Whether the loss needs v_old."""
        return True

    def pair_loss(self, batch: Batch, mb: MicroBatch, v: Tensor, v_old: Tensor | None, target: Tensor, level: Tensor,
                  weight: Tensor):
        """``(loss, stats)`` of the noised pairs: v [M, ...] the policy's velocity (with gradient), v_old the old
        policy's, target = eps - x0, level [M] the flow level t."""
        raise NotImplementedError

    def end_iteration(self, iteration: int) -> None:
        """v_old <- decay v_old + (1 - decay) policy (DiffusionNFT train_nft_sd3.py:1034-1039)."""
        decay = old_decay(self.cfg, iteration * self.cfg.train.updates_per_iter)
        with torch.no_grad():
            for k, p in self.named.items():
                self._old[k].lerp_(p.detach(), 1 - decay)


class NFTObjective(ForwardObjective):
    """DiffusionNFT (arXiv 2509.16117): samples with v_old; the implicit positive and negative policies around it,
    weighted by the optimality probability r of each sample's advantage (slas.algo.losses.nft_loss)."""

    def rollout_weights(self) -> dict[str, Tensor]:
        return self._old  # DiffusionNFT samples with v_old (train_nft_sd3.py:640-660)

    def advantage_stats(self, adv: Tensor) -> dict[str, float]:
        """``r_push_informative``: mean |r - 1/2| over the samples with a non-zero advantage (the push on r)."""
        f = self.cfg.forward
        inf = adv != 0
        push = (nft_optimality(adv[inf].float(), f.r_scale, f.r_map) - 0.5).abs()
        return {"r_push_informative": float(push.mean()) if inf.any() else 0.0}

    def pair_loss(self, batch, mb, v, v_old, target, level, weight):
        f = self.cfg.forward
        r_opt = nft_optimality(batch.adv[mb.n], f.r_scale, f.r_map)  # [M]
        return nft_loss(v, v_old, target, level, r_opt, f.beta, adaptive_weight=f.adaptive_weight,
                        loss_scale=f.loss_scale, weight=weight, sync_stats=False)


class AWMObjective(ForwardObjective):
    """Advantage Weighted Matching (arXiv 2509.25050): samples with the policy; the flow-matching error of each pair
    weighted by its advantage, with the clipped ratio exp(err_old - err) and an optional velocity KL to v_old
    (slas.algo.losses.awm_loss)."""

    def __init__(self, cfg: Config, **parts):
        super().__init__(cfg, **parts)
        self.old_err: Tensor | None = None  # [n, T] each pair's error under the policy that sampled

    @property
    def uses_old(self) -> bool:
        return self.cfg.forward.old_kl > 0

    def prepare(self, batch: Batch, n_idx: Tensor, t_idx: Tensor) -> None:
        """With several optimizer steps per iteration, AWM's ratio needs each pair's matching error under the policy
        that sampled, before any update (one no-grad pass)."""
        self.old_err = None
        if self.cfg.train.updates_per_iter == 1:
            return
        f, x0 = self.cfg.forward, batch.rollout.x0
        self.old_err = torch.zeros(len(x0), self.cfg.sample.steps, dtype=torch.float64, device=x0.device)  # [n, T]
        with torch.no_grad():
            for mb in self.pg.micro_batches(n_idx, t_idx, self.rows, self.cfg.train.micro_batch):
                x_t, level, target = self.noised(x0[mb.n], mb.n, mb.ts)
                tm = self.sampler.model_time(mb.ts)
                cond = index_cond(batch.cond, batch.rollout.prompt_ids[mb.n])
                v = self.sampler.velocity(self.denoiser(x_t, tm, cond), x_t, mb.ts)
                self.old_err[mb.n, mb.ts] = awm_weighted_error(v, target, level, f.weighting, f.ghuber_power)

    def pair_loss(self, batch, mb, v, v_old, target, level, weight):
        f = self.cfg.forward
        err = awm_weighted_error(v, target, level, f.weighting, f.ghuber_power)  # [M] fp64
        loss, st = awm_loss(err, batch.adv[mb.n] / f.adv_scale,
                            old_err=None if self.old_err is None else self.old_err[mb.n, mb.ts],
                            clip_range=f.clip_range, weight=weight, sync_stats=False,
                            fm_err=velocity_kl(v.detach(), target))
        if f.old_kl > 0:
            okl, okst = kl_loss(velocity_kl(v, v_old), f.old_kl, weight=weight, sync_stats=False)
            loss, st = loss + okl, st | {"old_kl": okst["kl_mean"]}
        return loss, st
