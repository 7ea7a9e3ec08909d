"""UniGenBench++ without a judge (slas.evals.unigenbench): data loading, the judge prompt, strict verdict parsing,
the judge's configuration; the judge client is tested against a stub in tests/integration/test_unigenbench_judge.py."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from slas.evals import unigenbench as ugb

REAL_DATA = ugb.default_data_dir()
needs_real_data = pytest.mark.skipif(not (REAL_DATA / "test_prompts_en_long.csv").is_file(),
                                     reason=f"UniGenBench data not found at {REAL_DATA} (set SLAS_DATA)")


def answer(scores: list) -> str:
    return (f"<description><prompt>p</prompt><checkpoint>c</checkpoint>"
            f"<analysis>{['looked'] * len(scores)!r}</analysis><score>{scores!r}</score></description>")


def test_judge_config_from_env(monkeypatch):
    monkeypatch.delenv("SLAS_JUDGE_BASE_URL", raising=False)
    monkeypatch.delenv("SLAS_JUDGE_MODEL", raising=False)
    with pytest.raises(ValueError, match="SLAS_JUDGE_BASE_URL"):
        ugb.JudgeConfig.from_env()
    monkeypatch.setenv("SLAS_JUDGE_BASE_URL", "http://judge:8080/v1/")
    monkeypatch.setenv("SLAS_JUDGE_MODEL", "QwenVL")
    monkeypatch.setenv("SLAS_JUDGE_API_KEY", "k")
    cfg = ugb.JudgeConfig.from_env(timeout_s=5)
    assert (cfg.base_url, cfg.model, cfg.api_key, cfg.timeout_s) == ("http://judge:8080/v1", "QwenVL", "k", 5)
    assert ugb.JudgeConfig.from_env(model="other").model == "other"


@pytest.mark.parametrize("text, n, expect", [
    (answer([1, 0, 1]), 3, (1, 0, 1)),
    ('<analysis>["a", "b"]</analysis>\n<score>\n[0, 1]\n</score>', 2, (0, 1)),  # JSON-style lists, newlines
    (answer([1, 1]), 3, "3 testpoints"),
    (answer([1, 2]), 2, "0 or 1"),
    (answer([1, True]), 2, "0 or 1"),
    (answer([1, 1.0]), 2, "0 or 1"),
    ("<analysis>['a']</analysis>", 1, "<score>"),
    (answer([1]) + answer([0]), 1, "found 2"),  # two verdicts: ambiguous
    ("<analysis>['a']</analysis><score>yes</score>", 1, "not a Python/JSON list"),
    ("<analysis>['a']</analysis><score>{'s': 1}</score>", 1, "not a list"),
])
def test_parse_verdict_is_strict(text, n, expect):
    if isinstance(expect, tuple):
        assert ugb.parse_verdict(text, n) == expect
    else:
        with pytest.raises(ugb.MalformedVerdict, match=expect):
            ugb.parse_verdict(text, n)


def test_png_round_trip_and_image_checks():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(ugb.encode_png(img)))), img)
    with pytest.raises(ValueError, match="uint8"):
        ugb.encode_png(img.astype(np.float32))


def test_missing_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="SLAS_DATA"):
        ugb.load_items("short", tmp_path)


@needs_real_data
def test_real_data_and_the_row_509_defect():
    short = ugb.load_items("short")
    assert len(short) == 600 and [it.index for it in short] == list(range(600))
    assert len({tp for it in short for tp in it.testpoints}) == 27
    assert len({ugb.primary_dimension(tp) for it in short for tp in it.testpoints}) == 10
    with pytest.warns(ugb.UniGenBenchDataWarning, match="row index 509.*repaired") as rec:
        long = ugb.load_items("long")
    assert len(rec) == 1 and len(long) == 600
    assert long[509].testpoints[1:3] == ("Grammar - Negation", "Attribute - Color")
    assert long[509].descriptions[2] == "deep sea blue"  # aligned with its testpoint after the repair


@needs_real_data
def test_real_judge_prompt_matches_upstream_filling():
    definitions, template = ugb.load_definitions()
    text = ugb.build_judge_prompt(ugb.load_items("short")[0], template, definitions)
    assert "from the angles specified in ['Style', 'World Knowledge', 'Attribute - Quantity']." in text
    assert "Checkpoints Description:「\nStyle: classical ink painting\nWorld Knowledge: Egyptian pyramids\n" in text
    assert f"\nAttribute - Quantity: {definitions['Attribute - Quantity']}\n」" in text
    assert not any(f"{{{k}}}" in text for k in ("prompt", "testpoint", "explanation", "test_explanation"))
