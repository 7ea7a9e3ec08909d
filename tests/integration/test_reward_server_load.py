"""The reward server under load, over a real loopback socket with a fake reward that records each batch it scores:
a full queue is a 503 with Retry-After, a request over the time limit is a 504, the server keeps serving through
both, a repeat of a request id is answered without scoring again, and the `remote` client retries (exponential
backoff with jitter) so that each of its batches is scored exactly once, or fails with one line naming the server."""

import http.client
import json
import threading
import time

import numpy as np
import pytest

from _toyruns import tiny_overrides
from slas import rewards
from slas.apps.cli import main
from slas.rewards.remote import RemoteRewardError
from slas.rewards.server import make_server
from slas.rewards.wire import REQUEST_ID_HEADER, encode_images


class Probe:
    """What the fake reward saw: the tag (first prompt) of every batch it scored. It blocks while ``gate`` is
    clear, then sleeps ``delay`` seconds."""

    def __init__(self):
        self.calls: list[str] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.delay = 0.0


PROBE = Probe()
if "test_probe_reward" not in rewards.available():
    @rewards.register("test_probe_reward")
    def _probe_factory():
        def fn(images, prompts, metas):
            PROBE.calls.append(prompts[0])
            PROBE.entered.set()
            PROBE.gate.wait(10)
            time.sleep(PROBE.delay)
            return images.reshape(len(images), -1).mean(1) / 255.0  # [N]

        return fn


@pytest.fixture
def probe():
    global PROBE
    PROBE = Probe()
    yield PROBE
    PROBE.gate.set()  # a test that failed half-way must not leave the worker blocked


@pytest.fixture
def start():
    servers = []

    def _start(**limits):
        server = make_server("test_probe_reward", port=0, **limits)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.shutdown()
        server.server_close()


def _images(tag: str, n: int = 2) -> np.ndarray:
    rng = np.random.default_rng(int.from_bytes(tag.encode(), "little"))
    return rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)  # uint8 [n, 4, 4, 3]


def _expected(tag: str, n: int = 2) -> list[float]:
    return (_images(tag, n).reshape(n, -1).mean(1) / 255.0).tolist()


def _post(server, tag: str, rid: str | None = None, headers: dict | None = None):
    body = json.dumps({"images": encode_images(_images(tag), "raw"), "prompts": [tag, tag]}).encode()
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request("POST", "/score", body=body, headers={**({REQUEST_ID_HEADER: rid} if rid else {}), **(headers or {})})
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), json.loads(resp.read())
    conn.close()
    return out


def _in_thread(fn, *args) -> dict:
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("answer", fn(*args)), daemon=True)
    thread.start()
    out["thread"] = thread
    return out


def _healthy(server) -> bool:
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=5)
    conn.request("GET", "/health")
    ok = conn.getresponse().status == 200
    conn.close()
    return ok


def _client(server, **options):
    return rewards.build({"remote": 1.0}, options={"remote": {"url": server.url, "encoding": "raw", **options}})


def test_a_full_queue_is_503_with_retry_after_and_the_server_keeps_serving(probe, start):
    server = start(queue_size=1)
    probe.gate.clear()
    first = _in_thread(_post, server, "a", "id-a")
    assert probe.entered.wait(5)
    status, headers, out = _post(server, "b", "id-b")
    assert status == 503 and int(headers["Retry-After"]) >= 1
    assert out["error"].startswith("the server is busy: it holds 1 requests (--queue-size); retry in ")
    assert _healthy(server)
    probe.gate.set()
    first["thread"].join(5)
    assert first["answer"][0] == 200 and first["answer"][2]["scores"] == _expected("a")
    status, _, out = _post(server, "b", "id-b")
    assert status == 200 and out["scores"] == _expected("b")
    assert probe.calls == ["a", "b"] and server.jobs.counts["refused"] == 1


def test_a_request_over_the_time_limit_is_504_and_a_repeat_gets_the_single_scoring(probe, start):
    server = start(time_limit=0.2)
    probe.gate.clear()
    t0 = time.monotonic()
    status, headers, out = _post(server, "x", "id-x")
    assert status == 504 and 0.2 <= time.monotonic() - t0 < 5 and int(headers["Retry-After"]) >= 1
    assert out["error"] == ("not scored within the server's time limit of 0.2 s (--time-limit); it is still queued or "
                            f"scoring: a repeat with {REQUEST_ID_HEADER} id-x gets its result")
    assert _healthy(server)  # the reward is still busy with "x"
    probe.gate.set()
    for _ in range(2):  # the first repeat joins or finds the answer, the second finds it
        status, _, out = _post(server, "x", "id-x")
        assert status == 200 and out["scores"] == _expected("x")
    assert _post(server, "y", "id-y")[0] == 200
    assert probe.calls == ["x", "y"]


def test_a_repeat_joins_the_running_scoring_and_answers_expire(probe, start):
    server = start(cache_seconds=60)
    probe.gate.clear()
    first = _in_thread(_post, server, "j", "id-j")
    assert probe.entered.wait(5)
    second = _in_thread(_post, server, "j", "id-j")
    deadline = time.monotonic() + 5
    while server.jobs.counts["joined"] < 1 and time.monotonic() < deadline:  # the repeat waits for the scoring
        time.sleep(0.01)
    probe.gate.set()
    first["thread"].join(5)
    second["thread"].join(5)
    assert first["answer"][2] == second["answer"][2] == {"reward": "test_probe_reward", "scores": _expected("j")}
    assert probe.calls == ["j"] and server.jobs.counts["joined"] == 1
    assert _post(server, "j", "id-j")[0] == 200 and probe.calls == ["j"]  # kept for a while ...
    assert server.jobs.counts["repeated"] == 1
    server.jobs.clock = lambda: time.monotonic() + 61
    assert _post(server, "j", "id-j")[0] == 200 and probe.calls == ["j", "j"]  # ... not for ever
    assert _post(server, "j")[0] == 200 and probe.calls == ["j", "j", "j"]  # no id: every request is scored


def test_a_bad_request_id_is_400(start):
    server = start()
    status, _, out = _post(server, "z", "not an id!")
    assert status == 400 and out["error"] == f"{REQUEST_ID_HEADER} must be 1 to 128 letters, digits or ._:-, got " \
                                             "'not an id!'"


def test_client_timeouts_are_retried_and_each_batch_is_scored_once(probe, start, caplog):
    server = start()
    probe.delay = 0.6
    client = _client(server, timeout=0.2, retries=8, backoff=0.05, backoff_max=0.1)
    tags = ["t0", "t1", "t2"]
    for tag in tags:
        images = _images(tag)
        np.testing.assert_array_equal(client(images, [tag, tag], [{}, {}])["remote"], _expected(tag))
    assert probe.calls == tags  # each batch exactly once, though every one was sent several times
    retried = [r.getMessage() for r in caplog.records if "timed out" in r.getMessage()]
    assert len(retried) >= len(tags), retried
    assert server.jobs.counts["joined"] + server.jobs.counts["repeated"] >= len(tags)


def test_the_client_retries_the_time_limit_and_gets_the_single_scoring(probe, start):
    server = start(time_limit=0.2)
    probe.delay = 0.5
    client = _client(server, timeout=5, retries=5, backoff=0.05, backoff_max=0.2)  # Retry-After capped at 0.2 s
    np.testing.assert_array_equal(client(_images("l"), ["l", "l"], [{}, {}])["remote"], _expected("l"))
    assert probe.calls == ["l"] and server.jobs.counts["timed_out"] >= 1


def test_retries_exhausted_is_one_line_naming_the_server_and_what_happened(probe, start):
    server = start(queue_size=1)
    client = _client(server, retries=2, backoff=0.01, backoff_max=0.05)
    probe.gate.clear()
    held = _in_thread(_post, server, "held", "id-held")
    assert probe.entered.wait(5)
    with pytest.raises(RemoteRewardError) as e:
        client(_images("r"), ["r", "r"], [{}, {}])
    assert str(e.value) == (f"reward server {server.url}/score failed 3 time(s); last error: HTTP 503: the server is "
                            "busy: it holds 1 requests (--queue-size); retry in 1 s. The server stayed busy: raise its "
                            "--queue-size, or the remote reward's retries or backoff_max.")
    probe.gate.set()
    held["thread"].join(5)
    assert probe.calls == ["held"] and server.jobs.counts["refused"] == 3


def test_retries_exhausted_fails_slas_train_with_one_error_line(probe, start, tiny_ckpt, tmp_path, capsys):
    server = start(queue_size=1)
    probe.gate.clear()
    held = _in_thread(_post, server, "held", "id-held")  # the queue stays full for the whole run
    assert probe.entered.wait(5)
    rc = main(["train", *tiny_overrides(tiny_ckpt, tmp_path / "run", **{
        "train.iterations": 1, "eval.max_prompts": 2, "reward.weights": "{remote: 1.0}",
        "reward.options": f"{{remote: {{url: '{server.url}', retries: 1, backoff: 0.0, backoff_max: 0.0}}}}"})])
    err = capsys.readouterr().err
    probe.gate.set()
    held["thread"].join(5)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and "Traceback" not in err
    assert lines[-1].startswith(f"error: reward server {server.url}/score failed 2 time(s); last error: HTTP 503: ")


def test_the_client_sends_one_request_id_per_batch_and_repeats_it_on_retry():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    ids = []

    class Flaky(BaseHTTPRequestHandler):
        def _send(self, status, obj, headers=()):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers:
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send(200, {"status": "ok", "reward": "flaky"})

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            ids.append(self.headers[REQUEST_ID_HEADER])
            if len(ids) == 1:
                self._send(503, {"error": "busy"}, [("Retry-After", "0")])
            else:
                self._send(200, {"scores": [0.25, 0.75]})

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        client = rewards.build({"remote": 1.0}, options={"remote": {
            "url": f"http://127.0.0.1:{server.server_address[1]}", "retries": 2, "backoff": 0.0}})
        for _ in range(2):
            assert client(_images("i"), ["i", "i"], [{}, {}])["remote"].tolist() == [0.25, 0.75]
    finally:
        server.shutdown()
        server.server_close()
    assert len(ids) == 3 and ids[0] == ids[1] != ids[2] and all(len(i) == 32 for i in ids)  # uuid4 hex
