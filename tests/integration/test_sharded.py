"""The memory-correct sharded path (dist.strategy fsdp) on real backbones, with tiny random diffusers pipelines on the
CPU (gloo): the denoiser is built on the meta device and each rank reads only its shards from the safetensors files;
evaluation of data.eval_prompts runs on the sharded model, each rank its share; checkpoints hold DCP shards only,
which resume exactly (2 -> 2 processes, with the old policy and the EMA) and load whole into `load_run`."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from _tinypipes import build_pipeline, save_clip_reward, tokenizers
from _torchrun import launch
from slas.config import ModelConfig
from slas.policy import adapter_class
from slas.recipe import checkpoint
from slas.recipe import parallel as distributed
from slas.recipe.metrics import read_metrics
from slas.recipe.run_dir import load_run

PROMPTS = ["a photo of a red cat", "a blue dog on a green mat", "two yellow birds", "a white circle left of a square",
           "a green bird"]
DENOISER = {"flux": ("transformer", "FluxTransformer2DModel"), "sd3": ("transformer", "SD3Transformer2DModel"),
            "sd": ("unet", "UNet2DConditionModel")}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """kind -> a tiny random pipeline saved as a diffusers folder; "clip" -> a tiny CLIP for the clip_score reward;
    "prompts" -> train.txt and eval.txt (5 held-out prompts: an odd count, so the ranks' shares are padded)."""
    d = tmp_path_factory.mktemp("sharded")
    toks = tokenizers(PROMPTS)
    out = {}
    for kind in DENOISER:
        build_pipeline(kind, *toks).save_pretrained(d / kind)
        out[kind] = d / kind
    save_clip_reward(d / "clip", toks[0])
    (d / "train.txt").write_text("\n".join(PROMPTS[:4]) + "\n")
    (d / "eval.txt").write_text("\n".join(PROMPTS) + "\n")
    return out | {"clip": d / "clip", "prompts": d}


@pytest.mark.parametrize("kind", list(DENOISER))
def test_meta_built_denoiser_reads_its_shards_and_equals_the_files(kind, folders):
    import diffusers

    m = ModelConfig(backbone=kind, path=str(folders[kind]), resolution=64, max_sequence_length=16, device="cpu")
    backbone = adapter_class(kind).from_config(m, meta=True)
    sub, cls = DENOISER[kind]
    assert backbone.denoiser_weights == folders[kind] / sub
    assert all(p.is_meta for p in backbone.module.parameters())  # nothing materialised before sharding
    pg = distributed.init("fsdp")
    try:
        distributed.ParallelDenoiser(backbone, pg, "fsdp")
        ref = getattr(diffusers, cls).from_pretrained(folders[kind], subfolder=sub).state_dict()
        got = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in backbone.module.state_dict().items()}
        assert got.keys() == ref.keys()
        assert all(got[k].dtype == torch.float32 and torch.equal(got[k], ref[k].float()) for k in ref)
    finally:
        pg.shutdown()


def _config(folders, out: Path, tmp_path: Path, **extra) -> Path:
    """The shipped FLUX recipe at tiny sizes, full fine-tuning, with data.eval_prompts evaluated every iteration."""
    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "flux_dancegrpo.yaml").read_text())
    data["reward"] = {"weights": {"clip_score": 1.0}, "batch_size": 64,
                      "options": {"clip_score": {"model_path": str(folders["clip"])}}}
    data["data"] = {"prompts": str(folders["prompts"] / "train.txt"), "eval_prompts": str(folders["prompts"] / "eval.txt")}
    data["model"].update(path=str(folders["flux"]), resolution=64, max_sequence_length=16, device="cpu", lora_rank=0,
                         embed_cache=None)
    data["sample"].update(steps=3, batch_size=0, eta=0.0, same_noise_in_group=False)
    data["train"].update(objective="nft", iterations=3, prompts_per_iter=2, group_size=2, micro_batch=2,
                         updates_per_iter=1, lr=1e-3, ema_decay=0.5)
    data["forward"] = {"timesteps": 2}
    data["eval"].update(every=1, max_prompts=0, steps=2)
    data["run"].update(out_dir=str(out), checkpoint_every=1, keep_checkpoints=10)
    for key, value in extra.items():
        section, field = key.split(".")
        data.setdefault(section, {})[field] = value
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "memory/"))} for r in read_metrics(run)]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def sharded_runs(folders, tmp_path_factory):
    """The same 3-iteration FLUX run in 1 process (unsharded) and in 2 processes under FSDP2 (with run.log_memory)."""
    tmp = tmp_path_factory.mktemp("runs")
    one, two = tmp / "one", tmp / "two"
    launch(1, ["train", "--no-progress", "--config", str(_config(folders, one, tmp))])
    launch(2, ["train", "--no-progress", "--config", str(_config(folders, two, tmp, **{"dist.strategy": "fsdp",
                                                                                       "run.log_memory": True}))])
    return one, two


def test_each_rank_measures_its_peak_memory_and_rank_0_logs_the_largest(sharded_runs):
    one, two = sharded_runs
    assert not any(k.startswith("memory/") for r in read_metrics(one) for k in r)
    rows = read_metrics(two)
    phases = ["encode", "rollout", "decode", "reward", "train", "step", "eval", "save"]
    assert [sorted(k for k in r if k.startswith("memory/")) for r in rows] == [
        sorted(f"memory/{p}_{s}" for p in ps for s in ("mib", "max_mib"))
        for ps in (["load", "eval"], phases, phases, phases)]
    for r in rows:
        for k in (k for k in r if k.startswith("memory/") and not k.endswith("_max_mib")):
            assert 100 < r[k] <= r[k.replace("_mib", "_max_mib")]  # MiB resident; the max over both ranks


def test_sharded_run_evaluates_in_shares_and_matches_one_process(sharded_runs):
    one, two = sharded_runs
    a, b = _rows(one), _rows(two)
    assert [r["iteration"] for r in a] == [r["iteration"] for r in b] == [0, 1, 2, 3]
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys() and "eval/reward_mean" in ra
        for k in ra:  # float reduction order only: sharded sums, batches of another size in the shares
            assert math.isclose(ra[k], rb[k], rel_tol=1e-3, abs_tol=1e-5), (ra["iteration"], k, ra[k], rb[k])
    ckpt = two / "checkpoints" / "iter_000003"
    assert (ckpt / "dcp" / ".metadata").is_file() and not (ckpt / "model.safetensors").exists()
    state = json.loads((ckpt / "state.json").read_text())
    assert {"dcp/.metadata", "dcp/__0_0.distcp", "dcp/__1_0.distcp"} <= set(state["checksums"])  # each rank's files
    for name in ("model", "ema", "old"):
        assert _max_diff(checkpoint.read_weights(one / "checkpoints" / "iter_000003", name),
                         checkpoint.read_weights(ckpt, name)) < 1e-4, name


def test_a_sharded_checkpoint_loads_whole_for_evaluation_and_export(sharded_runs):
    one, two = sharded_runs
    a, b = load_run(one), load_run(two)  # the EMA weights, from safetensors and from the shards
    assert a.ema and b.ema and b.iteration == 3
    wa, wb = a.backbone.module.state_dict(), b.backbone.module.state_dict()
    assert _max_diff(wa, wb) < 1e-4 and any((wb[k] != 0).any() for k in wb)


def test_sharded_resume_two_to_two_is_exact_with_old_and_ema(sharded_runs, tmp_path):
    _, two = sharded_runs
    b = tmp_path / "b"
    shutil.copytree(two, b)
    for name in ("iter_000002", "iter_000003"):  # as if killed after iteration 1's checkpoint
        shutil.rmtree(b / "checkpoints" / name)
    launch(2, ["train", "--no-progress", "--resume", str(b)])
    assert _rows(b) == _rows(two)
    assert {"memory/load_mib", "memory/resume_max_mib"} <= set(read_metrics(b)[2])  # the first row after resuming
    for name in ("model", "ema", "old"):
        assert _max_diff(checkpoint.read_weights(b / "checkpoints" / "iter_000003", name),
                         checkpoint.read_weights(two / "checkpoints" / "iter_000003", name)) == 0, name


def test_a_corrupt_shard_is_named_and_skipped_on_resume(sharded_runs, tmp_path):
    _, two = sharded_runs
    b = tmp_path / "c"
    shutil.copytree(two, b)
    shard = b / "checkpoints" / "iter_000003" / "dcp" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[-8:] = bytes(8)  # same size, other bytes
    shard.write_bytes(bytes(data))
    warnings: list[str] = []
    found = checkpoint.latest_intact(b / "checkpoints", warn=warnings.append)
    assert found is not None and found[0].name == "iter_000002"
    assert warnings == [f"warning: skipping checkpoint iter_000003: {shard}: corrupt: its sha256 differs from the one "
                        "recorded in state.json at save time"]
