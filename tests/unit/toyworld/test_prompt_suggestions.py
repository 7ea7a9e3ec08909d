"""Issue 19 items 1, 2 and 9: near-miss ShapesWorld prompts suggest valid ones, the docs' example prompts parse,
the toy rewards derive their metadata from prompt text (prepare hooks), an empty prompts file says so."""

import re
from pathlib import Path

import numpy as np
import pytest

from slas import rewards
from slas.apps.cli import main
from slas.recipe.prompts import PromptFileError, load_prompts, prompt_line_numbers
from slas.toyworld import PromptError, parse, render

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("text, why, suggestions", [
    # the README's old first example and the other natural prompt of the issue
    ("a photo of a red circle left of a square", "position prompts take no colours",
     ["a photo of a circle left of a square", "a photo of a red circle"]),
    ("a photo of three green triangles", "counting prompts take no colours",
     ["a photo of three triangles", "a photo of a green triangle"]),
    ("a photo of a red circle left of a blue square", "position prompts take no colours",
     ["a photo of a circle left of a square", "a photo of a red circle and a blue square"]),
    ("a photo of three triangle", "needs a plural shape", ["a photo of three triangles"]),
    ("a photo of a circle and a red square", "both objects or to neither", ["a photo of a circle and a square"]),
    ("a red circle", "must start with", ["a photo of a red circle"]),
])
def test_near_miss_prompts_suggest_the_nearest_valid_forms(text, why, suggestions):
    with pytest.raises(PromptError) as e:
        parse(text)
    msg = str(e.value)
    assert why in msg and "did you mean " + " or ".join(repr(s) for s in suggestions) + "?" in msg
    for s in suggestions:  # every suggestion is itself a valid prompt
        assert parse(s)["prompt"] == s


def test_sample_cli_suggests_for_the_old_readme_example(capsys):
    assert main(["sample", "--prompt", "a photo of a red circle left of a square", "-n", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'a photo of a circle left of a square'" in err


BAD_INPUT_DOCS = {"reliability.md"}  # a table of bad inputs, each with its error: its prompts are meant to fail


def _doc_prompts() -> list[tuple[str, str]]:
    """Every `--prompt` argument and every quoted ShapesWorld prompt ("a photo of ...", possibly wrapped over lines)
    in the README and docs/."""
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if path.name in BAD_INPUT_DOCS:
            continue
        text = path.read_text(encoding="utf-8").replace("\n", " ")
        for m in re.finditer(r"--prompt[ =](?:\"([^\"]+)\"|'([^']+)')|[\"'`](a photo of [a-z ]+?)[\"'`]", text):
            out.append((path.name, " ".join(next(g for g in m.groups() if g).split())))
    return out


def test_every_prompt_in_the_readme_and_docs_parses():
    found = _doc_prompts()
    assert len(found) >= 4, f"found only {found}: is the extraction broken?"
    bad = []
    for where, text in found:
        try:
            parse(text)
        except PromptError as e:
            bad.append(f"{where}: {e}")
    assert not bad, "\n".join(bad)


# ---- item 2: the toy rewards' prepare hooks -------------------------------------------------------------------

NEED_META = ["toy_score", "toy_correct", "toy_geneval", "toy_biased"]


@pytest.mark.parametrize("name", NEED_META)
def test_toy_rewards_parse_plain_prompt_text(name):
    metas = rewards.prepare_metas([name], ["a photo of three triangles"], [{"prompt": "a photo of three triangles"}])
    assert metas[0]["include"] == [{"class": "triangle", "count": 3}] and metas[0]["tag"] == "counting"
    # the parsed metadata scores like the world's own: a rendered image of the prompt is correct
    img = render(parse("a photo of three triangles"), seed=0)[None]
    score = rewards.build({name: 1.0})
    assert np.isfinite(score(img, ["a photo of three triangles"], metas)[name]).all()


def test_prepare_keeps_valid_metadata_and_record_keys_and_names_bad_words():
    meta = parse("a photo of a red circle") | {"seed": 7}
    assert rewards.prepare_metas(["toy_score"], [meta["prompt"]], [meta]) == [meta]  # a valid include: unchanged
    # a record without include: the grammar's metadata, with the record's own keys on top
    got = rewards.prepare_metas(["toy_score"], ["a photo of two squares"], [{"prompt": "a photo of two squares",
                                                                            "seed": 3}])[0]
    assert got["include"] == [{"class": "square", "count": 2}] and got["seed"] == 3
    with pytest.raises(ValueError, match=r"reward 'toy_score' cannot judge prompt 'a photo of a cat'.*unknown word 'cat'"):
        rewards.prepare_metas(["toy_score"], ["a photo of a cat"], [{"prompt": "a photo of a cat"}])
    # GenEval's own classes are not ShapesWorld's
    with pytest.raises(ValueError, match=r"include\[0\].class must be one of \['circle', 'square', 'triangle'\], got 'person'"):
        rewards.prepare_metas(["toy_geneval"], ["a photo of a person"],
                              [{"prompt": "a photo of a person", "include": [{"class": "person", "count": 1}]}])
    # rewards that read no metadata accept any prompt
    assert rewards.prepare_metas(["toy_clean"], ["a cat"], [{"prompt": "a cat"}]) == [{"prompt": "a cat"}]


def test_sample_prompts_file_accepts_plain_shapesworld_text(tmp_path):
    f = tmp_path / "fixed.txt"
    f.write_text("# two prompts\na photo of a red circle\n\na photo of three triangles\n")
    recs = load_prompts(f, parse)
    assert [r["tag"] for r in recs] == ["colors", "counting"] and prompt_line_numbers(f) == [2, 4]


# ---- item 9: an empty prompts file ---------------------------------------------------------------------------


def test_an_empty_prompts_file_is_reported_as_empty(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(PromptFileError, match="is empty"):
        load_prompts(empty)
    for value, needle in [(str(empty), f"prompt file {empty} is empty"), ("", "the path is empty")]:
        assert main(["sample", "--prompts-file", value]) == 2
        err = capsys.readouterr().err
        assert needle in err and "--prompt TEXT" not in err  # not "give --prompt or --prompts-file"
