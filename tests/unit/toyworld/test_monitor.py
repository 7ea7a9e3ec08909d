"""The reward-hacking monitor's pieces (slas.toyworld.image_stats, slas.toyworld.monitor): image statistics,
diversity within groups, the hacking gap and the early-stop rule."""

import math
from collections import Counter

import numpy as np
import pytest

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
