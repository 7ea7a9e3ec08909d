"""ShapesWorld proxy rewards: toy_geneval, toy_biased, toy_pref, and the preference module's annotator and
agreement (training it: tests/integration/test_pref_train.py)."""

import json

import numpy as np
import pytest
from safetensors.torch import load_file

from slas import rewards
from slas.config import ConfigError, load_config
from slas.toyworld import pref_train, render, split, verify
from slas.toyworld.image_stats import saturation
from slas.toyworld.proxies import default_pref_checkpoint, mirror_prompt, tokenize

METAS = [m for m in split("test")[:12]]


@pytest.fixture(scope="module")
def images():
    """Clean renders, and the same renders with noise (partial credit, debris) so scores vary."""
    clean = np.stack([render(m, i) for i, m in enumerate(METAS)])
    rng = np.random.default_rng(0)
    noisy = np.clip(clean.astype(int) + rng.integers(-90, 90, clean.shape), 0, 255).astype(np.uint8)
    return np.concatenate([clean, noisy]), METAS + METAS


def _score(weights, imgs, metas, options=None):
    return rewards.build(weights, options=options)(imgs, [m["prompt"] for m in metas], metas)


def test_toy_geneval_is_the_lenient_partial_credit(images):
    imgs, metas = images
    out = _score({"toy_geneval": 1.0}, imgs, metas)
    expected = [verify(im, m).geneval_score for im, m in zip(imgs, metas, strict=True)]
    assert out["toy_geneval"].shape == (len(imgs),)
    assert np.array_equal(out["toy_geneval"], expected)


@pytest.mark.parametrize("lam", [0.5, 2.0, 0.0])
def test_toy_biased_is_score_plus_lam_times_saturation_exactly(images, lam):
    imgs, metas = images
    out = _score({"toy_biased": 1.0, "toy_score": 1.0}, imgs, metas, {"toy_biased": {"lam": lam}})
    assert np.array_equal(out["toy_biased"], out["toy_score"] + lam * saturation(imgs))
    assert len(set(np.round(out["toy_score"], 6))) > 1  # the noisy half scores below the clean half


def test_toy_biased_options_are_checked_at_config_load():
    cfg = load_config(None, ["reward.weights={toy_biased: 1.0}", "reward.options.toy_biased.lam=0.25"])
    assert cfg.reward.options == {"toy_biased": {"lam": 0.25}}
    with pytest.raises(ConfigError, match="unknown option.*toy_biased.*lam=0.5"):
        load_config(None, ["reward.weights={toy_biased: 1.0}", "reward.options.toy_biased.lamda=1"])
    with pytest.raises(ValueError, match="lam must be a finite number"):
        rewards.build({"toy_biased": 1.0}, options={"toy_biased": {"lam": "big"}})


def test_shipped_toy_pref_scores_are_finite_deterministic_and_batch_independent(images):
    imgs, metas = images
    score = rewards.build({"toy_pref": 1.0}, batch_size=7)
    a = score(imgs, [m["prompt"] for m in metas], metas)["toy_pref"]
    b = rewards.build({"toy_pref": 1.0})(imgs, [m["prompt"] for m in metas], metas)["toy_pref"]
    assert a.shape == (len(imgs),) and np.isfinite(a).all()
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)  # batch of 7 vs one batch
    c = rewards.build({"toy_pref": 1.0}, batch_size=7)(imgs, [m["prompt"] for m in metas], metas)["toy_pref"]
    assert np.array_equal(a, c)
    with pytest.raises(ValueError, match=r"uint8 \[N, 32, 32, 3\]"):
        score(np.zeros((2, 64, 64, 3), np.uint8), ["a photo of a circle"] * 2, [metas[0]] * 2)


def test_shipped_toy_pref_checkpoint_is_small_and_records_its_agreement():
    d = default_pref_checkpoint()
    assert (d / "model.safetensors").stat().st_size < 1_000_000
    cfg = json.loads((d / "config.json").read_text())
    assert set(cfg["agreement"]) == {"train", "heldout_train_prompts", "heldout_test_prompts"}
    for rec in cfg["agreement"].values():
        assert 0 <= rec["agreement_with_verifier"] <= 1 and rec["pairs_with_different_scores"] > 400
    assert cfg["labels"] == {"bias_feature": "saturation", "bias_lam": pref_train.BIAS_LAM,
                             "label_noise": pref_train.LABEL_NOISE, "tie": "fair coin"}
    assert 1000 <= cfg["train"]["pairs"] <= 10_000  # a few thousand pairs: limited data by design
    assert sum(v.numel() for v in load_file(str(d / "model.safetensors")).values()) == cfg["n_params"] < 100_000


def test_tokenize_and_mirror():
    ids = tokenize(["a photo of a red circle left of a square", "a photo of a zebra"])
    assert ids.shape == (2, 12) and (ids[0, :10] > 1).all() and (ids[0, 10:] == 0).all() and ids[1, 4] == 1  # <unk>
    assert mirror_prompt("a photo of a circle left of a square") == "a photo of a circle right of a square"


def test_annotator_bias_ties_and_noise_rate():
    rng = np.random.default_rng(0)
    n = 20_000
    pairs = np.stack([np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2)], 1)
    score = np.tile([1.0, 0.5], n)  # first of every pair better
    sat = np.zeros(2 * n)
    clean = pref_train.annotate(pairs, score, sat, rng, noise=0.0)
    assert clean.all()
    noisy = pref_train.annotate(pairs, score, sat, rng, noise=0.15)
    assert abs((1 - noisy.mean()) - 0.15) < 0.01
    tie = pref_train.annotate(pairs, np.ones(2 * n), np.tile([0.2, 0.1], n), rng, lam=0.5, noise=0.0)
    assert tie.all()  # equal scores: the more saturated image wins (the bias)
    coin = pref_train.annotate(pairs, np.ones(2 * n), sat, rng, noise=0.0)
    assert abs(coin.mean() - 0.5) < 0.02


def test_agreement_counts_only_pairs_with_different_scores():
    pairs = np.array([[0, 1], [2, 3], [4, 5], [6, 7]])
    score = np.array([1, 0, 0, 1, 0.5, 0.5, 1, 0.0])
    r = np.array([2, 1, 5, 3, 0, 9, 4, 4])  # right, wrong, (tie in score: ignored), tie in r: half
    assert pref_train.agreement(r, score, pairs) == (0.5, 3)
    assert pref_train.group_pairs(2, 3).tolist() == [[0, 1], [0, 2], [1, 2], [3, 4], [3, 5], [4, 5]]
