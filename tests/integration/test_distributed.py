"""Many processes (slas.recipe.parallel) on the CPU with gloo: a 2-process run reproduces the 1-process run with the same
global batch and seed, resumes exactly, and FSDP2's sharded checkpoints reload at another world size.

Processes are launched as torchrun would (tests/_torchrun.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import weakref
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from _torchrun import launch
from _toyruns import tiny_overrides
from slas.config import load_config
from slas.recipe import checkpoint, parallel
from slas.recipe.builders import build_backbone

# Only the attention weights train: with all UNet parameters, biases that feed a GroupNorm of one channel per group
# (the XS model's 8-channel blocks) have a gradient that is exactly 0 in exact arithmetic, so it is pure rounding
# noise, which Adam's normalisation turns into O(lr) steps whose sign depends on the summation order. That is not a
# property of distribution (any other reduction order does it, e.g. GPU atomics); docs/distributed.md shows it.
OVERRIDES = {
    "train.iterations": 3, "train.prompts_per_iter": 3, "train.group_size": 2,  # N = 6: group 1 spans both ranks
    "sample.steps": 3, "sample.sde_window": "[]", "train.timestep_fraction": 1.0, "train.micro_batch": 4,
    "train.updates_per_iter": 2, "train.lr": 1e-3, "train.clip_range": 0.2, "train.ema_decay": 0.5,
    "train.kl_beta": 0.1,  # a frozen-copy KL reference: under FSDP it is swapped into the shards
    "sample.batch_size": 3,  # the same forward shapes in both runs: rollouts are then bitwise equal
    "model.trainable": "[attn]", "reward.weights": "{toy_clean: 1.0}", "monitor.enabled": "false",
    "eval.every": 2, "eval.max_prompts": 2, "eval.images_per_tag": 1, "eval.steps": 2,
    "run.checkpoint_every": 1, "run.keep_checkpoints": 10,
    "train.objective": "ppo_sde", "sample.eta": 0.5, "sample.same_noise_in_group": "true",
    "eval.in_domain_per_tag": 1, "train.lr_schedule": "constant",  # the fsdp test extends the run by an iteration
}
# Rollouts and rewards of iteration 1 are bitwise equal; later rewards and the train diagnostics agree to REL
# (relative) or ABS (absolute): the ratio statistics are exp/differences of fp32 log-probs of magnitude ~1, so their
# resolution is ~1e-7 absolute whatever their size, and the micro-batches of the two runs have different shapes
# (a rank trains only the pairs of the samples it rolled out).
REL, ABS = 1e-5, 3e-7  # ABS: a few fp32 ulps at 1 (1.2e-7), e.g. max |rho - 1|
# max |w_1proc - w_2proc| after training (the weights move by ~6e-3): float reduction order only. Adam turns tiny
# gradient differences into update differences; nft reached 1.7e-5 on an AMD EPYC (1e-5 held elsewhere)
WEIGHT_TOL = 5e-5


def _argv(ckpt, out, **extra) -> list[str]:
    ov = OVERRIDES | {"model.checkpoint": ckpt, "run.out_dir": out} | extra
    return ["train", "--no-progress"] + [f"{k}={v}" for k, v in ov.items()]


def _launch(world: int, argv: list[str]) -> None:
    launch(world, argv)


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _strip_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def _assert_close_rows(a: list[dict], b: list[dict]) -> None:
    a, b = _strip_time(a), _strip_time(b)
    assert [r["iteration"] for r in a] == [r["iteration"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert math.isclose(ra[k], rb[k], rel_tol=REL, abs_tol=ABS), (ra["iteration"], k, ra[k], rb[k])


def _weights(run: Path, it: int, name: str = "model") -> dict[str, torch.Tensor]:
    return checkpoint.read_weights(run / "checkpoints" / f"iter_{it:06d}", name)  # safetensors or the DCP shards


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def runs(tiny_ckpt, tmp_path_factory):
    """The same config in 1 process and in 2 (DDP)."""
    root = tmp_path_factory.mktemp("dist")
    _launch(1, _argv(tiny_ckpt, root / "one"))
    _launch(2, _argv(tiny_ckpt, root / "two"))
    return root / "one", root / "two"


def test_two_processes_reproduce_one_process(runs):
    one, two = runs
    a, b = _rows(one), _rows(two)
    assert len(a) == 4  # iteration 0 (evaluation) + 3
    assert a[1]["reward/toy_clean"] == b[1]["reward/toy_clean"]  # the same rollouts, bit for bit
    assert a[1]["train/adv_abs_mean"] == b[1]["train/adv_abs_mean"]  # advantages over the gathered global batch
    _assert_close_rows(a, b)
    w1, w2 = _weights(one, 3), _weights(two, 3)
    assert _max_diff(w1, w2) < WEIGHT_TOL
    assert _max_diff(_weights(one, 3, "ema"), _weights(two, 3, "ema")) < WEIGHT_TOL
    assert not (two / "checkpoints" / ".tmp_iter_000003").exists()
    assert len(list((two / "samples").glob("*.png"))) == 3  # rank 0 alone evaluated (iterations 0, 2, 3)


@pytest.mark.parametrize("objective", ["nft", "awm"])
def test_two_processes_reproduce_one_process_under_forward_objectives(objective, tiny_ckpt, tmp_path):
    """The forward-process objectives' pair noise is a function of the pair, not of the rank: 2 processes train
    the one-process run (old policy included)."""
    extra = {"train.objective": objective, "sample.eta": 0.0, "sample.same_noise_in_group": "false",
             "train.kl_beta": 0.0, "forward.kl_beta": 0.1, "forward.timesteps": 2, "train.iterations": 2}
    _launch(1, _argv(tiny_ckpt, tmp_path / "one", **extra))
    _launch(2, _argv(tiny_ckpt, tmp_path / "two", **extra))
    a, b = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert a[1]["reward/toy_clean"] == b[1]["reward/toy_clean"] and "train/fm_err" in a[1]
    _assert_close_rows(a, b)
    for name in ("model", "old", "ema"):
        assert _max_diff(_weights(tmp_path / "one", 2, name), _weights(tmp_path / "two", 2, name)) < WEIGHT_TOL, name


def test_two_process_resume_is_exact(runs, tiny_ckpt, tmp_path):
    _, two = runs
    b = tmp_path / "b"
    shutil.copytree(two, b)
    for name in ("iter_000002", "iter_000003"):  # as if killed after iteration 1's checkpoint
        shutil.rmtree(b / "checkpoints" / name)
    _launch(2, ["train", "--no-progress", "--resume", str(b)])
    assert _strip_time(_rows(b)) == _strip_time(_rows(two))
    assert _max_diff(_weights(b, 3), _weights(two, 3)) == 0


def test_fsdp_matches_and_its_sharded_checkpoint_resumes_in_one_process(runs, tiny_ckpt, tmp_path):
    """FSDP2 on 2 processes for 2 iterations, then the DCP checkpoint resumes in 1 process (resharded 2 -> 1) for
    the third: the whole run agrees with the 1-process DDP run to the same tolerance."""
    one, _ = runs
    f = tmp_path / "fsdp"
    _launch(2, _argv(tiny_ckpt, f, **{"dist.strategy": "fsdp", "train.iterations": 2, "run.checkpoint_every": 2}))
    assert (f / "checkpoints" / "iter_000002" / "dcp" / ".metadata").is_file()
    cfg = f / "config.yaml"
    cfg.write_text(cfg.read_text().replace("iterations: 2", "iterations: 3"))
    _launch(1, ["train", "--no-progress", "--resume", str(f)])
    _assert_close_rows(_rows(one), _rows(f))
    assert not (f / "checkpoints" / "iter_000002" / "model.safetensors").exists()  # nothing is gathered whole
    assert _max_diff(_weights(one, 3), _weights(f, 3)) < WEIGHT_TOL  # read from the shards
    assert _max_diff(_weights(one, 3, "ema"), _weights(f, 3, "ema")) < WEIGHT_TOL  # the sharded EMA


def test_close_frees_the_ddp_wrapper_while_the_process_group_is_still_registered(tiny_ckpt, tmp_path):
    """ParallelDenoiser.close() frees DDP (and its C++ Reducer) before shutdown() leaves the group: freed after it,
    the Reducer ran the gloo group's destructor under the GIL and could deadlock with the group's worker thread, so a
    finished rank never exited (benchmarks/torchrun_exit.py)."""
    cfg = load_config(None, tiny_overrides(tiny_ckpt, tmp_path / "run"))
    backbone = build_backbone(cfg)
    pg = parallel.init("fsdp")  # a one-member gloo group in this process; DDP over it is DDP's usual code path
    try:
        # size 2 makes it wrap the denoiser in DDP, as a rank of a 2-process run does
        den = parallel.ParallelDenoiser(backbone, dataclasses.replace(pg, size=2), "ddp")
        wrapper = weakref.ref(den._ddp)
        assert wrapper() is not None
        den.close()
        assert wrapper() is None and dist.is_initialized()  # gone, and the group not yet destroyed
        x, t, cond = torch.randn(1, *backbone.sample_shape), torch.tensor([0.5]), backbone.encode_prompts(["a red circle"])
        torch.testing.assert_close(den(x, t, cond), backbone.predict(x, t, cond))  # it still predicts, unwrapped
    finally:
        pg.shutdown()
    assert not dist.is_initialized()
