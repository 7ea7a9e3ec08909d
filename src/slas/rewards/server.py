"""Serve any registered reward over HTTP, and the ``remote`` reward that calls such a server.

Standard library only (``http.server``, ``urllib``), so a reward model can live in another process,
virtualenv or machine (one whose torch imports torchvision for open_clip or ImageReward, or a GPU box)
while training calls it. Flow-GRPO and ddpo-pytorch do the same with pickled JPEGs
(yifan123/reward-server, kvablack/LLaVA-server); here images travel losslessly (PNG or raw uint8) inside
JSON, so the reward sees exactly the rollout's pixels, and the server unpickles nothing.

Protocol::

    POST /score   Content-Type: application/json, Content-Length required
        {"images": {"encoding": "png", "data": [<base64 PNG>, ...]}
                or {"encoding": "raw", "shape": [N, H, W, 3], "data": <base64 of the uint8 bytes, C order>},
         "prompts": [str, ...],          # N
         "metas": [object, ...]}         # N, optional (default: {} each)
      -> 200 {"reward": name, "scores": [float or null, ...]}     null = a non-finite score
      -> 400 bad payload, 404 unknown path, 411 no Content-Length, 413 too large, 500 the reward raised:
         {"error": one line}
    A reward with a ``prepare`` hook (slas.rewards.register; ShapesWorld's verifier rewards have one) gets its
    metadata filled in and checked first, as in training. What the hook refuses, and images the reward does not
    take, are a 400 (``RewardInputError``) naming what the reward needs.
    GET /health -> 200 {"status": "ok", "reward": name, "max_bytes": body limit}

The server has no authentication: it binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import io
import json
import logging
import math
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from slas.rewards import RewardFn, RewardInputError, build, prepare_metas, register

DEFAULT_PORT = 18100
DEFAULT_MAX_BYTES = 64 * 2**20  # request body limit
# PNG compresses, so a small body can decode to gigabytes: decoded pixels may be at most this many times
# the body limit (raw uint8 already is its own size).
DECODED_FACTOR = 16
_RETRY_STATUS = (502, 503, 504)  # a proxy or a restarting server: worth another try; 4xx and 500 are not
MAX_ERROR_CHARS = 500  # an error answer is one line of at most this many characters

_log = logging.getLogger(__name__)
# Requests go straight to the server: an http_proxy in the environment must not relay rollout images.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class PayloadError(ValueError):
    """A request the server refuses; ``status`` is the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class RemoteRewardError(RuntimeError):
    """The reward server could not be reached or answered with an error: never scored as zeros."""


def _short(value: object, n: int = 80) -> str:
    """``repr(value)`` cut to ``n`` characters: a message about a client's huge value stays one short line."""
    r = repr(value)
    return r if len(r) <= n else r[: n - 3] + "..."


def _one_line(message: str) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


# ----------------------------------------------------------------------------
# Payload encoding
# ----------------------------------------------------------------------------


def _check_images(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise ValueError(f"images must be a uint8 array [N, H, W, 3], got {got}")


def encode_images(images: np.ndarray, encoding: str = "png") -> dict:
    """uint8 [N, H, W, 3] -> the ``images`` field of a request (PNG: smaller; raw: no encoding cost)."""
    _check_images(images)
    if encoding == "raw":
        data = base64.b64encode(np.ascontiguousarray(images).tobytes()).decode("ascii")
        return {"encoding": "raw", "dtype": "uint8", "shape": list(images.shape), "data": data}
    if encoding == "png":
        from PIL import Image

        out = []
        for img in images:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG", compress_level=1)  # lossless either way; level 1 is fast
            out.append(base64.b64encode(buf.getvalue()).decode("ascii"))
        return {"encoding": "png", "data": out}
    raise ValueError(f"encoding must be 'png' or 'raw', got {encoding!r}")


def _b64(s: object, what: str) -> bytes:
    if not isinstance(s, str):
        raise PayloadError(f"{what} must be a base64 string, got {type(s).__name__}")
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise PayloadError(f"{what} is not valid base64: {e}") from None


def decode_images(obj: object, max_decoded_bytes: int) -> np.ndarray:
    """The ``images`` field of a request -> uint8 [N, H, W, 3]; PayloadError if malformed or too large."""
    if not isinstance(obj, dict) or "encoding" not in obj or "data" not in obj:
        raise PayloadError('"images" must be {"encoding": "png" | "raw", "data": ...}')
    if obj["encoding"] == "raw":
        shape = obj.get("shape")
        if (not isinstance(shape, list) or len(shape) != 4 or shape[3] != 3
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise PayloadError(f'raw images need "shape": [N, H, W, 3] of non-negative ints, got {_short(shape)}')
        if any(d >= 2**31 for d in shape):  # numpy cannot even describe an empty array with such sides
            raise PayloadError(f"raw images: shape {shape} has a side over 2**31")
        if obj.get("dtype", "uint8") != "uint8":
            raise PayloadError(f'raw images must be uint8, got dtype {_short(obj["dtype"])}')
        data = _b64(obj["data"], "images.data")
        if len(data) != math.prod(shape):
            raise PayloadError(f"raw images: {len(data)} bytes do not fill shape {shape} ({math.prod(shape)} bytes)")
        return np.frombuffer(data, dtype=np.uint8).reshape(shape).copy()
    if obj["encoding"] == "png":
        from PIL import Image, UnidentifiedImageError

        if not isinstance(obj["data"], list):
            raise PayloadError("png images: data must be a list of base64 PNG strings")
        opened, total = [], 0
        for i, s in enumerate(obj["data"]):
            try:
                img = Image.open(io.BytesIO(_b64(s, f"images.data[{i}]")))  # lazy: reads the header only
            except Image.DecompressionBombError as e:
                raise PayloadError(f"images.data[{i}] is too large to decode: {e}", status=413) from None
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:  # PIL's plugins raise all three
                raise PayloadError(f"images.data[{i}] is not an image: {e}") from None
            if img.format != "PNG" or img.mode != "RGB":
                raise PayloadError(f"images.data[{i}] must be an 8-bit RGB PNG, got {img.format} {img.mode}")
            total += img.width * img.height * 3
            if total > max_decoded_bytes:
                raise PayloadError(f"decoded images exceed {max_decoded_bytes} bytes", status=413)
            opened.append(img)
        sizes = {img.size for img in opened}
        if len(sizes) > 1:
            raise PayloadError(f"all images of a request must have one size, got {sorted(sizes)}")
        if not opened:
            return np.zeros((0, 1, 1, 3), dtype=np.uint8)
        try:
            return np.stack([np.asarray(img) for img in opened])  # [N, H, W, 3]
        except Exception as e:  # a corrupt or truncated PNG body: OSError, SyntaxError, zlib.error, ...
            raise PayloadError(f"a PNG could not be decoded: {type(e).__name__}: {e}") from None
    raise PayloadError(f'images.encoding must be "png" or "raw", got {_short(obj["encoding"])}')


def parse_request(payload: object, max_decoded_bytes: int) -> tuple[np.ndarray, list[str], list[dict]]:
    """A decoded JSON request -> (images [N, H, W, 3] uint8, prompts [N], metas [N])."""
    if not isinstance(payload, dict):
        raise PayloadError("the request body must be a JSON object with images, prompts and metas")
    unknown = sorted(set(payload) - {"images", "prompts", "metas"})
    if unknown:
        raise PayloadError(f"unknown field(s) {_short(unknown)}; a request has images, prompts and metas")
    if "images" not in payload or "prompts" not in payload:
        raise PayloadError('a request needs "images" and "prompts"')
    images = decode_images(payload["images"], max_decoded_bytes)
    n = len(images)
    prompts = payload["prompts"]
    if not isinstance(prompts, list) or len(prompts) != n or not all(isinstance(p, str) for p in prompts):
        raise PayloadError(f'"prompts" must be a list of {n} strings (one per image)')
    metas = payload.get("metas", [{} for _ in range(n)])
    if not isinstance(metas, list) or len(metas) != n or not all(isinstance(m, dict) for m in metas):
        raise PayloadError(f'"metas" must be a list of {n} objects (one per image)')
    return images, prompts, metas


# ----------------------------------------------------------------------------
# Server
# ----------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: RewardHTTPServer
    timeout = 120  # seconds a client may stall mid-request before its thread gives up

    def _reply(self, status: int, obj: dict) -> None:
        body = json.dumps(obj, allow_nan=False).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client left before its answer: nothing to tell it
            self.close_connection = True

    def _error(self, status: int, message: str) -> None:
        self._reply(status, {"error": _one_line(message)})

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (a malformed request line or header, an unknown method) as the same
        one-line JSON errors as the server's, instead of an HTML page."""
        self.close_connection = True
        self.request_version = "HTTP/1.0"  # an unparsed request line leaves HTTP/0.9, which gets no status line
        self.log_error("code %d, message %s", code, message)
        short, long = self.responses.get(code, ("Error", ""))
        self._error(code, f"{message or short}: {explain or long}" if (explain or long) else (message or short))

    def do_GET(self) -> None:
        if self.path == "/health":
            self._reply(200, {"status": "ok", "reward": self.server.reward, "max_bytes": self.server.max_bytes})
        else:
            self._error(404, f"unknown path {_short(self.path)}; use POST /score or GET /health")

    def do_POST(self) -> None:
        if self.path != "/score":
            self.close_connection = True  # the body is not read
            self._error(404, f"unknown path {_short(self.path)}; use POST /score or GET /health")
            self._drain()
            return
        try:
            self._score()
        except PayloadError as e:
            if e.status in (411, 413):
                self.close_connection = True  # the body may be unread
            _log.info("refused a request (%d): %s", e.status, _one_line(str(e)))
            self._error(e.status, str(e))
            self._drain()
        except Exception as e:  # a bug in the server itself: still a one-line answer, and the server keeps serving
            _log.exception("internal error on POST /score")
            self._error(500, f"internal error: {type(e).__name__}: {e}")

    def _score(self) -> None:
        images, prompts, metas = parse_request(self._read_json(), self.server.max_bytes * DECODED_FACTOR)
        reward = self.server.reward
        try:
            metas = prepare_metas([reward], prompts, metas)  # the metadata the reward reads, as in training
            with self.server.lock:  # reward models and their caches are not written for concurrent calls
                scores = np.asarray(self.server.score_fn(images, prompts, metas), dtype=np.float64)
            if scores.shape != (len(images),):
                raise ValueError(f"returned shape {list(scores.shape)} for {len(images)} images")
        except RewardInputError as e:  # the request's fault: what the reward needs, not a reward failure
            raise PayloadError(str(e)) from None
        except Exception as e:  # any reward failure must reach the client as an error, never as a score
            message = f"reward {reward!r} failed: {type(e).__name__}: {e}"
            _log.error("%s", _one_line(message))  # one line per failure; the traceback only at DEBUG
            _log.debug("traceback of the failure of reward %r", reward, exc_info=True)
            self._error(500, message)
            return
        self._reply(200, {"reward": reward, "scores": [float(s) if math.isfinite(s) else None for s in scores.tolist()]})

    def _read_json(self) -> object:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise PayloadError("chunked bodies are not accepted: send Content-Length", status=411)
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise PayloadError("Content-Length is required", status=411)
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0 or not raw.strip().isdigit():  # int() also takes "+1", "1_0" and " 1 "
            self.close_connection = True  # where the body ends is unknown
            raise PayloadError(f"bad Content-Length {_short(raw)}")
        if length > self.server.max_bytes:
            self._discard(length)
            raise PayloadError(f"request body of {length} bytes exceeds the server's limit of "
                               f"{self.server.max_bytes} (--max-bytes); send smaller batches", status=413)
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise PayloadError(f"request body ended after {len(body)} of {length} bytes")
        try:
            return json.loads(body)
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an int of more than 4300 digits
            raise PayloadError(f"request body is not JSON: {e}") from None
        except RecursionError:
            raise PayloadError("request body is not JSON this server reads: it is nested too deeply") from None

    def _drain(self, seconds: float = 1.0) -> None:
        """After an error answer on a connection that closes: end our side, then read and drop what the client may
        still send (a body not read, or longer than its Content-Length) until it closes, at most max_bytes and
        ``seconds`` per read, so that closing the socket does not reset the connection before the client has read
        the answer."""
        if not self.close_connection:
            return
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)  # the answer is complete: a client reading to EOF stops here
            self.connection.settimeout(seconds)
            left = self.server.max_bytes
            while left > 0:
                chunk = self.rfile.read1(min(left, 2**16))
                if not chunk:
                    return
                left -= len(chunk)
        except OSError:  # a timeout or a reset: the connection closes now either way
            pass

    def _discard(self, length: int) -> None:
        """Read and drop a refused body of moderate size, in chunks: closing a socket with unread data resets the
        connection, and the client could lose the 413 answer. Larger bodies are cut off unread."""
        if length > 4 * self.server.max_bytes:
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 2**20))
            if not chunk:
                return
            length -= len(chunk)

    def log_message(self, format: str, *args) -> None:  # route the access log through logging, not stderr
        _log.info("%s %s", self.address_string(), format % args)


class RewardHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server for one scoring function; calls to it are serialised by ``lock``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], score_fn: RewardFn, reward: str,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.score_fn, self.reward, self.max_bytes = score_fn, reward, max_bytes
        self.lock = threading.Lock()
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def make_server(reward: str, options: dict | None = None, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                max_bytes: int = DEFAULT_MAX_BYTES, batch_size: int = 256) -> RewardHTTPServer:
    """Build registered reward ``reward`` with ``options`` (its model is loaded now, before binding) and bind a
    server for it; ``port=0`` picks a free port (see ``.url``). Call ``serve_forever()`` to serve."""
    if reward == "remote":
        raise ValueError("the reward server cannot serve 'remote' (it would call itself or another server)")
    scorer = build({reward: 1.0}, batch_size, {reward: options} if options else None)
    return RewardHTTPServer((host, port), lambda im, pr, me: scorer(im, pr, me)[reward], reward, max_bytes)


def serve(reward: str, options: dict | None = None, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          max_bytes: int = DEFAULT_MAX_BYTES, batch_size: int = 256) -> None:
    """``slas reward-server``: serve until interrupted."""
    server = make_server(reward, options, host, port, max_bytes, batch_size)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host}: the reward server has no authentication; anyone who can reach "
              f"{host}:{server.server_address[1]} can run the reward model", file=sys.stderr)
    print(f"serving reward {reward!r} on {server.url} (POST /score, GET /health); Ctrl-C stops", file=sys.stderr)
    try:
        server.serve_forever()
    finally:
        server.server_close()


# ----------------------------------------------------------------------------
# Client: the `remote` reward
# ----------------------------------------------------------------------------


def _error_text(err: urllib.error.HTTPError) -> str:
    try:
        return json.loads(err.read())["error"]
    except Exception:  # a non-JSON error page (a proxy's): fall back to the status line
        return err.reason


def _call(url: str, body: bytes | None, timeout: float, retries: int, backoff: float) -> dict:
    """GET (``body`` None) or POST JSON; retry connection failures, timeouts and 502/503/504 ``retries`` times with
    exponential backoff; raise RemoteRewardError when the last try fails or the server answers another error."""
    last: str = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        req = urllib.request.Request(url, data=body, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with _opener.open(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            if e.code not in _RETRY_STATUS:
                raise RemoteRewardError(f"reward server {url} answered {e.code}: {_error_text(e)}") from None
            last = f"HTTP {e.code}: {_error_text(e)}"
        except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out (URLError is an OSError)
            last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        else:
            try:
                return json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise RemoteRewardError(f"reward server {url} answered with non-JSON: {e}") from None
        _log.warning("reward server %s, try %d of %d: %s", url, attempt + 1, retries + 1, last)
    raise RemoteRewardError(f"reward server {url} failed {retries + 1} time(s); last error: {last}. "
                            "Is `slas reward-server` running there?")


@register("remote")
def remote(*, url: str, timeout: float = 300.0, retries: int = 3, backoff: float = 1.0,
           encoding: str = "png") -> RewardFn:
    """Scores from a ``slas reward-server`` at ``url`` (e.g. http://127.0.0.1:18100). ``timeout``: seconds per
    socket operation; ``retries``: extra tries after a connection failure, timeout or 502/503/504, waiting
    ``backoff * 2**k`` seconds; ``encoding``: "png" (smaller) or "raw" (no encoding cost, for loopback).
    The server's health is checked here, so a server that is down fails the build, not the first rollout.
    A failed call raises RemoteRewardError: a missing reward is never scored as zero."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"reward 'remote': url must start with http:// or https://, got {url!r}")
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"reward 'remote': timeout must be > 0 seconds, got {timeout!r}")
    if not (isinstance(retries, int) and retries >= 0):
        raise ValueError(f"reward 'remote': retries must be an int >= 0, got {retries!r}")
    if not (isinstance(backoff, (int, float)) and backoff >= 0):
        raise ValueError(f"reward 'remote': backoff must be >= 0 seconds, got {backoff!r}")
    if encoding not in ("png", "raw"):
        raise ValueError(f"reward 'remote': encoding must be 'png' or 'raw', got {encoding!r}")
    base = url.rstrip("/").removesuffix("/score")
    health = _call(f"{base}/health", None, timeout, retries, backoff)
    if health.get("status") != "ok":
        raise RemoteRewardError(f"reward server {base} is not healthy: {health}")
    served, max_bytes = health.get("reward"), health.get("max_bytes")

    def fn(images: np.ndarray, prompts: list[str], metas: list[dict]) -> np.ndarray:
        try:
            body = json.dumps({"images": encode_images(images, encoding), "prompts": list(prompts),
                               "metas": list(metas)}, allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise ValueError(f"reward 'remote': cannot send this batch as JSON: {e}") from None
        if isinstance(max_bytes, int) and len(body) > max_bytes:
            raise RemoteRewardError(f"a batch of {len(images)} images is {len(body)} bytes, over the limit of reward "
                                    f"server {base} ({max_bytes}): lower reward.batch_size or raise its --max-bytes")
        out = _call(f"{base}/score", body, timeout, retries, backoff)
        scores = out.get("scores") if isinstance(out, dict) else None
        if not isinstance(scores, list) or len(scores) != len(images):
            got = len(scores) if isinstance(scores, list) else "no"
            raise RemoteRewardError(f"reward server {base} ({served!r}) returned {got} scores for {len(images)} images")
        return np.array([math.nan if s is None else s for s in scores], dtype=np.float64)

    return fn
