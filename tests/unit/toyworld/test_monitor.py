"""The reward-hacking monitor: image statistics, diversity, hacking gap, early stop, and its place in the recipe."""

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from _toyruns import tiny_overrides
from slas.config import ConfigError, load_config
from slas.recipe.train import train
from slas.toyworld import image_stats, monitor


def flat(rgb, n=1, side=32):
    return np.full((n, side, side, 3), rgb, dtype=np.uint8)


def half_black_white():
    img = flat((0, 0, 0))
    img[:, :, 16:] = 255  # black left half, white right half
    return img


def test_saturation_brightness_of_flat_images():
    assert image_stats.saturation(flat((255, 0, 0)))[0] == 1.0  # pure red
    assert image_stats.saturation(flat((128, 128, 128)))[0] == 0.0  # the grey background
    assert image_stats.saturation(flat((0, 0, 0)))[0] == 0.0  # max 0: defined as 0, not NaN
    assert image_stats.saturation(flat((200, 100, 50)))[0] == pytest.approx(0.75)  # (200 - 50) / 200
    assert image_stats.brightness(flat((255, 255, 255)))[0] == pytest.approx(1.0)
    assert image_stats.brightness(flat((0, 0, 0)))[0] == 0.0
    assert image_stats.brightness(flat((255, 0, 0)))[0] == pytest.approx(0.299)


def test_colour_entropy_and_edge_density_of_constructed_images():
    hbw = half_black_white()
    assert image_stats.colour_entropy(flat((30, 200, 90)))[0] == 0.0
    assert image_stats.colour_entropy(hbw)[0] == pytest.approx(1.0)  # two colours, equal areas
    assert image_stats.edge_density(hbw)[0] == pytest.approx(1 / 32)  # one edge column of 32 pixels
    assert image_stats.edge_density(flat((255, 0, 0)))[0] == 0.0
    quarters = flat((0, 0, 0))
    quarters[:, :16, 16:] = 255
    quarters[:, 16:, :16] = 255
    # the edge column (x = 15) and the edge row (y = 15), their crossing pixel counted once
    assert image_stats.edge_density(quarters)[0] == pytest.approx((32 + 32 - 1) / 1024)
    stats = image_stats.image_stats(np.concatenate([hbw, flat((255, 0, 0))]))
    assert stats["saturation"] == pytest.approx(0.5) and stats["edge_density"] == pytest.approx(1 / 64)


def test_diversity_within_groups():
    imgs = np.concatenate([flat((10, 20, 30), 3), flat((0, 0, 0)), flat((255, 255, 255))])
    assert monitor.pixel_diversity(imgs[:3], [0, 0, 0]) == 0.0  # identical images
    assert monitor.pixel_diversity(imgs[3:], [1, 1]) == pytest.approx(1.0)  # black vs white
    assert monitor.pixel_diversity(imgs, [0, 0, 0, 1, 1]) == pytest.approx(0.5)  # mean over the two groups
    assert math.isnan(monitor.pixel_diversity(imgs[:2], [0, 1]))  # no group of two
    a, b = Counter({("circle", "red"): 2}), Counter({("circle", "red"): 1, ("square", "blue"): 1})
    assert monitor.jaccard_distance(a, b) == pytest.approx(1 - 1 / 3)  # |a & b| = 1, |a | b| = 3
    assert monitor.detection_diversity([a, a, Counter(), Counter()], [0, 0, 1, 1]) == 0.0
    assert monitor.detection_diversity([a, Counter({("square", "blue"): 1})], [0, 0]) == 1.0


def test_hacking_gap_and_early_stop_rule():
    assert monitor.hacking_gap(0.7, 0.7, 0.5, 0.5, 0.2, 0.2) == 0.0  # proxy == gold
    # the proxy rose 1 of its base std (0.5), the gold fell 0.1: 1 * 0.2 + 0.1
    assert monitor.hacking_gap(1.5, 0.4, 1.0, 0.5, 0.5, 0.2) == pytest.approx(0.3)
    assert monitor.hacking_gap(2.0, 0.5, 1.0, 0.5, 0.0, 0.2) == pytest.approx(1.0)  # constant base proxy: unscaled
    up_down = [(0.0, 0.5), (0.1, 0.4), (0.2, 0.3)]
    assert monitor.should_stop(up_down, 2) and not monitor.should_stop(up_down, 3)
    assert not monitor.should_stop([(0.0, 0.5), (0.1, 0.4), (0.2, 0.45)], 1)  # gold recovered at the last eval
    assert not monitor.should_stop([(0.0, 0.5), (0.1, 0.4), (0.1, 0.3)], 1)  # proxy flat


def test_monitor_config_is_validated():
    assert load_config(None).monitor.enabled and not load_config(None).monitor.early_stop
    with pytest.raises(ConfigError, match="monitor.group must be >= 2"):
        load_config(None, ["monitor.group=1"])
    with pytest.raises(ConfigError, match="monitor.early_stop needs"):
        load_config(None, ["monitor.early_stop=true", "monitor.enabled=false"])
    with pytest.raises(ConfigError, match="unknown key 'monitor.every'"):
        load_config(None, ["monitor.every=3"])


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
