"""Near-miss ShapesWorld prompts suggest the nearest valid ones (slas.toyworld.parse), and every example
prompt of the README and docs/ parses."""

import re
from pathlib import Path

import pytest

from slas.toyworld import PromptError, parse

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


