"""UniGenBench++ (English): prompts, the MLLM-judge protocol, and its scores.

Upstream: ``CodeGoat24/UniGenBench`` (CC BY 4.0, Tencent). The data is read, not copied, from a directory that holds
the files described in ``shared/data/README.md``:

- ``test_prompts_en.csv`` (short) / ``test_prompts_en_long.csv`` (long): 600 prompts each, with their testpoints
  (sub-dimensions) and one description per testpoint;
- ``eval_testpoint_definitions_en.json``: the 27 testpoint definitions and the English judge prompt template, taken
  from ``eval/src/eval_common.py`` @ ``49d0bcebb0b9418d975d3957c2fee10f34811d14``.

The protocol reproduced (``eval/qwenvl_72b_en_eval.py`` @ ``17947366b8c644316f1eb8465d1858eb52835205``, and
``eval/vllm_request.py`` @ ``6843bea6b0816832bc03ab2aa2b08f42f67052d9``):

- one judge request per image (upstream: 4 images per prompt); the template is filled with the prompt, the
  testpoints as a Python list literal, ``"Checkpoints Defination:「\\n{tp}: {definition}...\\n」"`` and
  ``"Checkpoints Description:「\\n{tp}: {description}...\\n」"`` (upstream's spelling kept: it is prompt text);
- the answer holds ``<analysis>[...]</analysis>`` and ``<score>[...]</score>``, Python list literals of one
  entry per testpoint;
- a testpoint's primary dimension is the part before ``" - "`` (``"Attribute - Color"`` -> ``"Attribute"``); the
  four names without one (Style, World Knowledge, Text Generation, Logical Reasoning) are their own primary
  dimension. Each dimension's score is (testpoints judged 1) / (testpoints judged), pooled over all images;
- overall = the mean of the 10 primary-dimension scores, the leaderboard's "Overall". The upstream scripts print
  no overall; ``overall_testpoints`` (pooled over every testpoint) is reported beside it.

Deviations, and why:

- Images are sent as lossless PNG data URIs (upstream: JPEG q95 for the vLLM judge, the file's own type for Gemini).
- A malformed answer (missing tags, not a list, wrong length, a score outside {0, 1}) is counted in
  ``n_malformed`` and left out of every score. Upstream re-asks the judge forever; here
  ``score_unigenbench(..., retry_malformed=True)`` re-asks once per run, so a rerun can replace it.
- A request that still fails after its retries is counted in ``n_failed`` and left out of the scores; upstream
  retries 10 times and then crashes on the ``None`` it gets.
- Row ``index`` 509 of ``test_prompts_en_long.csv`` has invalid JSON upstream (a missing comma between two
  testpoint names). It is repaired with a warning; any other unreadable row is skipped with a warning.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from slas.evals.judge import Attempts, JudgeConfig, JudgeError, Unanswered, ask, encode_png

__all__ = [
    "DATA_FILES",
    "Item",
    "JudgeConfig",
    "JudgeError",
    "MalformedVerdict",
    "UniGenBenchDataWarning",
    "UniGenBenchResult",
    "Verdict",
    "build_judge_prompt",
    "default_data_dir",
    "encode_png",
    "load_definitions",
    "load_items",
    "parse_verdict",
    "primary_dimension",
    "score_unigenbench",
    "summarize",
]

UPSTREAM_REPO = "CodeGoat24/UniGenBench"
DATA_FILES = {"short": "test_prompts_en.csv", "long": "test_prompts_en_long.csv"}
DEFINITIONS_FILE = "eval_testpoint_definitions_en.json"
IMAGES_PER_PROMPT = 4  # upstream's protocol; score_unigenbench() accepts any number per prompt

Split = Literal["short", "long"]


class UniGenBenchDataWarning(UserWarning):
    """A row of the upstream data could not be read as published (repaired or skipped)."""


class MalformedVerdict(ValueError):
    """The judge's answer does not follow the template's output format."""


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One benchmark prompt. ``testpoints[i]`` is checked against ``descriptions[i]``."""

    index: int
    prompt: str
    testpoints: tuple[str, ...]
    descriptions: tuple[str, ...]


def default_data_dir() -> Path:
    """``$SLAS_DATA/unigenbench`` if ``SLAS_DATA`` is set, else ``../shared/data/unigenbench`` beside the repo.

    ``SLAS_DATA`` names the root of the shared data (the folder of ``shared/data/README.md``), so one variable serves
    every benchmark.
    """
    root = os.environ.get("SLAS_DATA")
    if root:
        return Path(root) / "unigenbench"
    repo = Path(__file__).resolve().parents[3]  # src/slas/evals/unigenbench.py -> repo root
    return repo.parent / "shared" / "data" / "unigenbench"


def _data_path(data_dir: str | Path | None, name: str) -> Path:
    d = Path(data_dir) if data_dir is not None else default_data_dir()
    path = d / name
    if not path.is_file():
        raise FileNotFoundError(f"UniGenBench file {path} not found; pass data_dir or set SLAS_DATA to the folder "
                                "that holds unigenbench/ (see shared/data/README.md)")
    return path


def load_definitions(data_dir: str | Path | None = None) -> tuple[dict[str, str], str]:
    """(testpoint name -> definition, judge prompt template)."""
    path = _data_path(data_dir, DEFINITIONS_FILE)
    d = json.loads(path.read_text(encoding="utf-8"))
    try:
        return dict(d["testpoint_explanations_en"]), str(d["judge_system_prompt_template_en"])
    except KeyError as e:
        raise ValueError(f"{path}: missing key {e}; expected testpoint_explanations_en and "
                         "judge_system_prompt_template_en") from None


# Two JSON strings separated only by whitespace: never valid JSON, and exactly the defect of long-CSV row 509
# ("Grammar - Negation" "Attribute - Color").
_MISSING_COMMA = re.compile(r'"(\s+)"')


def _read_sub_dims(raw: str, where: str) -> dict | None:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        error = e
    try:
        d = json.loads(_MISSING_COMMA.sub(r'",\1"', raw))
        ok = len(d["Testpoints"]) == len(d["Testpoint Description"])
    except (json.JSONDecodeError, KeyError, TypeError):
        ok = False
    if ok:
        warnings.warn(f"{where}: sub_dims_en is not valid JSON upstream ({error}); repaired by inserting the missing "
                      f"comma between adjacent strings, giving testpoints {d['Testpoints']}",
                      UniGenBenchDataWarning, stacklevel=3)
        return d
    warnings.warn(f"{where}: sub_dims_en is not valid JSON ({error}) and could not be repaired; row skipped",
                  UniGenBenchDataWarning, stacklevel=3)
    return None


def load_items(split: Split = "short", data_dir: str | Path | None = None) -> list[Item]:
    """The benchmark's prompts, in file order. Testpoint names are checked against the definitions file."""
    if split not in DATA_FILES:
        raise ValueError(f"split must be one of {sorted(DATA_FILES)}, got {split!r}")
    path = _data_path(data_dir, DATA_FILES[split])
    definitions, _ = load_definitions(path.parent)
    items: list[Item] = []
    with path.open(encoding="utf-8", newline="") as f:  # newline="": quoted fields may span lines
        for row in csv.DictReader(f):
            where = f"{path.name} row index {row['index']}"
            d = _read_sub_dims(row["sub_dims_en"], where)
            if d is None:
                continue
            tps, descs = tuple(d["Testpoints"]), tuple(d["Testpoint Description"])
            if len(tps) != len(descs) or not tps:
                raise ValueError(f"{where}: {len(tps)} testpoints but {len(descs)} descriptions")
            unknown = sorted(set(tps) - set(definitions))
            if unknown:
                raise ValueError(f"{where}: testpoints {unknown} have no definition in {DEFINITIONS_FILE}")
            items.append(Item(int(row["index"]), row["prompt_en"], tps, descs))
    return items


def primary_dimension(testpoint: str) -> str:
    """``"Attribute - Color"`` -> ``"Attribute"``; a name without ``" - "`` is its own primary dimension."""
    return testpoint.split(" - ", 1)[0].strip()


# ----------------------------------------------------------------------------
# The judge prompt and its answer
# ----------------------------------------------------------------------------


def build_judge_prompt(item: Item, template: str, definitions: dict[str, str]) -> str:
    """The judge's text, filled as upstream fills ``SYSTEM_PROMPT_EN_TEMPLATE``."""
    explanation = "Checkpoints Defination:「" + "".join(f"\n{tp}: {definitions[tp]}" for tp in item.testpoints) + "\n」"
    test_explanation = ("Checkpoints Description:「"
                        + "".join(f"\n{tp}: {d}" for tp, d in zip(item.testpoints, item.descriptions, strict=True))
                        + "\n」")
    # upstream interpolates the Python list itself, so the judge sees its repr: ['Style', 'World Knowledge']
    return template.format(prompt=item.prompt, testpoint=str(list(item.testpoints)), explanation=explanation,
                           test_explanation=test_explanation)


def _one_block(text: str, tag: str) -> str:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
    if len(blocks) != 1:
        raise MalformedVerdict(f"expected one <{tag}>...</{tag}> block, found {len(blocks)}")
    return blocks[0].strip()


def _literal_list(s: str, tag: str) -> list:
    try:
        v = ast.literal_eval(s)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise MalformedVerdict(f"<{tag}> is not a Python/JSON list literal: {type(e).__name__}") from None
    if not isinstance(v, list):
        raise MalformedVerdict(f"<{tag}> holds a {type(v).__name__}, not a list")
    return v


def parse_verdict(text: str, n_testpoints: int) -> tuple[int, ...]:
    """The 0/1 score of each testpoint, or ``MalformedVerdict`` saying what is wrong.

    Stricter than upstream, which counts ``score == 1`` and anything else as 0: here every score must be the integer
    0 or 1, and both lists must have one entry per testpoint, as the template demands.
    """
    analysis = _literal_list(_one_block(text, "analysis"), "analysis")
    scores = _literal_list(_one_block(text, "score"), "score")
    if len(analysis) != n_testpoints or len(scores) != n_testpoints:
        raise MalformedVerdict(f"{n_testpoints} testpoints but {len(analysis)} analyses and {len(scores)} scores")
    if not all(type(s) is int and s in (0, 1) for s in scores):  # type(): bool and 1.0 are not the format
        raise MalformedVerdict(f"scores must each be 0 or 1, got {scores}")
    return tuple(scores)


# ----------------------------------------------------------------------------
# Evaluation: cache, concurrency, scores
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The judge's verdict on image ``image`` of prompt ``index``."""

    index: int
    image: int
    status: Literal["ok", "malformed", "failed"]
    scores: tuple[int, ...] | None  # one 0/1 per testpoint when status == "ok"
    detail: str  # why it is malformed or failed; "" when ok
    cached: bool  # the answer came from the cache, no request made


@dataclass(frozen=True)
class UniGenBenchResult:
    verdicts: list[Verdict]
    summary: dict[str, Any]
    n_requests: int  # HTTP attempts made by this call, retries included


def _cache_key(model: str, judge_text: str, image: np.ndarray) -> str:
    h = hashlib.sha256()
    # The judge text holds the prompt, the testpoints with their definitions and descriptions, and the template, so
    # a change to any of them asks again. The pixels and their shape are hashed rather than the PNG bytes: a Pillow
    # upgrade that changes the encoding must not invalidate the cache.
    h.update(json.dumps([model, judge_text, list(image.shape)]).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def _load_cache(path: Path) -> dict[str, str]:
    answers: dict[str, str] = {}
    if not path.exists():
        return answers
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            answers[rec["key"]] = rec["answer"]  # a later line (a re-asked malformed answer) wins
        except (json.JSONDecodeError, KeyError, TypeError):
            # a run killed mid-write leaves a torn last line; the entry is simply asked again
            warnings.warn(f"{path}:{n}: unreadable cache line skipped", UniGenBenchDataWarning, stacklevel=3)
    return answers


def summarize(items: Sequence[Item], verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """Scores per primary dimension, per sub-dimension (testpoint name) and overall; malformed and failed
    verdicts are counted and listed, never scored."""
    by_index = {it.index: it for it in items}
    primary: dict[str, list[int]] = {}
    sub: dict[str, list[int]] = {}
    for v in verdicts:
        if v.status != "ok" or v.scores is None:
            continue
        for tp, s in zip(by_index[v.index].testpoints, v.scores, strict=True):
            for table, key in ((primary, primary_dimension(tp)), (sub, tp)):
                c = table.setdefault(key, [0, 0])
                c[0] += s
                c[1] += 1

    def table(stats: dict[str, list[int]]) -> dict[str, dict[str, float | int]]:
        return {k: {"score": c / t, "correct": c, "total": t} for k, (c, t) in sorted(stats.items())}

    p = table(primary)
    n_correct, n_total = sum(c for c, _ in primary.values()), sum(t for _, t in primary.values())
    bad = [v for v in verdicts if v.status != "ok"]
    return {
        "overall": float(np.mean([d["score"] for d in p.values()])) if p else math.nan,
        "overall_testpoints": n_correct / n_total if n_total else math.nan,
        "primary": p,
        "sub": table(sub),
        "n_prompts": len({v.index for v in verdicts}),
        "n_images": len(verdicts),
        "n_scored": sum(v.status == "ok" for v in verdicts),
        "n_malformed": sum(v.status == "malformed" for v in verdicts),
        "n_failed": sum(v.status == "failed" for v in verdicts),
        "problems": [{"index": v.index, "image": v.image, "status": v.status, "detail": v.detail} for v in bad],
    }


def score_unigenbench(
    items: Sequence[Item],
    images: Sequence[Sequence[np.ndarray]],
    judge: JudgeConfig,
    cache_path: str | Path,
    data_dir: str | Path | None = None,
    retry_malformed: bool = False,
    progress: Callable[[int], None] | None = None,
) -> UniGenBenchResult:
    """Judge ``images[i][j]`` (uint8 ``[H, W, 3]``, image j of ``items[i]``) and score the benchmark.

    Every judge answer is appended to the JSONL ``cache_path`` as it arrives, keyed by a hash of (model, prompt,
    testpoints and their descriptions, pixels); a rerun asks only for what is missing, so an interrupted run resumes.
    Failed requests are not cached (a rerun retries them); malformed answers are, unless ``retry_malformed``.
    """
    if len(images) != len(items):
        raise ValueError(f"{len(items)} items but images for {len(images)}: images[i] holds the images of items[i]")
    definitions, template = load_definitions(data_dir)
    cache_path = Path(cache_path)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cached = _load_cache(cache_path)

    jobs: list[tuple[Item, int, str, np.ndarray, str]] = []  # (item, image number, cache key, image, judge text)
    for item, imgs in zip(items, images, strict=True):
        text = build_judge_prompt(item, template, definitions)
        for j, img in enumerate(imgs):
            img = np.asarray(img)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"prompt {item.index} image {j}: expected uint8 [H, W, 3], got {img.dtype} "
                                 f"{list(img.shape)}")
            jobs.append((item, j, _cache_key(judge.model, text, img), img, text))

    def verdict(item: Item, j: int, answer: str, from_cache: bool) -> Verdict:
        try:
            return Verdict(item.index, j, "ok", parse_verdict(answer, len(item.testpoints)), "", from_cache)
        except MalformedVerdict as e:
            return Verdict(item.index, j, "malformed", None, str(e), from_cache)

    results: dict[int, Verdict] = {}
    todo: list[int] = []
    for k, (item, j, key, _, _) in enumerate(jobs):
        if key in cached:
            v = verdict(item, j, cached[key], True)
            if v.status == "ok" or not retry_malformed:
                results[k] = v
                continue
        todo.append(k)
    if progress and len(results):
        progress(len(results))

    attempts = Attempts()
    pool = ThreadPoolExecutor(judge.concurrency)
    try:
        with cache_path.open("a", encoding="utf-8") as cache:
            futures: dict[Future, int] = {}
            for k in todo:
                _, _, _, img, text = jobs[k]
                futures[pool.submit(ask, judge, text, img, attempts)] = k  # PNG-encoded in the worker: memory
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    k = futures[fut]
                    item, j, key, _, _ = jobs[k]
                    try:
                        answer = fut.result()
                    except Unanswered as e:
                        results[k] = Verdict(item.index, j, "failed", None, str(e), False)
                    else:
                        # written by this thread only, one whole line at a time, so lines never interleave
                        cache.write(json.dumps({"key": key, "model": judge.model, "index": item.index, "image": j,
                                                "answer": answer}, ensure_ascii=False) + "\n")
                        cache.flush()
                        results[k] = verdict(item, j, answer, False)
                    if progress:
                        progress(1)
    finally:
        # after a JudgeError or Ctrl-C the queued requests are dropped and only those in flight finish; every
        # answer received so far is already in the cache
        pool.shutdown(wait=True, cancel_futures=True)

    verdicts = [results[k] for k in range(len(jobs))]
    return UniGenBenchResult(verdicts, summarize(items, verdicts), attempts.n)
