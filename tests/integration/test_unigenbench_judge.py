"""UniGenBench++ scoring against a local OpenAI-compatible stub judge over loopback (correct, malformed, slow and
unauthorised answers, cache reuse), and the `unigenbench` suite of `slas eval` on a stand-in backbone."""

from __future__ import annotations

import base64
import csv
import io
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slas.apps.eval import EvalOptions, Model, format_summary, run_suite
from slas.evals import unigenbench as ugb


def lines(path: Path) -> list[dict]:
    return [json.loads(s) for s in path.read_text().splitlines()]


TEMPLATE = ("Prompt: 「{prompt}」. Checkpoints {testpoint}. {explanation} {test_explanation}\n"
            "<description><analysis>[...]</analysis><score>[...]</score></description>")


DEFINITIONS = {"Attribute - Color": "colours", "Attribute - Shape": "shapes", "Style": "styles",
               "World Knowledge": "facts", "Action - Animal": "animals acting"}


ITEMS = [  # (prompt, testpoints, descriptions)
    ("a red cube, watercolour", ["Attribute - Color", "Style"], ["red", "watercolour"]),
    ("a round red Eiffel tower", ["Attribute - Shape", "Attribute - Color", "World Knowledge"],
     ["round", "red", "Eiffel tower"]),
    ("a cat jumping, pixel art", ["Action - Animal", "Style"], ["jumping", "pixel art"]),
]


def answer(scores: list) -> str:
    return (f"<description><prompt>p</prompt><checkpoint>c</checkpoint>"
            f"<analysis>{['looked'] * len(scores)!r}</analysis><score>{scores!r}</score></description>")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "unigenbench"
    d.mkdir()
    (d / ugb.DEFINITIONS_FILE).write_text(json.dumps(
        {"testpoint_explanations_en": DEFINITIONS, "judge_system_prompt_template_en": TEMPLATE}))
    with (d / ugb.DATA_FILES["short"]).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "prompt_en", "sub_dims_en"])
        for i, (p, tps, descs) in enumerate(ITEMS):
            w.writerow([i, p, json.dumps({"Testpoints": tps, "Testpoint Description": descs})])
        w.writerow([3, "broken beyond repair", '{"Testpoints": ["Style"'])
    return d


# ----------------------------------------------------------------------------
# The stub judge: behaviour chosen by the red value of the image's first pixel
# ----------------------------------------------------------------------------

SLOW_S = 1.0  # how long a "slow" answer takes; the client's timeout is below it


class StubJudge:
    """``POST /v1/chat/completions`` on 127.0.0.1, in a thread. ``script[code]`` lists what the n-th request for
    an image of that code gets (the last entry repeats): an answer text, or ``("slow", text)``."""

    def __init__(self, script: dict[int, list], api_key: str = "sk-test"):
        self.script, self.api_key = script, api_key
        self.hits: Counter[int] = Counter()
        self.payloads: list[dict] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions" or self.headers.get("Authorization") != f"Bearer {stub.api_key}":
                    return self.reply(401, {"error": {"message": "invalid api key"}})
                url = next(p["image_url"]["url"] for p in body["messages"][0]["content"] if p["type"] == "image_url")
                assert url.startswith("data:image/png;base64,")
                code = int(np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))[0, 0, 0])
                with stub.lock:
                    n = stub.hits[code]
                    stub.hits[code] += 1
                    stub.payloads.append(body)
                action = stub.script[code][min(n, len(stub.script[code]) - 1)]
                if isinstance(action, tuple):
                    time.sleep(SLOW_S)
                    action = action[1]
                self.reply(200, {"choices": [{"message": {"role": "assistant", "content": action}}]})

            def reply(self, status: int, obj: dict) -> None:
                data = json.dumps(obj).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def n_requests(self) -> int:
        return sum(self.hits.values())


@pytest.fixture
def stub() -> Iterator[StubJudge]:
    s = StubJudge({
        10: [answer([1, 1])],
        11: [answer([1, 0])],
        12: ["The image shows a cube. Score: 1, 1"],  # malformed: no tags
        20: [answer([0, 1, 1])],
        21: [answer([1, 1])],  # malformed: 2 scores for 3 testpoints
        30: [("slow", answer([1, 1]))],  # always slower than the timeout -> failed
        31: [("slow", answer([1, 1])), answer([1, 0])],  # slow once, then answers
    })
    s.thread.start()
    yield s
    s.server.shutdown()
    s.server.server_close()


def solid(code: int) -> np.ndarray:
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0] = code
    img[2:5, 3:6, 1] = 200  # some structure, so the PNG is not trivial
    return img


CODES = [[10, 11, 12], [20, 21], [30, 31]]  # CODES[i][j]: image j of item i


def judge(stub: StubJudge, **kw) -> ugb.JudgeConfig:
    kw = {"timeout_s": 0.3, "max_retries": 2, "backoff_s": 0.01, "concurrency": 4} | kw
    return ugb.JudgeConfig(stub.base_url, "stub-judge", "sk-test", **kw)


def test_scores_malformed_timeouts_and_cache(stub, data_dir, tmp_path):
    with pytest.warns(ugb.UniGenBenchDataWarning, match="row index 3.*row skipped"):
        items = ugb.load_items("short", data_dir)
    assert [it.index for it in items] == [0, 1, 2]
    images = [[solid(c) for c in codes] for codes in CODES]
    cache = tmp_path / "cache.jsonl"

    t0, stamps = time.monotonic(), []
    res = ugb.score_unigenbench(items, images, judge(stub), cache, data_dir=data_dir,
                                progress=lambda n: stamps.append(time.monotonic() - t0))
    s = res.summary
    # answers are handled as they arrive, not when the slowest request gives up (~3 x 0.3 s)
    assert len(stamps) == 7 and stamps[0] < 0.5 < stamps[-1]
    # scored: (0,0) [1,1]  (0,1) [1,0]  (1,0) [0,1,1]  (2,1) [1,0] on its retry
    assert s["sub"]["Attribute - Color"] == {"score": 1.0, "correct": 3, "total": 3}
    assert s["sub"]["Style"] == {"score": pytest.approx(1 / 3), "correct": 1, "total": 3}
    assert s["sub"]["Attribute - Shape"]["score"] == 0.0 and s["sub"]["World Knowledge"]["score"] == 1.0
    assert s["sub"]["Action - Animal"] == {"score": 1.0, "correct": 1, "total": 1}
    assert {k: v["score"] for k, v in s["primary"].items()} == pytest.approx(
        {"Attribute": 3 / 4, "Style": 1 / 3, "World Knowledge": 1.0, "Action": 1.0})
    assert s["overall"] == pytest.approx((3 / 4 + 1 / 3 + 1 + 1) / 4)
    assert s["overall_testpoints"] == pytest.approx(6 / 9)
    assert (s["n_images"], s["n_scored"], s["n_malformed"], s["n_failed"]) == (7, 4, 2, 1)
    problems = {(p["index"], p["image"]): p for p in s["problems"]}
    assert problems[(0, 2)]["status"] == "malformed" and "<analysis>" in problems[(0, 2)]["detail"]
    assert problems[(1, 1)]["status"] == "malformed" and "3 testpoints" in problems[(1, 1)]["detail"]
    assert problems[(2, 0)]["status"] == "failed" and "gave up after 3 attempts" in problems[(2, 0)]["detail"]
    # the timed-out image was tried 1 + max_retries times, the transiently slow one twice, the rest once
    assert stub.hits == {10: 1, 11: 1, 12: 1, 20: 1, 21: 1, 30: 3, 31: 2}
    assert res.n_requests == stub.n_requests == 10
    assert len(cache.read_text().splitlines()) == 6  # every answer, malformed ones included; not the failure
    # what the judge received: the model, the image as a PNG data URI, the filled template
    text = next(p["text"] for p in stub.payloads[0]["messages"][0]["content"] if p["type"] == "text")
    assert stub.payloads[0]["model"] == "stub-judge" and "Checkpoints Defination:「" in text

    # rerun: answers (malformed ones included) come from the cache, only the failed image is asked again
    stub.script[30] = [answer([0, 0])]
    res2 = ugb.score_unigenbench(items, images, judge(stub), cache, data_dir=data_dir)
    assert res2.n_requests == 1 and stub.hits[30] == 4
    assert sum(v.cached for v in res2.verdicts) == 6 and res2.summary["n_failed"] == 0
    assert res2.summary["sub"]["Style"]["total"] == 4

    # third run: everything is cached, no request at all, the same scores
    res3 = ugb.score_unigenbench(items, images, judge(stub), cache, data_dir=data_dir)
    assert res3.n_requests == 0 and stub.n_requests == 11
    assert res3.summary == res2.summary


def test_retry_malformed_asks_again(stub, data_dir, tmp_path):
    items = ugb.load_items("short", data_dir)[:2]
    images = [[solid(c) for c in codes] for codes in CODES[:2]]
    cache = tmp_path / "cache.jsonl"
    ugb.score_unigenbench(items, images, judge(stub), cache, data_dir=data_dir)
    stub.script[21] = [answer([1, 1, 0])]
    res = ugb.score_unigenbench(items, images, judge(stub), cache, data_dir=data_dir, retry_malformed=True)
    assert res.n_requests == 2  # the two malformed answers, 12 and 21
    assert res.summary["n_malformed"] == 1  # 12 is still malformed; 21 now scores
    assert ugb.score_unigenbench(items, images, judge(stub), cache, data_dir=data_dir).summary == res.summary


def test_interrupted_run_resumes_from_the_cache(stub, data_dir, tmp_path):
    items = ugb.load_items("short", data_dir)[:2]
    images = [[solid(c) for c in codes] for codes in CODES[:2]]  # 5 images, all answered at once
    cache = tmp_path / "cache.jsonl"
    seen = []

    def interrupt_after_two(n: int) -> None:
        seen.append(n)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ugb.score_unigenbench(items, images, judge(stub, concurrency=1), cache, data_dir=data_dir, progress=interrupt_after_two)
    assert len(cache.read_text().splitlines()) == 2  # each answer is written as it arrives
    with cache.open("a") as f:
        f.write('{"key": "torn')  # and a torn last line, as a kill mid-write leaves, is skipped with a warning
    with pytest.warns(ugb.UniGenBenchDataWarning, match="unreadable cache line"):
        res = ugb.score_unigenbench(items, images, judge(stub), cache, data_dir=data_dir)
    assert sum(v.cached for v in res.verdicts) == 2 and res.n_requests == 3
    assert res.summary["n_scored"] + res.summary["n_malformed"] == 5


def test_wrong_api_key_stops_the_run(stub, data_dir, tmp_path):
    items = ugb.load_items("short", data_dir)[:1]
    bad = ugb.JudgeConfig(stub.base_url, "stub-judge", "sk-wrong", timeout_s=1.0, backoff_s=0.01)
    with pytest.raises(ugb.JudgeError, match="HTTP 401"):
        ugb.score_unigenbench(items, [[solid(10)]], bad, tmp_path / "c.jsonl", data_dir=data_dir)


class FlatBackbone:
    """A Backbone whose velocity is 0: every sample is its initial noise, decoded to uint8 (16 x 16)."""

    prediction = "velocity"
    sample_shape = (3, 16, 16)
    module = torch.nn.Identity()
    device = torch.device("cpu")

    def encode_prompts(self, prompts):
        return {"e": torch.zeros(len(prompts), 1)}

    def predict(self, x, sigma, cond):
        return torch.zeros_like(x)

    def decode(self, x0):
        return ((x0.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def trainable_parameters(self):
        return []


def test_unigenbench_suite_samples_judges_and_writes(monkeypatch, tmp_path):
    from slas.evals import unigenbench as ugb

    data = tmp_path / "ugb"
    data.mkdir()
    (data / ugb.DEFINITIONS_FILE).write_text(json.dumps({
        "testpoint_explanations_en": {"Style": "s", "World Knowledge": "w"},
        "judge_system_prompt_template_en": "{prompt} {testpoint} {explanation} {test_explanation}"}))
    rows = [[i, f"prompt {i}", json.dumps({"Testpoints": ["Style", "World Knowledge"],
                                           "Testpoint Description": ["a", "b"]})] for i in range(3)]
    import csv

    with (data / ugb.DATA_FILES["short"]).open("w", newline="") as f:
        csv.writer(f).writerows([["index", "prompt_en", "sub_dims_en"], *rows])

    answer = "<analysis>['x', 'y']</analysis><score>[1, 0]</score>"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"choices": [{"message": {"content": answer}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("SLAS_JUDGE_BASE_URL", f"http://127.0.0.1:{server.server_port}/v1")
        monkeypatch.setenv("SLAS_JUDGE_MODEL", "stub")
        opts = EvalOptions(suite="unigenbench", out=tmp_path / "o", data_dir=str(data), max_prompts=2, steps=2)
        s = run_suite(opts, model=Model(FlatBackbone(), "flat", False, 2))
    finally:
        server.shutdown()
    assert s["overall"] == pytest.approx(0.5) and s["n_images"] == 8 and s["n_malformed"] == s["n_failed"] == 0
    assert "overall" in format_summary(s)
    recs = lines(tmp_path / "o" / "results.jsonl")
    assert [(r["index"], r["sample"]) for r in recs] == [(i, k) for i in range(2) for k in range(4)]
    assert all(r["scores"] == [1, 0] and r["status"] == "ok" for r in recs)
    assert (tmp_path / "o" / "judge_cache.jsonl").is_file() and (tmp_path / "o" / recs[0]["filename"]).is_file()
