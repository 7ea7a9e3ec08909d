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
import base64
import csv
import hashlib
import http.client
import io
import json
import math
import os
import re
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

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


class JudgeError(RuntimeError):
    """The judge endpoint cannot serve this run at all (bad URL, key or model): the run stops."""


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
# The judge endpoint (OpenAI-compatible chat completions, standard library only)
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeConfig:
    """An OpenAI-compatible ``POST {base_url}/chat/completions`` endpoint that accepts images."""

    base_url: str
    """Up to and including the API version, e.g. ``http://localhost:8080/v1`` for ``vllm serve``."""
    model: str
    """The served model name (vLLM: ``--served-model-name``)."""
    api_key: str | None = None
    """Sent as ``Authorization: Bearer ...``; vLLM without ``--api-key`` needs none."""
    timeout_s: float = 300.0
    """Socket timeout of each attempt (upstream: 300 s); a slower attempt counts as failed and is retried."""
    max_retries: int = 4
    """Further attempts after a timeout, connection error, HTTP 408/409/429 or 5xx."""
    backoff_s: float = 2.0
    """Wait before retry k (k = 1, 2, ...) is ``backoff_s * 2**(k-1)``, capped at ``max_backoff_s``."""
    max_backoff_s: float = 60.0
    """Cap of one wait; also caps a server's ``Retry-After``."""
    concurrency: int = 8
    """Requests in flight at once."""
    max_tokens: int = 2048
    """Upstream's value for the vLLM judge: room for one analysis per testpoint (long prompts have up to 10)."""
    temperature: float | None = None
    """None sends no temperature (upstream sends none: the server's default applies)."""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"judge base_url must start with http:// or https://, got {self.base_url!r}")
        if not self.model:
            raise ValueError("judge model is empty; set SLAS_JUDGE_MODEL or pass model=")
        if self.timeout_s <= 0 or self.max_retries < 0 or self.backoff_s < 0 or self.concurrency < 1:
            raise ValueError("judge timeout_s must be > 0, max_retries >= 0, backoff_s >= 0 and concurrency >= 1")

    @classmethod
    def from_env(cls, base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                 **kwargs: Any) -> JudgeConfig:
        """Arguments win over ``SLAS_JUDGE_BASE_URL``, ``SLAS_JUDGE_MODEL``, ``SLAS_JUDGE_API_KEY``."""
        base_url = base_url or os.environ.get("SLAS_JUDGE_BASE_URL")
        model = model or os.environ.get("SLAS_JUDGE_MODEL")
        if not base_url or not model:
            raise ValueError("no judge configured: pass base_url and model, or set SLAS_JUDGE_BASE_URL "
                             "(e.g. http://localhost:8080/v1) and SLAS_JUDGE_MODEL")
        return cls(base_url.rstrip("/"), model, api_key or os.environ.get("SLAS_JUDGE_API_KEY") or None, **kwargs)


_RETRY_HTTP = {408, 409, 429}  # plus every 5xx
_FATAL_HTTP = {401, 403, 404}  # wrong key, wrong model or wrong URL: every request would fail the same way


class _Transient(Exception):
    """Worth another attempt: a timeout, a dropped connection, an overloaded server."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _Failed(Exception):
    """This image gets no answer in this run (retries spent, or an error a retry cannot fix)."""


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 ``[H, W, 3]`` image."""
    from PIL import Image

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"images must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def _post_once(cfg: JudgeConfig, body: bytes) -> str:
    headers = {"Content-Type": "application/json"}
    if cfg.api_key:
        headers["Authorization"] = f"Bearer {cfg.api_key}"
    req = urllib.request.Request(f"{cfg.base_url}/chat/completions", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=cfg.timeout_s) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        detail = e.read()[:300].decode("utf-8", "replace")
        if e.code in _FATAL_HTTP:
            raise JudgeError(f"judge {cfg.base_url} answered HTTP {e.code} for model {cfg.model!r}: {detail} "
                             "(check SLAS_JUDGE_BASE_URL, SLAS_JUDGE_MODEL and SLAS_JUDGE_API_KEY)") from None
        if e.code in _RETRY_HTTP or e.code >= 500:
            ra = e.headers.get("Retry-After") if e.headers else None
            raise _Transient(f"HTTP {e.code}: {detail}",
                             float(ra) if ra and ra.strip().isdigit() else None) from None
        raise _Failed(f"HTTP {e.code}: {detail}") from None
    except TimeoutError as e:
        raise _Transient(f"timed out after {cfg.timeout_s:g} s") from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            raise _Transient(f"timed out after {cfg.timeout_s:g} s") from e
        raise _Transient(f"connection failed: {e.reason}") from e
    except (OSError, http.client.HTTPException) as e:  # reset or cut off mid-response
        raise _Transient(f"connection failed: {e!r}") from e
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise _Failed(f"not a chat-completions response: {raw[:200]!r}") from None
    if isinstance(content, list):  # some servers answer with content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise _Failed(f"chat-completions content is {type(content).__name__}, not text")
    return content


class _Counter:
    """HTTP attempts made, counted from the worker threads (``+=`` on an int is not atomic across threads)."""

    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.n += 1


def _ask(cfg: JudgeConfig, text: str, image: np.ndarray, attempts: _Counter) -> str:
    """One judge answer, retried with exponential backoff on transient errors."""
    png = encode_png(image)
    message = {"role": "user", "content": [
        # image first, then the text: upstream's vLLM client order, which its trained judge models saw
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}},
        {"type": "text", "text": text},
    ]}
    payload: dict[str, Any] = {"model": cfg.model, "messages": [message], "max_tokens": cfg.max_tokens}
    if cfg.temperature is not None:
        payload["temperature"] = cfg.temperature
    body = json.dumps(payload).encode()
    for attempt in range(cfg.max_retries + 1):
        attempts.add()
        try:
            return _post_once(cfg, body)
        except _Transient as e:
            if attempt == cfg.max_retries:
                raise _Failed(f"{e} (gave up after {attempt + 1} attempts)") from None
            wait_s = min(cfg.backoff_s * 2**attempt, cfg.max_backoff_s)
            if e.retry_after is not None:
                wait_s = max(wait_s, min(e.retry_after, cfg.max_backoff_s))
            time.sleep(wait_s)
    raise AssertionError("unreachable")


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

    attempts = _Counter()
    pool = ThreadPoolExecutor(judge.concurrency)
    try:
        with cache_path.open("a", encoding="utf-8") as cache:
            futures: dict[Future, int] = {}
            for k in todo:
                _, _, _, img, text = jobs[k]
                futures[pool.submit(_ask, judge, text, img, attempts)] = k  # PNG-encoded in the worker: memory
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    k = futures[fut]
                    item, j, key, _, _ = jobs[k]
                    try:
                        answer = fut.result()
                    except _Failed as e:
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
