"""``--seed`` of `slas toyworld eval` and `slas eval`: the default samples today's seeds bit for bit, another seed
samples the same prompts under other noise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from slas.apps.cli import main
from slas.apps.eval import load_model
from slas.policy.generate import generate

FEW = ["--max-prompts", "6", "--steps", "4"]


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _images(out: Path, recs: list[dict]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(out / r["filename"])) for r in recs])


def test_slas_eval_seed(tmp_path, capsys):
    assert main(["eval", "--suite", "geneval", "--model", "base", "--out", str(tmp_path / "s0")] + FEW) == 0
    assert main(["eval", "--suite", "geneval", "--model", "base", "--seed", "2", "--out", str(tmp_path / "s2")] + FEW) == 0
    r0, r2 = _lines(tmp_path / "s0" / "results.jsonl"), _lines(tmp_path / "s2" / "results.jsonl")
    # the default: the usual seeds (the eval split's entries carry seeds 1234000 + j: x 100, one image each), and
    # exactly the images generate() gives for them
    assert all(r["seed"] % 100 == 0 and 123_400_000 <= r["seed"] < 123_430_000 for r in r0)
    base = load_model("base")
    want = generate(base.backbone, [r["prompt"] for r in r0], [r["seed"] for r in r0], steps=4)
    assert np.array_equal(_images(tmp_path / "s0", r0), want)
    # seed 2: the same prompts, seeds + 2 x 2^27, other images; the summary says which
    assert [r["prompt"] for r in r2] == [r["prompt"] for r in r0]
    assert [r["seed"] for r in r2] == [r["seed"] + 2 * 2**27 for r in r0]
    i0, i2 = _images(tmp_path / "s0", r0), _images(tmp_path / "s2", r2)
    assert all(not np.array_equal(a, b) for a, b in zip(i0, i2, strict=True))
    assert json.loads((tmp_path / "s2" / "summary.json").read_text())["seed"] == 2
    assert json.loads((tmp_path / "s0" / "summary.json").read_text())["seed"] == 0
    # --compare refuses to pair images of different noise
    assert main(["eval", "--compare", str(tmp_path / "s0"), str(tmp_path / "s2")]) == 2
    assert "different seeds" in capsys.readouterr().err


def test_toyworld_eval_seed(tmp_path):
    assert main(["toyworld", "eval", "--json", str(tmp_path / "a.json")] + FEW) == 0
    assert main(["toyworld", "eval", "--seed", "0", "--json", str(tmp_path / "b.json")] + FEW) == 0
    assert main(["toyworld", "eval", "--seed", "5", "--json", str(tmp_path / "c.json")] + FEW) == 0
    a, b, c = (json.loads((tmp_path / f"{x}.json").read_text()) for x in "abc")
    strip = lambda d: {k: v for k, v in d.items() if k != "wall_time_s"}  # noqa: E731
    assert strip(a) == strip(b) and a["seed"] == 0 and c["seed"] == 5
    assert strip(c) | {"seed": 0} != strip(a)  # other noise, other verdicts (or scores)


def test_bad_seed_is_one_error_line(tmp_path, capsys):
    for argv in (["toyworld", "eval", "--seed", "-1"] + FEW,
                 ["eval", "--suite", "toyworld", "--model", "base", "--seed", "16", "--out", str(tmp_path / "x")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "[0, 15]" in err and "\n" not in err
    assert main(["eval", "--suite", "geneval", "--images", str(tmp_path), "--seed", "1", "--out", str(tmp_path / "y")]) == 2
    assert "--images scores images that exist already" in capsys.readouterr().err
