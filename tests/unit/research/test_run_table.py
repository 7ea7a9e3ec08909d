"""benchmarks/run_table.py on synthetic run folders: the table's numbers, the fresh-noise column and --check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _scripts import load_script

rt = load_script("benchmarks/run_table.py")


def _run(tmp_path: Path, name: str, seed: int, final: float, fresh: dict | None = None) -> Path:
    run = tmp_path / name
    run.mkdir()
    (run / "config.yaml").write_text(f"run:\n  seed: {seed}\n")
    rows = [{"iteration": 0, "eval/gold_accuracy": 0.4, "eval/id/gold_accuracy": 0.3, "eval/exact_count": 0.7,
             "eval/debris": 0.3, "monitor/gold_acc_ood": 0.2, "time/eval_s": 60.0},
            {"iteration": 1, "time/rollout_s": 120.0, "time/train_s": 60.0},
            {"iteration": 2, "eval/gold_accuracy": final, "eval/id/gold_accuracy": 0.5, "eval/exact_count": 0.8,
             "eval/debris": 0.1, "monitor/gold_acc_ood": 0.3, "time/eval_s": 60.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if fresh is not None:
        (run / "fresh_heldout.json").write_text(json.dumps(fresh))
    return run


def test_fresh_noise_column_and_mean(tmp_path, capsys):
    a = _run(tmp_path, "a", 0, 0.55, {"overall_strict": 0.5, "seed": 1})
    b = _run(tmp_path, "b", 1, 0.45, {"overall_strict": 0.4, "seed": 1})
    assert rt.main([str(a), str(b)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("| held-out final, fresh noise (eval seed) |") and lines[1] == "|---" * 13 + "|"
    # 5 logged minutes each: 60 + 120 + 60 + 60 s
    assert lines[2] == "| a | 0 | 40.0 | 55.0 | 55.0 | 30.0 | 50.0 | 50.0 | 70.0 -> 80.0 | 30.0 -> 10.0 | 2 | 5.0 | 50.0 (1) |"
    assert lines[4].startswith("| mean | | 40.0 | 50.0 |") and lines[4].endswith("| 5.0 | 45.0 |")
    c = _run(tmp_path, "c", 2, 0.55)  # no fresh_heldout.json: an empty cell, and no mean
    assert rt.main([str(a), str(c)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[3].endswith("| 5.0 | |") and lines[4].endswith("| 5.0 |  |")
    assert rt.main([str(c)]) == 0
    assert "fresh noise" not in capsys.readouterr().out


def test_check_passes_and_fails(tmp_path, capsys):
    assert rt.main(["--check", str(_run(tmp_path, "good", 0, 0.55))]) == 0
    assert rt.main(["--check", str(_run(tmp_path, "flat", 0, 0.45))]) == 1  # +5 points: below the +10 gate
    assert "FAIL  held-out gain >= 10 points: 40.0 -> 45.0" in capsys.readouterr().out


def test_bad_fresh_json_is_one_error(tmp_path):
    run = _run(tmp_path, "bad", 0, 0.55, {"nope": 1})
    with pytest.raises(SystemExit, match="is not the JSON of `slas toyworld eval --json`"):
        rt.main([str(run)])
