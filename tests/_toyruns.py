"""The overrides of a tiny training run, shared by the tests that train (tests/conftest.py builds the model)."""


def tiny_overrides(ckpt, out=None, **extra) -> list[str]:
    """``slas train`` overrides of a 2-iteration run of the XS model at ``ckpt`` into ``out``: 2 prompts x 3
    samples, 3 steps (all stochastic, all trained), an evaluation of 6 prompts x 2 steps after every iteration,
    a checkpoint every iteration. The objective is PPO on SDE log-probs unless ``extra`` says otherwise.
    ``extra`` adds or replaces keys; a value of None drops the key (the config's
    value is kept), and ``out=None`` leaves ``run.out_dir`` to the caller (`slas compare` sets it)."""
    ov = {
        "model.checkpoint": str(ckpt), "run.out_dir": None if out is None else str(out),
        # PPO on SDE log-probs with its own sampling settings (the default objective is a forward-process one)
        "train.objective": "ppo_sde", "sample.eta": 0.5, "sample.same_noise_in_group": True,
        "eval.in_domain_per_tag": 1, "train.lr_schedule": "constant", "train.ema_decay": 0.0,
        "train.iterations": 2, "train.prompts_per_iter": 2, "train.group_size": 3,
        "sample.steps": 3, "train.timestep_fraction": 1.0, "train.micro_batch": 4, "train.updates_per_iter": 2,
        "train.lr": 1e-3, "train.clip_range": 0.2,
        "eval.every": 1, "eval.max_prompts": 6, "eval.images_per_tag": 2, "eval.steps": 2,
        "run.checkpoint_every": 1, "run.keep_checkpoints": 10,
        "sample.sde_window": "[]",  # every step stochastic: tests read all T log-probs
    } | extra
    return [f"{k}={v}" for k, v in ov.items() if v is not None]
