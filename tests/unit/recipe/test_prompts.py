"""The prompt reader (slas.recipe.prompts): .txt and .jsonl files, ShapesWorld text parsed on load, line numbers,
errors."""

import pytest

from _tinypipes import PROMPTS
from slas.recipe.prompts import load_prompts, prompt_line_numbers
from slas.toyworld import parse


def test_prompt_files(tmp_path, prompt_files):
    assert [e["prompt"] for e in load_prompts(prompt_files / "train.txt")] == PROMPTS
    assert load_prompts(prompt_files / "eval.jsonl")[0] == {"prompt": PROMPTS[0], "tag": "t"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: a JSON record needs a non-empty string 'prompt'"):
        load_prompts(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompts(tmp_path / "missing.txt")
    csv = tmp_path / "p.csv"
    csv.write_text("prompt\na cat\n")
    with pytest.raises(ValueError, match="expected .txt"):
        load_prompts(csv)


def test_sample_prompts_file_accepts_plain_shapesworld_text(tmp_path):
    f = tmp_path / "fixed.txt"
    f.write_text("# two prompts\na photo of a red circle\n\na photo of three triangles\n")
    recs = load_prompts(f, parse)
    assert [r["tag"] for r in recs] == ["colors", "counting"] and prompt_line_numbers(f) == [2, 4]
