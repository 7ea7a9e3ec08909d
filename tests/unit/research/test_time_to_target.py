"""benchmarks/time_to_target.py on synthetic run folders: iterations to each target, and --paired's per-seed
differences with their t intervals, computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _scripts import load_script

ttt = load_script("benchmarks/time_to_target.py")


def _run(out: Path, arm: str, seed: int, heldout: list[float], iterations: int = 40) -> None:
    """A finished run of ``iterations`` whose held-out gold is ``heldout`` at iterations 0, 20, 40, ..."""
    run = out / "awm" / "runs" / f"{arm}_s{seed}"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"train:\n  iterations: {iterations}\nrun:\n  seed: {seed}\n")
    rows = [{"iteration": 20 * i, "eval/gold_accuracy": v, "time/train_s": 30.0} for i, v in enumerate(heldout)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_paired_differences_by_seed(tmp_path, capsys):
    # a reaches +5 at 20 in seeds 0 and 1 and +10 at 40 in seed 0 only; b reaches +5 at 40, +10 never
    _run(tmp_path, "a", 0, [0.40, 0.46, 0.52])
    _run(tmp_path, "a", 1, [0.40, 0.45, 0.48])
    _run(tmp_path, "a", 2, [0.40, 0.41, 0.44])
    _run(tmp_path, "b", 0, [0.40, 0.42, 0.45])
    _run(tmp_path, "b", 1, [0.40, 0.42, 0.46])
    _run(tmp_path, "b", 2, [0.40, 0.43, 0.45])
    assert ttt.main(["--table-only", "--out", str(tmp_path), "--objectives", "awm", "--methods", "a,b",
                     "--paired", "a,b"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    row_a = next(x for x in lines if x.startswith("| awm | a |"))
    # a: +5 at 20 (seeds 0, 1), +10 at 40 (seed 0); final 52, 48, 44 -> 48.0%
    assert row_a.startswith("| awm | a | 3 | 40.0% | 48.0% | 20 (2 of 3; 2.6k samples) |")
    assert "| 40 (1 of 3; 5.1k samples) |" in row_a
    assert lines[lines.index(next(x for x in lines if x.startswith("| a − b |"))) + 2] == (
        # final a - b: +7, +2, -1 points -> mean 2.667, sd 4.041, t_{0.975,2} 4.303: half 10.04
        # to +5: seeds 0 and 1 reached in both: 20 - 40 = -20 twice (sd 0: half 0); to +10: b never -> no seed
        "| awm | 0,1,2 | +2.7 ± 10.0 | -20 ± 0 (2) | – (0) |")


def test_paired_names_must_be_methods(tmp_path):
    with pytest.raises(SystemExit, match=r"--paired takes two of --methods \(a, b\) as A,B, got 'a,c'"):
        ttt.main(["--table-only", "--out", str(tmp_path), "--methods", "a,b", "--paired", "a,c"])
