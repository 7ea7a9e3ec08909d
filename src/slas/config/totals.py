"""What one iteration of a config does, in totals: validated (``validate``), logged at the start of a run."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slas.config.root import Config


def derived(cfg: Config) -> dict[str, int]:
    """Totals of one iteration: samples, trained steps per sample (K), (sample, step) pairs, pairs per optimizer
    step and micro-batches per optimizer step; and the samples of the whole run."""
    from slas.algo.samplers.schedule import trainable_steps, trained_steps_per_sample  # torch: import on use

    s, t = cfg.sample, cfg.train
    n = t.prompts_per_iter * t.group_size
    if t.objective == "ppo_sde":
        trainable = trainable_steps(s.steps, s.sde_window, train_last_step=t.train_last_step)
        k = trained_steps_per_sample(len(trainable), t.timestep_fraction)
    else:  # the forward-process objectives and any other registered one: forward.timesteps noise levels per sample
        k = cfg.forward.timesteps
    pairs = n * k
    return {
        "samples_per_iter": n,
        "trained_steps_per_sample": k,
        "pairs_per_iter": pairs,
        "pairs_per_update": pairs // t.updates_per_iter,
        "micro_batches_per_update": -(-(pairs // t.updates_per_iter) // t.micro_batch),
        "total_samples": n * t.iterations,
    }
