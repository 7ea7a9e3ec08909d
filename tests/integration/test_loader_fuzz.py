"""Fuzzing the checkpoint loaders (hypothesis, bounded): random truncations, byte flips and deletions of every file of
each layout, loaded through the CLI in this process: a run directory (`slas sample --checkpoint RUN`, and `slas train
--resume RUN` over its checkpoints and metrics log), one of its `checkpoints/iter_*`, a ShapesWorld checkpoint folder
(`model.safetensors` + `config.json`) and a diffusers pipeline folder (`slas eval --model DIR`).

The only outcomes allowed: the command succeeds (a flip inside tensor data that no checksum covers is harmless to a
loader), or it exits 2 with one `error:` line that names the damaged folder. Never a traceback, never a hang.

The examples are derandomized, so CI is reproducible; ``SLAS_FUZZ_EXAMPLES=N`` runs N random examples per test.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from _fuzz import bounded, no_hang
from _toyruns import tiny_overrides
from slas.apps.cli import main

PROMPT = "a photo of a red circle"


@st.composite
def damages(draw, files: list[str]) -> tuple[str, str, list]:
    """(file, how, detail): truncate at a byte, flip 1-4 bytes (half of them in the first 4 KiB, where the headers
    and JSON live), or delete the file."""
    name = draw(st.sampled_from(files))
    how = draw(st.sampled_from(["truncate", "flip", "flip", "delete"]))
    if how == "truncate":
        return name, how, [draw(st.floats(0.0, 1.0, exclude_max=True))]
    flips = [(draw(st.sampled_from(["head", "anywhere"])), draw(st.floats(0.0, 1.0, exclude_max=True)),
              draw(st.integers(1, 255))) for _ in range(draw(st.integers(1, 4)))]
    return name, how, flips


def _damage(path: Path, how: str, detail: list) -> None:
    if how == "delete":
        path.unlink()
        return
    data = bytearray(path.read_bytes())
    if how == "truncate":
        del data[int(detail[0] * len(data)):]
    else:
        for where, at, xor in detail:
            span = min(len(data), 4096) if where == "head" else len(data)
            data[int(at * span)] ^= xor
    path.write_bytes(bytes(data))


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _check(capsys, rc: int, root: Path) -> None:
    """Success, or exit 2 with one `error:` line naming the folder; no traceback either way."""
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err[-2000:]
    assert rc in (0, 2), (rc, err[-2000:])
    if rc == 2:
        errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0], err[-2000:]
        assert str(root) in errors[0], errors[0]  # names the damaged file, or at least its folder


def _fuzz_one(pristine: Path, damage: tuple, argv, capsys, damaged: str = "") -> None:
    """Copy ``pristine``, damage one file of it, run ``slas <argv(copy)>`` and check the outcome."""
    name, how, detail = damage
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "subject"
        shutil.copytree(pristine, root)
        _damage(root / damaged / name, how, detail)
        with no_hang(60):
            rc = main(argv(root, Path(tmp)))
        _check(capsys, rc, root)


# ----------------------------------------------------------------------------
# The layouts
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tiny_ckpt, tmp_path_factory):
    """A finished 2-iteration run with an EMA: config.yaml, metrics.jsonl, samples/, checkpoints/iter_00000{1,2}."""
    out = tmp_path_factory.mktemp("fuzz_run") / "run"
    assert main(["train", "--no-progress", *tiny_overrides(tiny_ckpt, out, **{"train.ema_decay": 0.5})]) == 0
    return out


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    """A tiny StableDiffusionPipeline folder of random components (tests/_tinypipes.py)."""
    from _tinypipes import build_pipeline, tokenizers

    d = tmp_path_factory.mktemp("fuzz_pipe") / "sd"
    build_pipeline("sd", *tokenizers(["a photo of a cat", "a red circle on a table"])).save_pretrained(d)
    return d


def _sample(root: Path, tmp: Path) -> list[str]:
    return ["sample", "--checkpoint", str(root), "--prompt", PROMPT, "-n", "1", "--steps", "1", "--out",
            str(tmp / "grid.png")]


def test_the_pristine_layouts_load(run_dir, tiny_ckpt, pipeline_dir, tmp_path, capsys):
    """The baseline of every fuzz test below: each layout, undamaged, loads and runs."""
    for root, argv in [(run_dir, _sample), (run_dir / "checkpoints" / "iter_000001", _sample), (tiny_ckpt, _sample),
                       (pipeline_dir, _eval_pipeline)]:
        assert main(argv(root, tmp_path)) == 0, root
        _check(capsys, 0, root)


RUN_FILES = ["config.yaml", *(f"checkpoints/iter_00000{i}/{f}" for i in (1, 2)
                              for f in ("model.safetensors", "ema.safetensors", "optim.pt", "rng.safetensors",
                                        "state.json"))]


@bounded(24, deadline_ms=None)
@given(damage=damages(RUN_FILES))
def test_fuzz_a_run_directory_under_sample(run_dir, capsys, damage):
    _fuzz_one(run_dir, damage, _sample, capsys)


@bounded(10, deadline_ms=None)
@given(damage=damages(["model.safetensors", "ema.safetensors", "state.json"]))
def test_fuzz_one_checkpoint_of_a_run_under_sample(run_dir, capsys, damage):
    _fuzz_one(run_dir, damage, lambda root, tmp: _sample(root / "checkpoints" / "iter_000001", tmp), capsys,
              damaged="checkpoints/iter_000001")


@bounded(12, deadline_ms=None)
@given(damage=damages(["metrics.jsonl", *RUN_FILES[1:]]))
def test_fuzz_a_run_directory_under_resume(run_dir, capsys, damage):
    """--resume of the finished run: an intact latest checkpoint says it is finished; a damaged one is skipped with a
    warning (the run trains its last iteration again from iter_000001), or none is intact: one error line."""
    _fuzz_one(run_dir, damage, lambda root, tmp: ["train", "--no-progress", "--resume", str(root)], capsys)


@bounded(24, deadline_ms=None)
@given(damage=damages(["model.safetensors", "config.json"]))
def test_fuzz_a_shapesworld_checkpoint_folder(tiny_ckpt, capsys, damage):
    _fuzz_one(tiny_ckpt, damage, _sample, capsys)


def _eval_pipeline(root: Path, tmp: Path) -> list[str]:
    prompts = tmp / "prompts.txt"
    prompts.write_text("a photo of a cat\n")
    return ["eval", "--suite", "reward", "--reward", "toy_clean", "--model", str(root), "--prompts", str(prompts),
            "--steps", "1", "--no-images", "--out", str(tmp / "eval")]


@bounded(24, deadline_ms=None)
@given(data=st.data())
def test_fuzz_a_diffusers_pipeline_folder(pipeline_dir, capsys, data):
    damage = data.draw(damages(_files(pipeline_dir)))
    torch.manual_seed(0)
    _fuzz_one(pipeline_dir, damage, _eval_pipeline, capsys)
