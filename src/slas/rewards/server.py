"""Serve any registered reward over HTTP (``slas reward-server``); the ``remote`` reward (slas.rewards.remote)
calls it.

Standard library only (``http.server``), so a reward model can live in another process, virtualenv or machine
(one whose torch imports torchvision for open_clip or ImageReward, or a GPU box) while training calls it. The
protocol is in slas.rewards.wire.

- Authentication: with a token, every request but ``GET /health`` needs ``Authorization: Bearer <token>``
  (compared in constant time); a missing or wrong one is a 401. A non-loopback address is served only with a
  token, or when told ``insecure_no_auth``. The server speaks plain HTTP: put TLS in front of it (a reverse proxy,
  docs/rewards.md) whenever the token crosses a network.
- Load (slas.rewards.jobs): at most ``queue_size`` scoring requests are held at once, the next is a 503 with
  ``Retry-After``; a request not answered within ``time_limit`` seconds is a 504, and its scoring goes on; a
  repeat of a request id (a client's retry) gets the first answer instead of a second scoring.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import ipaddress
import json
import logging
import math
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from slas.rewards import RewardFn, RewardInputError, build, prepare_metas
from slas.rewards.jobs import Answer, Job, ScoreQueue
from slas.rewards.wire import (
    DECODED_FACTOR,
    DEFAULT_MAX_BYTES,
    DEFAULT_PORT,
    REQUEST_ID_HEADER,
    PayloadError,
    one_line,
    parse_request,
    short,
    valid_request_id,
)

DEFAULT_QUEUE_SIZE = 32  # requests held at once; a trainer sends one batch at a time per process
# Below the `remote` client's default socket timeout (300 s), so that a client hears the server's reason (504)
# rather than its own timeout.
DEFAULT_TIME_LIMIT = 240.0
DEFAULT_CACHE_SECONDS = 600.0  # how long an answer is kept for repeats: longer than a client's retries take

_log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    server: RewardHTTPServer
    timeout = 120  # seconds a client may stall mid-request before its thread gives up

    def _reply(self, status: int, obj: dict, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj, allow_nan=False).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client left before its answer: nothing to tell it
            self.close_connection = True

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._reply(status, {"error": one_line(message)}, headers)

    def _refuse(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        """An error answer before the body is read: the connection closes after it."""
        self.close_connection = True
        self._error(status, message, headers)
        self._drain()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (a malformed request line or header, an unknown method) as the same
        one-line JSON errors as the server's, instead of an HTML page."""
        self.close_connection = True
        self.request_version = "HTTP/1.0"  # an unparsed request line leaves HTTP/0.9, which gets no status line
        self.log_error("code %d, message %s", code, message)
        short_text, long_text = self.responses.get(code, ("Error", ""))
        text = message or short_text
        self._error(code, f"{text}: {explain or long_text}" if (explain or long_text) else text)

    def _authorized(self) -> bool:
        """True when the server has no token or the request carries it; else answers 401 and returns False."""
        token = self.server.token
        if token is None:
            return True
        scheme, _, given = self.headers.get("Authorization", "").strip().partition(" ")
        # compare_digest takes as long for every wrong token of a length: the time does not tell how much matched
        ok = hmac.compare_digest(given.strip().encode("utf-8", "replace"), token.encode())
        if ok and scheme.lower() == "bearer":
            return True
        self.server.jobs.note("unauthorized")
        _log.warning("refused %s %s from %s (401): %s", self.command, short(self.path), self.address_string(),
                     "a wrong bearer token" if given else "no bearer token")  # never the token itself
        self._refuse(401, "missing or wrong bearer token: send `Authorization: Bearer <token>` with the token of the "
                          "server's --token-file", {"WWW-Authenticate": 'Bearer realm="slas reward-server"'})
        return False

    def do_GET(self) -> None:
        if self.path == "/health":  # open: a client learns here whether it needs a token
            self._reply(200, {"status": "ok", "reward": self.server.reward, "max_bytes": self.server.max_bytes,
                              "auth": self.server.token is not None})
        elif self._authorized():
            self._error(404, f"unknown path {short(self.path)}; use POST /score or GET /health")

    def do_POST(self) -> None:
        if not self._authorized():
            return
        if self.path != "/score":
            self._refuse(404, f"unknown path {short(self.path)}; use POST /score or GET /health")  # body not read
            return
        try:
            self._score(time.monotonic())
        except PayloadError as e:
            if e.status in (411, 413):
                self.close_connection = True  # the body may be unread
            _log.info("refused a request (%d): %s", e.status, one_line(str(e)))
            self._error(e.status, str(e))
            self._drain()
        except Exception as e:  # a bug in the server itself: still a one-line answer, and the server keeps serving
            _log.exception("internal error on POST /score")
            self._error(500, f"internal error: {type(e).__name__}: {e}")

    def _score(self, t0: float) -> None:
        """Answer POST /score: a repeat of a request id from the cache or by joining its job; a new request if the
        queue has room (else 503), scored by the worker; 504 at the time limit."""
        rid = self.headers.get(REQUEST_ID_HEADER)
        if rid is not None and not valid_request_id(rid):
            self.close_connection = True  # the body is not read
            raise PayloadError(f"{REQUEST_ID_HEADER} must be 1 to 128 letters, digits or ._:-, got {short(rid)}")
        jobs = self.server.jobs
        hit = jobs.find(rid) if rid is not None else None
        if hit is not None:
            self._skip_body()  # a repeat carries the same batch: it is not read, decoded nor scored again
        elif not jobs.admit():
            seconds = jobs.retry_after()
            _log.info("refused a request (503): %d requests held (--queue-size)", jobs.queue_size)
            self._refuse(503, f"the server is busy: it holds {jobs.queue_size} requests (--queue-size); retry in "
                              f"{seconds} s", {"Retry-After": str(seconds)})
            return
        else:
            hit = self._read_batch(rid)
            if hit is None:
                return
        answer = hit.wait(t0 + self.server.time_limit - time.monotonic()) if isinstance(hit, Job) else hit
        if answer is None:
            jobs.note("timed_out")
            limit = self.server.time_limit
            _log.warning("request %s not answered within the time limit of %g s", rid or "(no id)", limit)
            then = (f"; it is still queued or scoring: a repeat with {REQUEST_ID_HEADER} {rid} gets its result"
                    if rid else "")
            self._error(504, f"not scored within the server's time limit of {limit:g} s (--time-limit){then}",
                        {"Retry-After": str(jobs.retry_after())})
        else:
            self._reply(*answer)
        self._drain()

    def _read_batch(self, rid: str | None) -> Job | Answer | None:
        """Read and check the body of an admitted request and queue it; None when it was answered here (an empty
        batch: nothing to score). The admission is released on every path that queues nothing."""
        jobs = self.server.jobs
        try:
            images, prompts, metas = parse_request(self._read_json(), self.server.max_bytes * DECODED_FACTOR)
            try:
                metas = prepare_metas([self.server.reward], prompts, metas)  # the metadata the reward reads
            except RewardInputError as e:  # the request's fault: what the reward needs, not a reward failure
                raise PayloadError(str(e)) from None
        except BaseException:
            jobs.release()
            raise
        if not len(images):  # the `remote` client's token check; no reward is called for nothing
            jobs.release()
            self._reply(200, {"reward": self.server.reward, "scores": []})
            return None
        return jobs.submit(rid, (images, prompts, metas))

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
            raise PayloadError(f"bad Content-Length {short(raw)}")
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

    def _skip_body(self) -> None:
        """Read and drop the body of a request answered without it; one whose end is unclear closes the
        connection instead (``_drain`` after the answer)."""
        raw = self.headers.get("Content-Length", "")
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower() or not raw.strip().isdigit() \
                or int(raw) > self.server.max_bytes:
            self.close_connection = True
            return
        self._discard(int(raw))

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
    """A threaded HTTP server for one scoring function, called by one worker thread (slas.rewards.jobs)."""

    daemon_threads = True
    # The listen backlog. socketserver's default of 5 drops the connections of a burst of clients beyond it, and
    # each dropped one is retried by the kernel only after a second.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], score_fn: RewardFn, reward: str,
                 max_bytes: int = DEFAULT_MAX_BYTES, *, token: str | None = None,
                 queue_size: int = DEFAULT_QUEUE_SIZE, time_limit: float = DEFAULT_TIME_LIMIT,
                 cache_seconds: float = DEFAULT_CACHE_SECONDS):
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        if not (isinstance(time_limit, (int, float)) and 0 < time_limit < math.inf):
            raise ValueError(f"time_limit must be > 0 seconds (finite), got {time_limit!r}")
        if token is not None and not token:
            raise ValueError("token must not be empty")
        self.score_fn, self.reward, self.max_bytes = score_fn, reward, max_bytes
        self.token, self.time_limit = token, float(time_limit)
        self.jobs = ScoreQueue(self._run, queue_size, cache_seconds)  # before binding: a failed bind closes it
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def _run(self, work: tuple[np.ndarray, list[str], list[dict]]) -> Answer:
        """Score one batch (in the worker thread): the answer, never an exception."""
        images, prompts, metas = work
        reward = self.reward
        try:
            scores = np.asarray(self.score_fn(images, prompts, metas), dtype=np.float64)
            if scores.shape != (len(images),):
                raise ValueError(f"returned shape {list(scores.shape)} for {len(images)} images")
        except RewardInputError as e:  # images the reward does not take: the request's fault
            _log.info("refused a request (400): %s", one_line(str(e)))
            return 400, {"error": one_line(str(e))}
        except Exception as e:  # any reward failure must reach the client as an error, never as a score
            message = one_line(f"reward {reward!r} failed: {type(e).__name__}: {e}")
            _log.error("%s", message)  # one line per failure; the traceback only at DEBUG
            _log.debug("traceback of the failure of reward %r", reward, exc_info=True)
            return 500, {"error": message}
        return 200, {"reward": reward, "scores": [float(s) if math.isfinite(s) else None for s in scores.tolist()]}

    def server_close(self) -> None:
        super().server_close()
        self.jobs.close()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def make_server(reward: str, options: dict | None = None, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                max_bytes: int = DEFAULT_MAX_BYTES, batch_size: int = 256, **limits) -> RewardHTTPServer:
    """Build registered reward ``reward`` with ``options`` (its model is loaded now, after a check that the address
    can be bound and before binding it) and bind a server for it; ``port=0`` picks a free port (see ``.url``).
    ``limits``: ``token``, ``queue_size``, ``time_limit``, ``cache_seconds`` (RewardHTTPServer). Call
    ``serve_forever()`` to serve."""
    if reward == "remote":
        raise ValueError("the reward server cannot serve 'remote' (it would call itself or another server)")
    with _naming_the_address(host, port):
        _try_bind(host, port)  # a busy port fails now, not after the reward model has loaded
    scorer = build({reward: 1.0}, batch_size, {reward: options} if options else None)
    with _naming_the_address(host, port):
        return RewardHTTPServer((host, port), lambda im, pr, me: scorer(im, pr, me)[reward], reward, max_bytes,
                                **limits)


def _try_bind(host: str, port: int) -> None:
    """Bind ``host:port`` and let go at once (what RewardHTTPServer will bind; port 0 always binds)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as socketserver does: only a listener blocks it
        probe.bind((host, port))


@contextlib.contextmanager
def _naming_the_address(host: str, port: int):
    """An OSError of binding, as one that says which address and what to do (the bare one reads "[Errno 98] Address
    already in use")."""
    try:
        yield
    except OSError as e:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        hint = ("another process listens there (a reward server already running?): stop it, or choose another --port "
                "(0 picks a free one)" if e.errno == errno.EADDRINUSE else "check --host and --port")
        raise OSError(f"cannot listen on {where}: {e.strerror or e}; {hint}") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def serve(reward: str, options: dict | None = None, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          max_bytes: int = DEFAULT_MAX_BYTES, batch_size: int = 256, *, token: str | None = None,
          insecure_no_auth: bool = False, **limits) -> None:
    """``slas reward-server``: serve until interrupted. A non-loopback ``host`` needs ``token`` (ValueError before
    anything loads), unless ``insecure_no_auth``. ``limits``: ``queue_size``, ``time_limit``, ``cache_seconds``."""
    if not is_loopback(host) and token is None and not insecure_no_auth:
        raise ValueError(f"refusing to serve on {host} without authentication: anyone who can reach it could run "
                         "the reward model; give --token-file FILE (and TLS in front, docs/rewards.md), or "
                         "--insecure-no-auth on a network you trust")
    server = make_server(reward, options, host, port, max_bytes, batch_size, token=token, **limits)
    if not is_loopback(host):
        where = f"{host}:{server.server_address[1]}"
        if token is None:
            print(f"warning: serving on {host} without authentication (--insecure-no-auth): anyone who can reach "
                  f"{where} can run the reward model", file=sys.stderr)
        else:
            print(f"warning: serving plain HTTP on {host}: the bearer token travels in clear unless clients reach "
                  f"{where} through a TLS proxy (docs/rewards.md)", file=sys.stderr)
    auth = "bearer token required but for /health" if token is not None else "no authentication"
    print(f"serving reward {reward!r} on {server.url} (POST /score, GET /health; {auth}; queue "
          f"{server.jobs.queue_size}, time limit {server.time_limit:g} s); Ctrl-C stops", file=sys.stderr)
    try:
        server.serve_forever()
    finally:
        server.server_close()
