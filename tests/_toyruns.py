"""Shared by the tests of tiny ShapesWorld runs (tests/conftest.py builds the model): the overrides of a tiny training
run, the grid prompts of the labelled run, and the check that an exported model computes what the run's model computes."""

import torch

# the evaluation grid of the labelled run (tests/conftest.py: labelled_run)
GRID_PROMPTS = ["a photo of a red circle", "a photo of two squares"]


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


def same_outputs(unet_a, unet_b, te_a, te_b, model):
    """Exported (``unet_a``, ``te_a``) and the run's (``unet_b``, ``te_b``) UNet and text encoder agree on GRID_PROMPTS."""
    tok = model.tokenize(GRID_PROMPTS)
    with torch.no_grad():
        h_a, h_b = te_a(**tok).last_hidden_state, te_b(**tok).last_hidden_state
        z = torch.randn(2, unet_a.config.in_channels, 16, 16, generator=torch.Generator().manual_seed(0))
        t = torch.tensor([250.0, 800.0])
        v_a = unet_a(z, t, encoder_hidden_states=h_b, encoder_attention_mask=tok["attention_mask"]).sample
        v_b = unet_b(z, t, encoder_hidden_states=h_b, encoder_attention_mask=tok["attention_mask"]).sample
    assert torch.allclose(h_a, h_b, atol=1e-6)
    assert torch.allclose(v_a, v_b, atol=1e-5), (v_a - v_b).abs().max()
