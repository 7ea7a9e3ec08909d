"""Prompt datasets from files: ``data.prompts`` / ``data.eval_prompts``.

- ``.txt``: one prompt per line (HPD-v2 ``prompts.txt``, Flow-GRPO ``dataset/*/train.txt``, T2I-CompBench);
  blank lines are skipped and a trailing ``\\r`` is stripped (some upstream files have CRLF endings).
- ``.jsonl``: one JSON record per line with a ``"prompt"`` field (GenEval ``evaluation_metadata.jsonl``, Flow-GRPO
  ``*_metadata.jsonl``, DPG-Bench); the whole record is the prompt's metadata, passed to the reward.

Each prompt becomes a dict with at least ``"prompt"``, like a ShapesWorld split entry.
"""

from __future__ import annotations

import json
from pathlib import Path


def load_prompts(path: str | Path) -> list[dict]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"prompt file {str(p)!r} does not exist (data.prompts / data.eval_prompts; "
                                "docs/real-models.md says where the HPD-v2 and GenEval prompts come from)")
    if p.suffix not in (".txt", ".jsonl"):
        raise ValueError(f"prompt file {p}: expected .txt (one prompt per line) or .jsonl (a 'prompt' per record)")
    out: list[dict] = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if p.suffix == ".txt":
            out.append({"prompt": line.strip()})
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}:{i}: not a JSON record: {e}") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str):
            raise ValueError(f"{p}:{i}: a record needs a string 'prompt' field, got {line[:80]!r}")
        out.append(rec)
    if not out:
        raise ValueError(f"prompt file {p} holds no prompts")
    return out
