"""The ``remote`` reward: scores from a ``slas reward-server`` (slas.rewards.server) over HTTP.

Standard library only (``urllib``). Each batch gets a request id (a UUID) that every retry of it repeats, so the
server scores it once however often it is sent: a repeat is answered from the server's cache, or joins the
scoring still under way. Refused or reset connections, timeouts and 502/503/504 answers are retried with
exponential backoff and jitter. The bearer token comes from a file or an environment variable named in the
options, so a run's config holds where the token is, never the token; no message or log line holds it either.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import random
import time
import urllib.error
import urllib.request
import uuid
from typing import NamedTuple

import numpy as np

from slas.rewards import RewardFn, register
from slas.rewards.wire import REQUEST_ID_HEADER, TOKEN_ENV, check_token, encode_images, read_token

_RETRY_STATUS = (502, 503, 504)  # a proxy, a full queue, the server's time limit: worth another try; others not
_HINTS = {  # what to do when the retries run out, by the last failure
    "connection": "Is `slas reward-server` running there?",
    "timeout": "The server did not answer within the remote reward's timeout: raise it, or lower reward.batch_size.",
    502: "A proxy in front of the server could not reach it: is `slas reward-server` running there?",
    503: "The server stayed busy: raise its --queue-size, or the remote reward's retries or backoff_max.",
    504: "The batch was not scored within the server's --time-limit: raise it, or lower reward.batch_size.",
}
_log = logging.getLogger(__name__)
# Requests go straight to the server: an http_proxy in the environment must not relay rollout images.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class RemoteRewardError(RuntimeError):
    """The reward server could not be reached or answered with an error: never scored as zeros."""


class Tries(NamedTuple):
    """How the client waits and retries (the `remote` reward's options of the same names)."""

    timeout: float
    retries: int
    backoff: float
    backoff_max: float


def backoff_delay(attempt: int, backoff: float, backoff_max: float, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): ``d = min(backoff_max, backoff * 2**(attempt - 1))``,
    drawn uniformly from ``[d/2, d]`` ("equal jitter": clients refused together do not all come back together;
    M. Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015), and at least the server's
    ``Retry-After``, itself capped at ``backoff_max``."""
    d = min(backoff_max, backoff * 2.0 ** min(attempt - 1, 64))
    wait = (rng or random).uniform(d / 2, d)
    return max(wait, min(retry_after, backoff_max)) if retry_after else wait


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` of delta-seconds; None for an HTTP date or junk (the backoff alone decides then)."""
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _error_text(err: urllib.error.HTTPError) -> str:
    try:
        return json.loads(err.read())["error"]
    except Exception:  # a non-JSON error page (a proxy's): fall back to the status line
        return err.reason


def _call(url: str, body: bytes | None, headers: dict[str, str], tries: Tries, token_source: str = "") -> dict:
    """GET (``body`` None) or POST JSON; retry connection failures, timeouts and 502/503/504 ``tries.retries``
    times (``backoff_delay``); raise RemoteRewardError when the last try fails or the server answers another error
    (a 401 names ``token_source``, where the token came from)."""
    timeout, retries = tries.timeout, tries.retries
    last, kind, retry_after = "", "connection", None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_delay(attempt, tries.backoff, tries.backoff_max, retry_after))
        req = urllib.request.Request(url, data=body, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json", **headers})
        retry_after = None
        try:
            with _opener.open(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            if e.code not in _RETRY_STATUS:
                whose = f"; the token is from {token_source}" if e.code == 401 and token_source else ""
                raise RemoteRewardError(f"reward server {url} answered {e.code}: {_error_text(e)}{whose}") from None
            last, kind, retry_after = f"HTTP {e.code}: {_error_text(e)}", e.code, _retry_after(e.headers["Retry-After"])
        except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out (URLError is an OSError)
            reason = getattr(e, "reason", e)
            timed_out = isinstance(e, TimeoutError) or isinstance(reason, TimeoutError)
            last, kind = f"{type(e).__name__}: {reason}", "timeout" if timed_out else "connection"
        else:
            try:
                return json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise RemoteRewardError(f"reward server {url} answered with non-JSON: {e}") from None
        _log.warning("reward server %s, try %d of %d: %s", url, attempt + 1, retries + 1, last)
    raise RemoteRewardError(f"reward server {url} failed {retries + 1} time(s); last error: {last}. {_HINTS[kind]}")


def _token(token_file: str | None, token_env: str) -> tuple[str | None, str]:
    """(the token or None, where it came from): ``token_file`` when given, else the variable ``token_env``."""
    if token_file is not None:
        return read_token(token_file), f"token file {token_file}"
    value = os.environ.get(token_env)
    if not value:
        return None, f"the token_file option or the environment variable {token_env}"
    return check_token(value, f"environment variable {token_env}"), f"environment variable {token_env}"


@register("remote")
def remote(*, url: str, timeout: float = 300.0, retries: int = 3, backoff: float = 1.0, backoff_max: float = 30.0,
           encoding: str = "png", token_file: str | None = None, token_env: str = TOKEN_ENV) -> RewardFn:
    """Scores from a ``slas reward-server`` at ``url`` (e.g. http://127.0.0.1:18100). ``timeout``: seconds per
    socket operation; ``retries``: extra tries after a connection failure, timeout or 502/503/504, waiting
    ``backoff_delay`` (``backoff * 2**k`` with jitter, at most ``backoff_max``, at least the server's Retry-After);
    ``encoding``: "png" (smaller) or "raw" (no encoding cost, for loopback); the bearer token is read from
    ``token_file``, else from the environment variable ``token_env`` (none when it is unset).
    The server's health is checked here, and a token the server needs is tried with an empty batch, so a server
    that is down or refuses the token fails the build, not the first rollout. A failed call raises
    RemoteRewardError: a missing reward is never scored as zero."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"reward 'remote': url must start with http:// or https://, got {url!r}")
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"reward 'remote': timeout must be > 0 seconds, got {timeout!r}")
    if not (isinstance(retries, int) and retries >= 0):
        raise ValueError(f"reward 'remote': retries must be an int >= 0, got {retries!r}")
    for name, value in (("backoff", backoff), ("backoff_max", backoff_max)):
        if not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"reward 'remote': {name} must be >= 0 seconds, got {value!r}")
    if encoding not in ("png", "raw"):
        raise ValueError(f"reward 'remote': encoding must be 'png' or 'raw', got {encoding!r}")
    if not (isinstance(token_env, str) and token_env):
        raise ValueError(f"reward 'remote': token_env must name an environment variable, got {token_env!r}")
    token, source = _token(token_file, token_env)
    base = url.rstrip("/").removesuffix("/score")
    tries = Tries(timeout, retries, backoff, backoff_max)
    health = _call(f"{base}/health", None, {}, tries)
    if health.get("status") != "ok":
        raise RemoteRewardError(f"reward server {base} is not healthy: {health}")
    served, max_bytes = health.get("reward"), health.get("max_bytes")
    auth = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if health.get("auth"):
        if token is None:
            raise RemoteRewardError(f"reward server {base} requires a bearer token: set {source}")
        empty = {"images": encode_images(np.zeros((0, 1, 1, 3), np.uint8), "raw"), "prompts": []}
        _call(f"{base}/score", json.dumps(empty).encode(), auth, tries, source)  # a wrong token: 401 now

    def fn(images: np.ndarray, prompts: list[str], metas: list[dict]) -> np.ndarray:
        try:
            body = json.dumps({"images": encode_images(images, encoding), "prompts": list(prompts),
                               "metas": list(metas)}, allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise ValueError(f"reward 'remote': cannot send this batch as JSON: {e}") from None
        if isinstance(max_bytes, int) and len(body) > max_bytes:
            raise RemoteRewardError(f"a batch of {len(images)} images is {len(body)} bytes, over the limit of reward "
                                    f"server {base} ({max_bytes}): lower reward.batch_size or raise its --max-bytes")
        # one id per batch, repeated by its retries: the server scores it once
        out = _call(f"{base}/score", body, {**auth, REQUEST_ID_HEADER: uuid.uuid4().hex}, tries, source)
        scores = out.get("scores") if isinstance(out, dict) else None
        if not isinstance(scores, list) or len(scores) != len(images):
            got = len(scores) if isinstance(scores, list) else "no"
            raise RemoteRewardError(f"reward server {base} ({served!r}) returned {got} scores for {len(images)} images")
        return np.array([math.nan if s is None else s for s in scores], dtype=np.float64)

    return fn

