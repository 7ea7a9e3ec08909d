"""The reward server and the `remote` reward over a real loopback socket: remote scores equal local ones,
bad and oversize payloads get clear JSON errors, and a down, failing or silent server makes the client raise
(never score zeros)."""

import base64
import http.client
import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from slas import rewards
from slas.rewards.remote import RemoteRewardError
from slas.rewards.server import make_server
from slas.rewards.wire import encode_images
from slas.toyworld import parse
from slas.toyworld.renderer import render

PROMPTS = ["a photo of a blue square and a red triangle", "a photo of three circles", "a photo of a white circle",
           "a photo of a triangle left of a square"]


def _batch(n: int = 6):
    metas = [parse(PROMPTS[i % len(PROMPTS)]) for i in range(n)]
    images = np.stack([render(m, seed=i) for i, m in enumerate(metas)])  # uint8 [N, 32, 32, 3]
    images[::3] = 255 - images[::3]  # some wrong images, so the scores differ
    return images, [m["prompt"] for m in metas], metas


def _start(server):
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server


@pytest.fixture
def toy_server():
    server = _start(make_server("toy_score", port=0, max_bytes=200_000))
    yield server
    server.shutdown()
    server.server_close()


def _post(server, body: bytes, path: str = "/score", headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read())
    conn.close()
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_remote_scores_equal_local_scores(toy_server, encoding):
    images, prompts, metas = _batch()
    local = rewards.build({"toy_score": 1.0})(images, prompts, metas)["toy_score"]
    remote = rewards.build({"remote": 1.0}, batch_size=4, options={"remote": {"url": toy_server.url,
                                                                              "encoding": encoding}})
    got = remote(images, prompts, metas)["remote"]
    np.testing.assert_array_equal(got, local)
    assert len(set(local.tolist())) > 1


def test_health_and_loopback_default(toy_server):
    assert toy_server.server_address[0] == "127.0.0.1"
    conn = http.client.HTTPConnection(*toy_server.server_address[:2], timeout=10)
    conn.request("GET", "/health")
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read()) == {"status": "ok", "reward": "toy_score",
                                                               "max_bytes": 200_000, "auth": False}
    conn.close()


def _png(img: np.ndarray, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def _bad_payloads():
    images, prompts, metas = _batch(2)
    ok = {"images": encode_images(images, "raw"), "prompts": prompts, "metas": metas}
    raw = ok["images"]
    return [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps({"images": raw}), 'needs "images" and "prompts"'),
        (json.dumps({**ok, "extra": 1}), "unknown field(s) ['extra']"),
        (json.dumps({**ok, "prompts": prompts[:1]}), '"prompts" must be a list of 2 strings'),
        (json.dumps({**ok, "metas": ["x", "y"]}), '"metas" must be a list of 2 objects'),
        (json.dumps({**ok, "images": {**raw, "shape": [2, 32, 32, 4]}}), "shape"),
        (json.dumps({**ok, "images": {**raw, "shape": [3, 32, 32, 3]}}), "do not fill shape"),
        (json.dumps({**ok, "images": {**raw, "data": "@@@"}}), "not valid base64"),
        (json.dumps({**ok, "images": {"encoding": "gif", "data": []}}), 'must be "png" or "raw"'),
        (json.dumps({**ok, "images": {"encoding": "png", "data": [_png(images[0], "JPEG")] * 2}}), "8-bit RGB PNG"),
        (json.dumps({**ok, "images": {"encoding": "png", "data": [base64.b64encode(b"nope").decode()] * 2}}),
         "is not an image"),
        (json.dumps({**ok, "images": {"encoding": "png", "data": [_png(images[0]), _png(images[1][:16])]}}),
         "one size"),
    ]


@pytest.mark.parametrize("body, needle", _bad_payloads())
def test_bad_payloads_get_400_and_a_clear_json_error(toy_server, body, needle):
    status, out = _post(toy_server, body if isinstance(body, bytes) else body.encode())
    assert status == 400 and needle in out["error"], out


def test_oversize_bodies_and_png_bombs_get_413(toy_server):
    status, out = _post(toy_server, b" " * 300_000)  # the limit is 200 kB; the body is never read
    assert status == 413 and "exceeds the server's limit of 200000" in out["error"]
    bomb = np.zeros((1, 1200, 1200, 3), dtype=np.uint8)  # a few kB of PNG, 4.3 MB decoded > 16 x 200 kB
    body = json.dumps({"images": encode_images(bomb, "png"), "prompts": ["x"]}).encode()
    assert len(body) < 200_000
    status, out = _post(toy_server, body)
    assert status == 413 and "decoded images exceed" in out["error"]
    images, prompts, metas = _batch(4)
    client = rewards.build({"remote": 1.0}, options={"remote": {"url": toy_server.url, "encoding": "raw",
                                                                "retries": 3, "backoff": 5.0}})
    big = np.repeat(images, 20, axis=0)  # ~330 kB as base64: refused before sending, not retried
    with pytest.raises(RemoteRewardError, match="over the limit of reward server .* lower reward.batch_size"):
        client(big, prompts * 20, metas * 20)


def test_protocol_errors(toy_server):
    status, out = _post(toy_server, b"{}", path="/nope")
    assert status == 404 and "POST /score" in out["error"]
    with socket.create_connection(toy_server.server_address[:2], timeout=10) as s:  # no Content-Length
        s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n")
        reply = b"".join(iter(lambda: s.recv(4096), b"")).decode()  # the server closes after answering
    assert reply.startswith("HTTP/1.0 411") and "Content-Length is required" in reply


def test_a_failing_reward_is_a_500_and_the_client_raises():
    if "test_raising_reward" not in rewards.available():
        @rewards.register("test_raising_reward")
        def _factory():
            def fn(images, prompts, metas):
                raise RuntimeError("reward model exploded")
            return fn
    server = _start(make_server("test_raising_reward", port=0))
    try:
        client = rewards.build({"remote": 1.0}, options={"remote": {"url": server.url + "/", "backoff": 5.0}})
        images, prompts, metas = _batch(2)
        with pytest.raises(RemoteRewardError, match="answered 500: reward 'test_raising_reward' failed: "
                                                    "RuntimeError: reward model exploded"):
            client(images, prompts, metas)
    finally:
        server.shutdown()
        server.server_close()


def test_a_down_server_raises_after_retries(toy_server):
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(RemoteRewardError, match=r"failed 3 time\(s\); last error: .*refused"):
        rewards.build({"remote": 1.0}, options={"remote": {"url": url, "retries": 2, "backoff": 0.01}})
    # a server that goes away after the build: the call raises, it never returns zeros
    client = rewards.build({"remote": 1.0}, options={"remote": {"url": toy_server.url, "retries": 1,
                                                                "backoff": 0.01}})
    toy_server.shutdown()
    toy_server.server_close()
    images, prompts, metas = _batch(2)
    with pytest.raises(RemoteRewardError, match=r"failed 2 time\(s\)"):
        client(images, prompts, metas)


def test_a_silent_server_times_out():
    with socket.socket() as s:  # accepts connections (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(RemoteRewardError, match=r"failed 2 time\(s\); last error: .*timed out"):
            rewards.build({"remote": 1.0}, options={"remote": {"url": url, "timeout": 0.2, "retries": 1,
                                                               "backoff": 0.0}})


def test_the_client_retries_a_503_then_succeeds():
    calls = []

    class Flaky(BaseHTTPRequestHandler):
        def _send(self, status, obj):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send(200, {"status": "ok", "reward": "flaky"})

        def do_POST(self):
            n = len(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["prompts"])
            calls.append(n)
            self._send(503, {"error": "warming up"}) if len(calls) == 1 else self._send(200, {"scores": [0.5, None][:n]})

        def log_message(self, *args):
            pass

    server = _start(ThreadingHTTPServer(("127.0.0.1", 0), Flaky))
    try:
        client = rewards.build({"remote": 1.0}, options={
            "remote": {"url": f"http://127.0.0.1:{server.server_address[1]}", "retries": 2, "backoff": 0.0}})
        images, prompts, metas = _batch(2)
        got = client(images, prompts, metas)["remote"]
        assert calls == [2, 2] and got[0] == 0.5 and np.isnan(got[1])  # null = non-finite, kept as NaN
    finally:
        server.shutdown()
        server.server_close()
