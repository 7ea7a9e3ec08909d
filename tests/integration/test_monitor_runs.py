"""The reward-hacking monitor in the recipe: logged at every evaluation, a zero gap when the proxy is the gold, and the
early stop."""

import json
from pathlib import Path

import pytest

from _toyruns import tiny_overrides
from slas.config import load_config
from slas.recipe.train import train
from slas.toyworld import monitor


def _rows(run):
    return [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def test_recipe_logs_the_monitor_and_gap_is_zero_when_the_proxy_is_the_gold(tiny_ckpt, tmp_path):
    ov = tiny_overrides(tiny_ckpt, tmp_path / "run", **{"monitor.prompts": 3, "monitor.group": 2})
    rows = _rows(train(load_config(None, ov), progress=False, log=lambda s: None))
    keys = ["proxy_id", "gold_acc_id", "gold_score_id", "proxy_ood", "gold_acc_ood", "gold_score_ood", "div_pixel",
            "div_detect", "saturation", "brightness", "colour_entropy", "edge_density", "hacking_gap", "hacking_gap_ood"]
    for r in rows:
        assert all(f"monitor/{k}" in r for k in keys), sorted(r)
        assert r["monitor/proxy_id"] == pytest.approx(r["monitor/gold_score_id"])  # toy_score is the gold score
        assert abs(r["monitor/hacking_gap"]) < 1e-12 and "monitor/early_stop" not in r
    assert rows[0]["monitor/hacking_gap_ood"] == 0.0


def test_early_stop_checkpoints_and_stops_the_run(tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(monitor, "should_stop", lambda history, patience: len(history) >= 2)  # stop at the 2nd eval
    ov = tiny_overrides(tiny_ckpt, tmp_path / "run", **{"monitor.prompts": 2, "monitor.group": 2,
                                                        "monitor.early_stop": "true", "train.iterations": 4,
                                                        "run.checkpoint_every": 10})
    logs = []
    run = train(load_config(None, ov), progress=False, log=logs.append)
    rows = _rows(run)
    assert [r["iteration"] for r in rows] == [0, 1] and rows[-1]["monitor/early_stop"] == 1.0
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["iter_000001"]
    assert json.loads((run / "early_stop.json").read_text())["iteration"] == 1
    assert any(s.startswith("early stop at iteration 1") for s in logs)
