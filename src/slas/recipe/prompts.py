"""Prompts: the one prompt-file reader (``load_prompts``: ``data.prompts`` / ``data.eval_prompts``, ``slas sample
--prompts-file``, ``slas eval --prompts``), the order training draws them in (``PromptStream``) and their cached
conditioning (``PromptEncoder``).

One prompt per line; blank lines and lines starting with ``#`` are skipped, a trailing ``\\r`` is stripped (some
upstream files have CRLF endings), and so is a UTF-8 byte-order mark at the start of the file (Windows editors write
one; read as text it would be part of the first prompt). A line starting with ``{`` is a JSON record with a
``"prompt"`` field (GenEval ``evaluation_metadata.jsonl``, Flow-GRPO ``*_metadata.jsonl``, DPG-Bench): the whole
record is the prompt's metadata, passed to the reward. Any other line is the prompt's text (HPD-v2
``prompts.txt``, Flow-GRPO ``dataset/*/train.txt``, T2I-CompBench); ``parse(text)``, when given (a world's grammar,
e.g. ShapesWorld's), turns it into its metadata.

Each prompt becomes a dict with at least ``"prompt"``, like a world's split entry. Every problem is a
``PromptFileError`` (a ``ValueError``) naming the file and line; a message quotes at most ``short``'s 80 characters
of a line, however long the line is.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import torch

from slas.config.errors import short

# prompt embeddings kept in memory (on the CPU) across iterations; FLUX's T5 at 512 tokens is 4-8 MB a prompt
COND_CACHE_PROMPTS = 1024


class PromptFileError(ValueError):
    """A prompt file that cannot be read: names the file (and line)."""


TABULAR = (".csv", ".tsv", ".json", ".parquet", ".xlsx")  # not one prompt per line: refused, not misread


def _prompt_lines(text: str):
    """(line number, stripped text) of the lines that hold a prompt: not blank, not a ``#`` comment."""
    for i, raw in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
        line = raw.rstrip("\r").strip()
        if line and not line.startswith("#"):
            yield i, line


def prompt_line_numbers(path: str | Path) -> list[int]:
    """The line number of each prompt ``load_prompts(path)`` returns, in order (for messages naming a line)."""
    return [i for i, _ in _prompt_lines(Path(path).expanduser().read_text(encoding="utf-8"))]


def load_prompts(path: str | Path, parse: Callable[[str], dict] | None = None) -> list[dict]:
    if not str(path).strip():
        raise PromptFileError("prompt file: the path is empty")
    p = Path(path).expanduser()
    if p.is_dir():
        raise PromptFileError(f"prompt file {p} is a directory")
    if not p.is_file():
        raise FileNotFoundError(f"prompt file {str(p)!r} does not exist")
    if p.suffix.lower() in TABULAR:
        raise PromptFileError(f"prompt file {p}: expected .txt (one prompt per line) or .jsonl (a 'prompt' per record), "
                              f"not {p.suffix}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise PromptFileError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    out: list[dict] = []
    for i, line in _prompt_lines(text):
        if line.startswith("{"):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise PromptFileError(f"{p}:{i}: not a JSON record: {e}") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str) or not rec["prompt"].strip():
                raise PromptFileError(f"{p}:{i}: a JSON record needs a non-empty string 'prompt' field, got "
                                      f"{short(line)}")
        elif parse is not None:
            try:
                rec = parse(line)
            except ValueError as e:
                raise PromptFileError(f"{p}:{i}: {e}") from None
        else:
            rec = {"prompt": line}
        out.append(rec)
    if not out:
        raise PromptFileError(f"prompt file {p} is empty" if not text.strip() else
                              f"prompt file {p} holds no prompts (only blank or # comment lines)")
    return out


class PromptStream:
    """Training's prompts in epoch-shuffled order; the state is one integer (the position)."""

    def __init__(self, prompts: list[dict], seed: int, position: int = 0):
        self.prompts, self.seed, self.position = prompts, seed, position
        self._epoch, self._order = -1, []

    def next(self, k: int) -> list[dict]:
        out = []
        for _ in range(k):
            epoch, i = divmod(self.position, len(self.prompts))
            if epoch != self._epoch:  # the order of an epoch is a pure function of (seed, epoch)
                self._epoch, self._order = epoch, list(range(len(self.prompts)))
                random.Random(self.seed * 7919 + epoch).shuffle(self._order)
            out.append(self.prompts[self._order[i]])
            self.position += 1
        return out


class PromptEncoder:
    """The backbone's conditioning of prompts, on its device. A frozen text encoder's embeddings are cached on the
    CPU (the newest ``COND_CACHE_PROMPTS`` prompts); a trained one encodes afresh, with gradients when asked."""

    def __init__(self, backbone, trained: bool):
        self.backbone, self.trained = backbone, trained
        self.cache: dict[str, dict[str, torch.Tensor]] = {}

    def __call__(self, prompts: list[str], grad: bool = False) -> dict[str, torch.Tensor]:
        """Conditioning [len(prompts), ...]; ``grad``: a trained encoder builds a graph (each micro-batch its own)."""
        if self.trained:
            with torch.set_grad_enabled(grad):
                return self.backbone.encode_prompts(prompts)
        missing = [p for p in dict.fromkeys(prompts) if p not in self.cache]
        if missing:
            enc = self.backbone.encode_prompts(missing)
            for i, p in enumerate(missing):
                self.cache[p] = {k: v[i : i + 1].detach().cpu() for k, v in enc.items()}
        out = {k: torch.cat([self.cache[p][k] for p in prompts]).to(self.backbone.device) for k in self.cache[prompts[0]]}
        while len(self.cache) > COND_CACHE_PROMPTS:  # oldest first (dicts keep insertion order)
            self.cache.pop(next(iter(self.cache)))
        return out
