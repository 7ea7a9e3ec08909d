"""The documentation: links resolve, the README is short and links every doc, no document that does not ship is
cited, and every example command parses with the CLI's own parser (the fast ones also run)."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
USER_DOCS = [README, ROOT / "CONTRIBUTING.md", *DOCS]
README_MAX_LINES = 150

# Documents that exist only outside the repository (the authors' planning notes): nothing that ships may cite
# them. Written as patterns (a bracketed letter) so that this file, which is scanned too, does not name them.
UNSHIPPED = re.compile(r"ANCHORS_ALG[O]|(?:DESIGN|STYLE|FEASIBILITY|TINY_MODELS|FORWARD_OBJECTIVES|USER_ASKS)[.]m[d]"
                       r"|shared/referenc[e]/")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".json", ".sh", ".cfg", ".ini", ".rst"}

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
SHELL_LANGS = {"", "bash", "sh", "shell", "console", "zsh"}
INLINE_CODE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
# the start of a command a doc shows: `slas ...`, `.venv/bin/slas ...`, `$ slas ...`, `python -m slas ...`,
# `torchrun ... -m slas ...`, `bash setup.sh && ...`, optionally after environment assignments
COMMAND_START = re.compile(r"^(\$\s+)?([A-Z_][A-Z0-9_]*=\S+\s+)*((\S*/)?slas\s|(\S*/)?python3?\s+-m\s+slas\b|torchrun\s|"
                           r"bash\s+setup\.sh\b)")
SLAS_PROGRAMS = {"slas", ".venv/bin/slas"}
SEPARATORS = {"&&", "||", ";", "|"}


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int
    text: str
    inline: bool  # an inline code span in prose (else a line of a shell code block)

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _strip_code(text: str) -> str:
    """The markdown text with fenced blocks and inline code blanked (line numbers kept)."""
    out, fence = [], None
    for line in text.splitlines():
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(2)
            out.append("")
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
            out.append("")
        else:
            out.append(INLINE_CODE.sub("``", line))
    return "\n".join(out)


def _links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every markdown link and image outside code."""
    text = _strip_code(path.read_text(encoding="utf-8"))
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in LINK.finditer(text)]


def _is_external(target: str) -> bool:
    return target.startswith(("http://", "https://", "mailto:", "#", "ftp://"))


def _resolve(path: Path, target: str) -> Path:
    return (path.parent / unquote(target.split("#", 1)[0])).resolve()


def _snippets(path: Path) -> list[Snippet]:
    """Shell lines of fenced blocks (continuations joined) and inline code spans of the prose."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Snippet] = []
    fence, lang, pending, start = None, "", "", 0
    prose: list[tuple[int, str]] = []
    for i, line in enumerate(lines, 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence, lang = m.group(2), m.group(3).lower()
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
                continue
            if lang not in SHELL_LANGS:
                continue
            if not pending:
                start = i
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            out.append(Snippet(path, start, (pending + line).strip(), inline=False))
            pending = ""
            continue
        prose.append((i, line))
    # inline spans may wrap over a line break inside a paragraph
    text = "\n".join(line for _, line in prose)
    numbers = [i for i, _ in prose]
    for m in INLINE_CODE.finditer(text):
        out.append(Snippet(path, numbers[text.count("\n", 0, m.start())], " ".join(m.group(1).split()), inline=True))
    return out


def _commands(snippet: Snippet) -> list[list[str]]:
    """The argv (after the program) of every `slas` invocation in a snippet; [] if it shows none."""
    text = snippet.text
    if text.startswith("$ "):
        text = text[2:]
    if snippet.inline and not COMMAND_START.match(snippet.text):
        return []
    if not re.search(r"(^|[\s/])slas(\s|$)", text):
        return []
    # usage synopses: `[--opt value]` -> `--opt value`, so that the option is still checked
    text = re.sub(r"\[(-[^\[\]]*)\]", r"\1", text)
    tokens = shlex.split(text, comments=True)
    argvs, current = [], []
    for tok in [*tokens, "&&"]:
        if tok in SEPARATORS:
            argv = _slas_argv(current)
            if argv is not None:
                argvs.append(argv)
            current = []
        else:
            current.append(tok)
    return argvs


def _slas_argv(tokens: list[str]) -> list[str] | None:
    for i, tok in enumerate(tokens):
        if tok in SLAS_PROGRAMS or tok.endswith("/bin/slas"):
            return tokens[i + 1:]
        if tok == "-m" and i + 1 < len(tokens) and tokens[i + 1] == "slas":
            return tokens[i + 2:]
    return None


def _all_commands() -> list[tuple[Snippet, list[str]]]:
    found = []
    for path in [README, *DOCS]:
        for sn in _snippets(path):
            try:
                argvs = _commands(sn)
            except ValueError as e:  # shlex: unbalanced quotes
                if COMMAND_START.match(sn.text):
                    raise AssertionError(f"{sn.where()}: cannot split the command {sn.text!r}: {e}") from e
                continue
            found += [(sn, argv) for argv in argvs if argv]
    return found


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    try:
        from slas.apps.cli import build_parser
    except ImportError:
        from slas.cli import build_parser
    return build_parser()


def test_relative_links_resolve():
    broken = []
    for path in USER_DOCS:
        for line, target in _links(path):
            if _is_external(target) or not target.split("#", 1)[0]:
                continue
            if not _resolve(path, target).exists():
                broken.append(f"{path.relative_to(ROOT)}:{line}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_readme_is_short_and_links_every_doc():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES})"
    linked = {_resolve(README, t) for _, t in _links(README) if not _is_external(t)}
    missing = [str(d.relative_to(ROOT)) for d in DOCS if d.resolve() not in linked]
    assert not missing, f"docs not linked from README.md: {missing}"


def test_no_reference_to_documents_that_do_not_ship():
    files = [*USER_DOCS]
    for top in ("docs", "src", "tests"):
        files += [p for p in (ROOT / top).rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES]
    hits = []
    for path in dict.fromkeys(files):
        if "__pycache__" in path.parts or any(p.endswith(".egg-info") for p in path.parts):
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            hits += [f"{path.relative_to(ROOT)}:{i}: {m.group(0)}" for m in UNSHIPPED.finditer(line)]
    assert not hits, ("cite the upstream file and line (or docs/upstream-parity.md) instead of documents that are "
                      "not in the repository:\n" + "\n".join(hits))


# Prose may name a command or an option without its arguments (`slas report`, `--resume`): in an inline span these
# two complaints are fine, but every subcommand, option and value it does show must exist and be valid.
INCOMPLETE = ("the following arguments are required", "expected one argument", "expected at least one argument")


def test_doc_commands_parse(parser):
    commands = _all_commands()
    assert len(commands) >= 30, f"found only {len(commands)} example commands: is the extraction broken?"
    failures = []
    for sn, argv in commands:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                parser.parse_args(argv)
        except SystemExit as e:
            if e.code in (0, None):  # --help exits 0
                continue
            msg = err.getvalue().strip().splitlines()
            last = msg[-1] if msg else str(e)
            if sn.inline and any(s in last for s in INCOMPLETE):
                continue
            failures.append(f"{sn.where()}: slas {shlex.join(argv)}\n    {last}")
    assert not failures, "example commands the CLI rejects:\n" + "\n".join(failures)


def test_readme_quick_start_commands():
    text = README.read_text(encoding="utf-8")
    assert "bash setup.sh && .venv/bin/slas train\n" in text
    assert "bash setup.sh && .venv/bin/python -m pytest -q\n" in text


# Commands that finish in seconds; the docs' `--help`, `config show` and `config check` examples are run too.
ALWAYS_RUN = [["--help"], ["train", "--help"]]
FAST = re.compile(r"^(config (show|check)\b|.*--help$)")


PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")  # F, RUN_DIR, OUT: fine to parse, not to run


def test_fast_doc_commands_run():
    runs = [*ALWAYS_RUN]
    for _, argv in _all_commands():
        if FAST.match(" ".join(argv)) and argv not in runs and not any(PLACEHOLDER.match(a) for a in argv):
            runs.append(argv)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    failures = []
    for argv in runs[:12]:
        try:
            p = subprocess.run([sys.executable, "-m", "slas", *argv], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=30)
        except subprocess.TimeoutExpired:
            failures.append(f"slas {shlex.join(argv)}: still running after 30 s")
            continue
        if p.returncode != 0:
            failures.append(f"slas {shlex.join(argv)}: exit {p.returncode}\n    {p.stderr.strip()[-500:]}")
        elif not p.stdout.strip():
            failures.append(f"slas {shlex.join(argv)}: printed nothing")
    assert not failures, "\n".join(failures)


PATH_REFS = re.compile(r"(?<![\w/.-])((?:configs/[\w.-]+\.ya?ml)|(?:(?:benchmarks|research)/[\w.-]+\.(?:py|sh)))")


def _config_value(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


def test_paths_in_docs_exist():
    """configs/*.yaml, benchmarks/* and research/* paths named anywhere in the docs or config comments exist, and
    every `--config NAME` of an example command names a shipped config."""
    missing = []
    for path in [*USER_DOCS, *sorted((ROOT / "configs").glob("*.yaml"))]:
        text = path.read_text(encoding="utf-8")
        for m in PATH_REFS.finditer(text):
            if not (ROOT / m.group(1)).exists():
                missing.append(f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(1)}")
    for sn, argv in _all_commands():
        value = _config_value(argv)
        if value is None or PLACEHOLDER.match(value):
            continue
        if value.endswith((".yaml", ".yml")):
            target = ROOT / value if value.startswith("configs/") else None
        else:  # a shipped config by name: `--config toy_slas`
            target = ROOT / "configs" / f"{value}.yaml"
        if target is not None and not target.exists():
            missing.append(f"{sn.where()}: --config {value}")
    assert not missing, "paths named in the docs that do not exist:\n" + "\n".join(missing)


def test_reliability_table_names_existing_tests():
    """docs/reliability.md: at least 30 bad inputs, each naming a test that exists."""
    import re

    text = (ROOT / "docs" / "reliability.md").read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| input") and "---" not in ln]
    assert len(rows) >= 30
    named = re.findall(r"((?:unit|integration|e2e)/(?:\w+/)*test_\w+\.py)::(test_\w+)", text)
    assert len(named) >= 20
    for path, name in named:
        assert f"def {name}(" in (ROOT / "tests" / path).read_text(), f"{path}::{name} does not exist"
    cases = re.findall(r"\[(\w+)\]`", text)
    tests = "".join((ROOT / "tests" / path).read_text() for path in {p for p, _ in named})
    for case in cases:
        assert f'"{case}"' in tests, f"no test named in docs/reliability.md has a case {case}"
