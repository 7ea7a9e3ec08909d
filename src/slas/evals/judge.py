"""The MLLM judge's endpoint for slas.evals.unigenbench: an OpenAI-compatible ``POST {base_url}/chat/completions``
that accepts images, called with the standard library only, retried with exponential backoff on transient errors
(timeouts, dropped connections, HTTP 408/409/429 and 5xx), stopped at once on errors every request would repeat
(HTTP 401/403/404: a wrong key, model or URL). The request body follows upstream's vLLM client
(``eval/vllm_request.py`` of ``CodeGoat24/UniGenBench`` @ ``6843bea6b0816832bc03ab2aa2b08f42f67052d9``): the image first,
as a data URI, then the text."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np


class JudgeError(RuntimeError):
    """The judge endpoint cannot serve this run at all (bad URL, key or model): the run stops."""




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


class Unanswered(Exception):
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
        raise Unanswered(f"HTTP {e.code}: {detail}") from None
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
        raise Unanswered(f"not a chat-completions response: {raw[:200]!r}") from None
    if isinstance(content, list):  # some servers answer with content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise Unanswered(f"chat-completions content is {type(content).__name__}, not text")
    return content


class Attempts:
    """HTTP attempts made, counted from the worker threads (``+=`` on an int is not atomic across threads)."""

    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.n += 1


def ask(cfg: JudgeConfig, text: str, image: np.ndarray, attempts: Attempts) -> str:
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
                raise Unanswered(f"{e} (gave up after {attempt + 1} attempts)") from None
            wait_s = min(cfg.backoff_s * 2**attempt, cfg.max_backoff_s)
            if e.retry_after is not None:
                wait_s = max(wait_s, min(e.retry_after, cfg.max_backoff_s))
            time.sleep(wait_s)
    raise AssertionError("unreachable")
