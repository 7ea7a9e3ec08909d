"""Fuzz tests (hypothesis, bounded in examples and time): the config loader (YAML documents
and dotted overrides) and the reward server's HTTP payloads over a real socket. The only outcomes allowed are a
valid config or one ``ConfigError`` line, and an answer or one JSON error line, never a traceback or a hang; the
server keeps serving. Also: the reward server derives ShapesWorld metadata from the prompt text, or answers 400
naming what the reward needs.

The examples are derandomized, so CI is reproducible; ``SLAS_FUZZ_EXAMPLES=N`` runs N random examples per test.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import io
import json
import logging
import math
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from _fuzz import bounded, no_hang
from slas import rewards
from slas.config import Config, ConfigError, load_config
from slas.rewards.server import make_server
from slas.rewards.wire import encode_images
from slas.toyworld import all_prompts, parse
from slas.toyworld.renderer import render


def _one_line(msg: str, limit: int = 1000) -> None:
    assert msg and "\n" not in msg and len(msg) <= limit, repr(msg[:300])


# ----------------------------------------------------------------------------
# Config loader
# ----------------------------------------------------------------------------

SECTIONS = {f.name: [g.name for g in dataclasses.fields(getattr(Config(), f.name))] for f in dataclasses.fields(Config)}
FIELDS = [(s, f) for s, names in SECTIONS.items() for f in names]
SPECIAL_STRINGS = ["nan", "NaN", "inf", "-inf", ".inf", "-.Inf", ".nan", "1e400", "-1e400", "1e-4", "3e-4", "0x10",
                   "", " ", "null", "~", "true", "yes", "toy", "cuda:0", "ppo_sde", "nft", "ddim", "toy_score",
                   "9" * 40, "1_000", "\u00e9\u00e8", "\U0001f600", "a\nb", "\x00"]
NUMBERS = st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from([0, 1, -1, 2, 3, 10**6, 2**63, 2**64])
SCALARS = (st.none() | st.booleans() | NUMBERS | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12) | st.sampled_from(SPECIAL_STRINGS))
KEYS = (st.sampled_from(sorted({f for _, f in FIELDS} | set(SECTIONS))) | st.text(max_size=8)
        | st.integers(-5, 5) | st.booleans() | st.none())
VALUES = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(KEYS, kids, max_size=4),
                      max_leaves=8)


@st.composite
def yaml_documents(draw) -> bytes:
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "sections", "any", "text", "bytes"]))
    if kind == "mutated":  # the default config with a few fields set to random values: reaches deep validation
        doc = Config().to_dict()
        for sec, name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4)):
            doc[sec][name] = draw(VALUES)
        if draw(st.booleans()):
            doc[draw(st.sampled_from(sorted(SECTIONS)))][draw(KEYS)] = draw(VALUES)  # maybe a junk key
    elif kind == "sections":  # real section and field names mixed with junk keys, any values
        doc = draw(st.dictionaries(st.sampled_from(sorted(SECTIONS)) | KEYS,
                                   st.dictionaries(st.sampled_from([f for _, f in FIELDS]) | KEYS, VALUES, max_size=5)
                                   | VALUES, max_size=5))
    elif kind == "any":  # any YAML value at the top: lists, scalars, empty documents
        doc = draw(VALUES)
    elif kind == "text":  # free text, most of it not YAML at all
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    else:  # invalid UTF-8, BOMs, control bytes
        return draw(st.binary(max_size=200))
    text = yaml.safe_dump(doc, allow_unicode=draw(st.booleans()), default_flow_style=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")


PATHS = st.sampled_from([f"{s}.{f}" for s, f in FIELDS]) | st.sampled_from(
    ["train", "train.", ".lr", "a..b", "", " ", "train..lr", "train.lr.x", "reward.weights.toy_clean",
     "advantage.params.gamma", "reward.options.toy_score.x", "model.trainable.0", "\u00fc.\u00df", "run.seed "])


@st.composite
def override_lists(draw) -> list[str]:
    out = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["path=value", "path=value", "path=yaml", "junk", "no_equals"]))
        if kind == "path=value":
            out.append(f"{draw(PATHS | st.text(max_size=10))}={draw(st.text(max_size=15) | st.sampled_from(SPECIAL_STRINGS))}")
        elif kind == "path=yaml":
            value = yaml.safe_dump(draw(VALUES), default_flow_style=True).strip().removesuffix("...").strip()
            out.append(f"{draw(PATHS)}={value}")
        elif kind == "junk":
            out.append(draw(st.text(max_size=20)))
        else:
            out.append(draw(st.text(max_size=20).filter(lambda s: "=" not in s)))
    return out


def _load(tmp_path: Path, doc: bytes | None, overrides: list[str]):
    """load_config's outcome: a Config, or the ConfigError (anything else propagates and fails the test)."""
    path = None
    if doc is not None:
        path = tmp_path / "fuzz.yaml"
        path.write_bytes(doc)
    try:
        with no_hang(20):
            cfg = load_config(path, overrides)
    except ConfigError as e:
        _one_line(str(e))
        return e
    assert isinstance(cfg, Config)
    yaml.safe_dump(cfg.to_dict())  # a loaded config can be written back (run_dir's config.yaml)
    return cfg


@pytest.fixture(scope="module")
def loaded_registries():
    load_config(None, [])  # imports the adapters, rewards and plugins once, outside the examples' deadline


@bounded(400, deadline_ms=5000)
@given(doc=yaml_documents(), overrides=override_lists() | st.just([]))
def test_fuzz_config_yaml_documents(loaded_registries, tmp_path, doc, overrides):
    _load(tmp_path, doc, overrides)


@bounded(300, deadline_ms=5000)
@given(overrides=override_lists())
def test_fuzz_config_overrides(loaded_registries, tmp_path, overrides):
    _load(tmp_path, None, overrides)


@pytest.mark.parametrize("doc, overrides, needle", [
    (b"\xff\xfe\x00train: 1", [], "is not UTF-8 text"),
    (b"[1, 2]", ["train.lr=1"], "must hold a mapping of sections"),
    (b"0", [], "must hold a mapping of sections"),
    (b"[" * 3000, [], "nested too deeply"),
    (b"train: {lr: .inf}", [], "train.lr must be a finite number"),
    (b"train: {betas: [a, b]}", [], "train.betas must be two numbers"),
    (b"advantage: {params: {1: 2}}", [], "advantage.params: option names must be strings"),
    (b"advantage: {params: {adv_clip: 2}}", [], "other than adv_clip"),
    (b"reward: {weights: {toy_score: .nan}}", [], "must be a finite number"),
    (b"sample: {steps: 100000000000000000000}", [], "sample.steps is out of range"),
    (b"sample: {steps: 1000000}\ntrain: {objective: ppo_sde}", ["sample.eta=0.5"], "sample.steps must be <= 1000"),
    (b"eval: {grid_prompts: [1, {}]}", [], "eval.grid_prompts must be a list of prompt strings"),
    (b"sample: {noise_pool: 0}", [], "sample.noise_pool must be >= 1"),  # before the backbone's check divides by it
    (None, ["train.updates_per_iter=0"], "train.updates_per_iter must be >= 1"),  # before the pairs are divided by it
    (None, ["train.updates_per_iter=-2"], "train.updates_per_iter must be >= 1"),
    (None, ["train.micro_batch=0"], "train.micro_batch must be >= 1"),  # before the micro-batches are counted
    (None, ["train.weight_decay=-0.1"], "train.weight_decay must be >= 0"),
    (b"reward: {options: {toy_score: {1: 2, a: 3}}}", [], "option names must be strings"),
    (b"key: [unclosed", [], "is not valid YAML"),
    (b"a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     b"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n", [], "holds more than"),  # an alias bomb
    (None, ["train.lr=["], "override 'train.lr': value '[' is not valid YAML"),
    (None, ["train.lr=\x00"], "is not valid YAML"),
    (None, ["train.lr=!!python/object:os.system x"], "is not valid YAML"),
    (None, ["train.iterations=" + "1" * 5000], "is not valid YAML: Exceeds the limit"),
    (None, ["a..b=1"], "has an empty part"),
    (None, ["=1"], "has an empty part"),
    (None, ["train.seed"], "must look like section.key=value"),
])
def test_config_errors_found_by_fuzzing(loaded_registries, tmp_path, doc, overrides, needle):
    out = _load(tmp_path, doc, overrides)
    assert isinstance(out, ConfigError) and needle in str(out), out


# ----------------------------------------------------------------------------
# Reward server
# ----------------------------------------------------------------------------

MAX_BYTES = 200_000
PROMPTS = [m["prompt"] for m in all_prompts()[::37]]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def toy_server():
    """toy_score over a real loopback socket; the server's tracebacks (handle_error, logged exceptions) are kept."""
    server = make_server("toy_score", port=0, max_bytes=MAX_BYTES)
    server.tracebacks = []
    server.handle_error = lambda request, address: server.tracebacks.append(address)  # socketserver prints these
    records = _Records()
    log = logging.getLogger("slas.rewards.server")
    log.addHandler(records)
    server.records = records
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    log.removeHandler(records)
    server.shutdown()
    server.server_close()


def _clean(server) -> None:
    """No traceback: neither an unhandled handler error nor a logged exception; no warning or error line either."""
    assert not server.tracebacks, server.tracebacks
    bad = [r for r in server.records.records if r.exc_info or r.levelno >= logging.WARNING]
    assert not bad, [r.getMessage() for r in bad]


def _post(server, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=20)
    try:
        conn.request("POST", "/score", body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _raw(server, data: bytes) -> bytes:
    """Send bytes on a fresh connection, close our side, and read the whole answer."""
    with socket.create_connection(server.server_address[:2], timeout=20) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before reading everything: its answer must still arrive
            pass
        return b"".join(iter(lambda: s.recv(65536), b""))


def _check_answer(status: int, out: object, n: int | None) -> None:
    assert isinstance(out, dict), out
    if status == 200:
        assert out["reward"] == "toy_score"
        scores = out["scores"]
        assert n is None or len(scores) == n
        assert all(s is None or (isinstance(s, float) and 0.0 <= s <= 1.0) for s in scores), scores
    else:
        # toy_score never fails on a request the server accepted: 500 would be an unchecked input reaching it
        assert status in (400, 404, 411, 413), (status, out)
        assert set(out) == {"error"}
        _one_line(out["error"], 500)


def _png(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                    max_leaves=10)


@st.composite
def images_fields(draw):
    """(the images field, N drawn, N if the field is a valid one else None), valid or broken in many ways."""
    n = count = draw(st.integers(0, 3))
    side = draw(st.sampled_from([32, 32, 32, 1, 8, 33]))
    channels = draw(st.sampled_from([3, 3, 3, 1, 4]))
    pixels = np.frombuffer(draw(st.binary(min_size=n * side * side * channels, max_size=n * side * side * channels)),
                           dtype=np.uint8).reshape(n, side, side, channels) if n else np.zeros((0, side, side, channels),
                                                                                               np.uint8)
    if draw(st.booleans()) and n and channels == 3 and side == 32:  # some real ShapesWorld renders
        pixels = np.stack([render(parse(draw(st.sampled_from(PROMPTS))), seed=i) for i in range(n)])
    kind = draw(st.sampled_from(["raw", "raw", "png", "png", "json", "broken_raw", "broken_png"]))
    if kind == "raw":
        field = {"encoding": "raw", "shape": list(pixels.shape), "data": base64.b64encode(pixels.tobytes()).decode()}
        if draw(st.booleans()):
            field["dtype"] = draw(st.sampled_from(["uint8", "uint8", "float32", None, 1]))
    elif kind == "png":
        mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
        field = {"encoding": "png", "data": [_png(p[..., 0] if mode == "L" else p) for p in pixels]}
    elif kind == "json":
        field, n = draw(JSON), None
    elif kind == "broken_raw":
        field = {"encoding": "raw", "shape": draw(st.lists(NUMBERS | st.floats() | st.text(max_size=3) | st.none(),
                                                           max_size=6) | JSON),
                 "data": draw(st.text(max_size=40) | st.sampled_from(["", "AAAA", "@@@", "QUJD=", "===="]) | JSON)}
        n = None
    else:
        data = draw(st.lists(st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode())
                             | st.text(max_size=20) | JSON, max_size=3))
        if n and draw(st.booleans()):  # a real PNG, cut short or with a flipped byte
            raw = base64.b64decode(_png(pixels[0][..., :3] if channels >= 3 else pixels[0][..., 0]))
            cut = draw(st.integers(0, len(raw)))
            raw = raw[:cut] + bytes([raw[cut] ^ 0xFF]) + raw[cut + 1:] if cut < len(raw) and draw(st.booleans()) else raw[:cut]
            data.append(base64.b64encode(raw).decode())
        field, n = {"encoding": draw(st.sampled_from(["png", "png", "PNG", "gif"])), "data": data}, None
    return field, count, n


@st.composite
def metas_fields(draw, prompts: list):
    kind = draw(st.sampled_from(["parsed", "empty", "prompt_only", "mutated", "json"]))
    if kind == "json":
        return draw(JSON)
    out = []
    for p in prompts:
        if kind == "empty":
            out.append({})
            continue
        try:
            meta = parse(p) if isinstance(p, str) else {}
        except ValueError:
            meta = {}
        if kind == "prompt_only":
            meta = {"prompt": p}
        elif kind == "mutated" and meta:
            meta = json.loads(json.dumps(meta))
            target = draw(st.sampled_from(["include", "exclude", "item", "prompt"]))
            if target == "item":
                item = meta["include"][draw(st.integers(0, len(meta["include"]) - 1))]
                item[draw(st.sampled_from(["class", "count", "color", "position", "x"]))] = draw(JSON)
            else:
                meta[target] = draw(JSON)
        out.append(meta)
    if draw(st.integers(0, 9)) == 0:  # one too many or too few
        out = out[:-1] if out and draw(st.booleans()) else [*out, {}]
    return out


@st.composite
def requests(draw) -> tuple[bytes, int | None]:
    """(a JSON body, the number of images it holds when valid)."""
    images, count, n = draw(images_fields())
    payload: dict = {"images": images}
    kind = draw(st.sampled_from(["shapes", "shapes", "text", "json"]))
    if kind == "shapes":
        prompts = [draw(st.sampled_from(PROMPTS)) for _ in range(count)]
    elif kind == "text":
        prompts = [draw(st.text(max_size=30) | st.sampled_from(["a photo of three green triangles", "a photo of",
                                                                "a photo of a red circle left of a square", ""]))
                   for _ in range(count)]
    else:
        prompts = draw(JSON)
    payload["prompts"] = prompts
    if draw(st.integers(0, 3)):
        payload["metas"] = draw(metas_fields(prompts if isinstance(prompts, list) else []))
    for _ in range(draw(st.integers(0, 1))):  # drop a field or add a junk one
        key = draw(st.sampled_from(["images", "prompts", "metas", "extra", ""]))
        if key in payload and draw(st.booleans()):
            del payload[key]
        else:
            payload[key] = draw(JSON)
    if draw(st.integers(0, 9)) == 0:
        payload = draw(JSON)  # not an object at all, or one of junk
    body = json.dumps(payload).encode()
    return body, n


@bounded(300, deadline_ms=20_000)
@given(request=requests())
def test_fuzz_reward_server_payloads(toy_server, request):
    body, n = request
    status, out = _post(toy_server, body)
    _check_answer(status, out, n)
    _clean(toy_server)


@st.composite
def wire_requests(draw) -> bytes:
    """Whole HTTP requests with bodies that are not JSON and headers that lie."""
    body = draw(st.binary(max_size=300) | st.text(max_size=100).map(lambda s: s.encode("utf-8", "surrogatepass"))
                | st.sampled_from([b"", b"{}", b"[]", b"null", b"{\"images\": ", b"[" * 5000 + b"]" * 5000,
                                   b"{\"prompts\": [" + b"1" * 5000 + b"]}", b"NaN", b"\xef\xbb\xbf{}"]))
    kind = draw(st.sampled_from(["exact", "exact", "short", "long", "junk", "negative", "none", "chunked", "huge"]))
    length = {"exact": str(len(body)), "short": str(max(0, len(body) - draw(st.integers(1, 10)))),
              "long": str(len(body) + draw(st.integers(1, 100))), "junk": draw(st.sampled_from(["abc", "1e3", "+5",
                                                                                                "", "0x10", "1_0", "\u0661"])),
              "negative": "-1", "none": None, "chunked": None, "huge": str(MAX_BYTES + 1)}[kind]
    head = "POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    if kind == "chunked":
        head += "Transfer-Encoding: chunked\r\n"
    return head.encode() + b"\r\n" + body


@bounded(150, deadline_ms=20_000)
@given(data=wire_requests())
def test_fuzz_reward_server_wire(toy_server, data):
    reply = _raw(toy_server, data)
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    out = json.loads(body)
    _check_answer(status, out, None)
    _clean(toy_server)


@pytest.mark.parametrize("data", [
    b"GARBAGE\r\n\r\n",  # a malformed request line
    b"PUT /score HTTP/1.1\r\nHost: x\r\n\r\n",  # an unsupported method
    b"POST /score HTTP/1.1\r\n" + b"X-Long: " + b"a" * 70_000 + b"\r\n\r\n",  # a header line over 64 KiB
    b"POST /elsewhere HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
    b"GET /nope HTTP/1.1\r\n\r\n",
])
def test_protocol_errors_are_json_too(toy_server, data):
    head, _, body = _raw(toy_server, data).partition(b"\r\n\r\n")
    assert 400 <= int(head.split()[1]) < 600
    _one_line(json.loads(body)["error"], 500)
    _clean(toy_server)


def test_the_server_still_serves_after_the_fuzzing(toy_server):
    metas = [parse(p) for p in PROMPTS[:4]]
    images = np.stack([render(m, seed=i) for i, m in enumerate(metas)])
    local = rewards.build({"toy_score": 1.0})(images, PROMPTS[:4], metas)["toy_score"]
    status, out = _post(toy_server, json.dumps({"images": encode_images(images, "png"), "prompts": PROMPTS[:4],
                                                "metas": metas}).encode())
    assert status == 200 and out["scores"] == local.tolist()
    _clean(toy_server)


# ----------------------------------------------------------------------------
# ShapesWorld metadata on the server
# ----------------------------------------------------------------------------


def test_shapesworld_metadata_is_derived_from_the_prompt(toy_server):
    metas = [parse(p) for p in PROMPTS[:4]]
    images = np.stack([render(m, seed=i) for i, m in enumerate(metas)])
    images[::2] = 255 - images[::2]
    local = rewards.build({"toy_score": 1.0})(images, PROMPTS[:4], metas)["toy_score"]
    data = encode_images(images, "raw")
    for extra in ({}, {"metas": [{"prompt": p} for p in PROMPTS[:4]]}, {"metas": [{} for _ in PROMPTS[:4]]}):
        status, out = _post(toy_server, json.dumps({"images": data, "prompts": PROMPTS[:4], **extra}).encode())
        assert status == 200 and out["scores"] == local.tolist(), (extra, out)
    _clean(toy_server)


@pytest.mark.parametrize("prompt, metas, needle", [
    ("a photo of a cat", None, "'a photo of a cat' (item 0): unknown word 'cat'"),
    ("a photo of three green triangles", None, "did you mean 'a photo of three triangles'"),
    ("a photo of a circle", [{"include": [{"class": "cat", "count": 1}]}], "(item 0): include[0].class must be one of"),
    ("a photo of a circle", [{"include": []}], "(item 0): include must be a non-empty list"),
    ("a photo of a circle", [{"include": [{"class": "circle", "count": "1"}]}], "include[0].count must be an int"),
    ("a photo of a circle", [{"include": [{"class": "circle", "count": 1, "position": ["left of", 0]}]}],
     "include[0].position must be"),
    ("a photo of a circle", [{"include": [{"class": "circle", "count": 1}], "exclude": [{"class": "circle"}]}],
     "exclude must be a list of {class, count}"),
])
def test_shapesworld_metadata_errors_are_400_naming_the_fields(toy_server, prompt, metas, needle):
    images = np.stack([render(parse("a photo of a circle"), seed=0)])
    payload = {"images": encode_images(images, "raw"), "prompts": [prompt]}
    if metas is not None:
        payload["metas"] = metas
    status, out = _post(toy_server, json.dumps(payload).encode())
    assert status == 400 and needle in out["error"], out
    assert out["error"].startswith("reward 'toy_score' cannot judge prompt "), out
    assert "(ShapesWorld rewards need " in out["error"], out
    _clean(toy_server)


def test_shapesworld_images_of_the_wrong_size_are_400(toy_server):
    images = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    status, out = _post(toy_server, json.dumps({"images": encode_images(images, "raw"),
                                                "prompts": PROMPTS[:2]}).encode())
    assert status == 400 and "image must have shape [32, 32, 3] (H, W, RGB), got [16, 16, 3]" in out["error"], out


def test_a_reward_failure_is_one_line_and_the_server_keeps_serving(capfd):
    if "test_fuzz_failing_reward" not in rewards.available():
        @rewards.register("test_fuzz_failing_reward")
        def _factory():
            def fn(images, prompts, metas):
                if prompts and prompts[0] == "fail":
                    raise RuntimeError("the model\nexploded\n  badly")
                return np.full(len(images), math.inf)

            return fn
    server = make_server("test_fuzz_failing_reward", port=0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        images = encode_images(np.zeros((1, 4, 4, 3), dtype=np.uint8), "raw")
        status, out = _post(server, json.dumps({"images": images, "prompts": ["fail"]}).encode())
        assert status == 500 and out == {"error": "reward 'test_fuzz_failing_reward' failed: RuntimeError: the model "
                                                  "exploded badly"}
        status, out = _post(server, json.dumps({"images": images, "prompts": ["ok"]}).encode())
        assert status == 200 and out["scores"] == [None]  # a non-finite score is null
    finally:
        server.shutdown()
        server.server_close()
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
