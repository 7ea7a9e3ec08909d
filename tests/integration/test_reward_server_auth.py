"""The reward server's bearer token over loopback: every request but GET /health needs it (401 otherwise,
compared with hmac.compare_digest), the `remote` client reads it from a file or an environment variable, and it
never reaches a log line, an error message, the console or a run's config.yaml."""

import hmac
import http.client
import json
import logging
import threading

import numpy as np
import pytest
import yaml

from _toyruns import tiny_overrides
from slas import rewards
from slas.config import ConfigError, load_config
from slas.recipe.train import train
from slas.rewards.remote import RemoteRewardError
from slas.rewards.server import make_server
from slas.rewards.wire import TOKEN_ENV, encode_images
from slas.toyworld import parse
from slas.toyworld.renderer import render

TOKEN = "s3cret-Token_42.x"
WRONG = "not-the-token-9"
PROMPTS = ["a photo of a blue square and a red triangle", "a photo of three circles", "a photo of a white circle"]


def _batch(n: int = 3):
    metas = [parse(PROMPTS[i % len(PROMPTS)]) for i in range(n)]
    images = np.stack([render(m, seed=i) for i, m in enumerate(metas)])  # uint8 [N, 32, 32, 3]
    images[::2] = 255 - images[::2]  # some wrong images, so the scores differ
    return images, [m["prompt"] for m in metas], metas


@pytest.fixture
def auth_server():
    server = make_server("toy_score", port=0, token=TOKEN)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "reward.token"
    path.write_text(TOKEN + "\n")  # a trailing newline, as editors write it
    return path


@pytest.fixture(autouse=True)
def _no_token_in_the_environment(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)


def _request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), json.loads(resp.read())
    conn.close()
    return out


def _body() -> bytes:
    images, prompts, metas = _batch()
    return json.dumps({"images": encode_images(images, "raw"), "prompts": prompts, "metas": metas}).encode()


@pytest.mark.parametrize("auth", [None, f"Bearer {WRONG}", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer"])
def test_a_missing_or_wrong_token_is_401(auth_server, auth):
    status, headers, out = _request(auth_server, "POST", "/score", _body(), {"Authorization": auth} if auth else {})
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer ")
    assert out == {"error": "missing or wrong bearer token: send `Authorization: Bearer <token>` with the token of "
                            "the server's --token-file"}
    assert auth_server.jobs.counts["unauthorized"] == 1 and auth_server.jobs.counts["scored"] == 0


def test_only_health_is_open(auth_server):
    status, _, out = _request(auth_server, "GET", "/health")
    assert status == 200 and out["auth"] is True
    assert _request(auth_server, "GET", "/elsewhere")[0] == 401  # an unknown path is not told apart without it
    assert _request(auth_server, "GET", "/elsewhere", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 404
    images, prompts, metas = _batch()
    status, _, out = _request(auth_server, "POST", "/score", _body(), {"Authorization": f"bearer  {TOKEN}"})
    local = rewards.build({"toy_score": 1.0})(images, prompts, metas)["toy_score"]
    assert status == 200 and out["scores"] == local.tolist()


def test_the_token_is_compared_with_compare_digest(auth_server, monkeypatch):
    seen = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: seen.append((a, b)) or real(a, b))
    assert _request(auth_server, "POST", "/score", _body(), {"Authorization": f"Bearer {WRONG}"})[0] == 401
    assert seen == [(WRONG.encode(), TOKEN.encode())]


def test_the_client_reads_its_token_from_a_file_or_the_environment(auth_server, token_file, monkeypatch):
    images, prompts, metas = _batch()
    local = rewards.build({"toy_score": 1.0})(images, prompts, metas)["toy_score"]

    def scores(**options):
        client = rewards.build({"remote": 1.0}, options={"remote": {"url": auth_server.url, **options}})
        return client(images, prompts, metas)["remote"]

    np.testing.assert_array_equal(scores(token_file=str(token_file)), local)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    np.testing.assert_array_equal(scores(), local)
    monkeypatch.delenv(TOKEN_ENV)
    monkeypatch.setenv("MY_REWARD_TOKEN", f" {TOKEN}\n")
    np.testing.assert_array_equal(scores(token_env="MY_REWARD_TOKEN"), local)
    assert auth_server.jobs.counts["unauthorized"] == 0


def test_a_client_without_or_with_a_wrong_token_fails_when_built(auth_server, tmp_path, monkeypatch):
    with pytest.raises(RemoteRewardError, match=f"reward server {auth_server.url} requires a bearer token: set the "
                                                f"token_file option or the environment variable {TOKEN_ENV}$"):
        rewards.build({"remote": 1.0}, options={"remote": {"url": auth_server.url}})
    wrong = tmp_path / "wrong.token"
    wrong.write_text(WRONG)
    with pytest.raises(RemoteRewardError, match=r"answered 401: missing or wrong bearer token.*; the token is from "
                                                f"token file {wrong}$"):
        rewards.build({"remote": 1.0}, options={"remote": {"url": auth_server.url, "token_file": str(wrong)}})
    monkeypatch.setenv(TOKEN_ENV, WRONG)
    with pytest.raises(RemoteRewardError, match=f"the token is from environment variable {TOKEN_ENV}$"):
        rewards.build({"remote": 1.0}, options={"remote": {"url": auth_server.url}})
    with pytest.raises(ValueError, match=f"token file {tmp_path / 'nope'} does not exist"):
        rewards.build({"remote": 1.0}, options={"remote": {"url": auth_server.url, "token_file": str(tmp_path / 'nope')}})


def test_the_token_never_reaches_logs_messages_or_the_console(auth_server, token_file, tmp_path, monkeypatch, caplog,
                                                              capfd):
    caplog.set_level(logging.DEBUG)
    images, prompts, metas = _batch()
    client = rewards.build({"remote": 1.0}, options={"remote": {"url": auth_server.url, "token_file": str(token_file)}})
    client(images, prompts, metas)
    messages = []
    monkeypatch.setenv(TOKEN_ENV, WRONG)
    with pytest.raises(RemoteRewardError) as e:
        rewards.build({"remote": 1.0}, options={"remote": {"url": auth_server.url}})
    messages.append(str(e.value))
    monkeypatch.setenv(TOKEN_ENV, "two words")
    with pytest.raises(ValueError) as e:
        rewards.build({"remote": 1.0}, options={"remote": {"url": auth_server.url}})
    messages.append(str(e.value))
    assert "must hold the token on one line" in messages[-1]
    down = rewards.build({"remote": 1.0}, options={"remote": {"url": auth_server.url, "token_file": str(token_file),
                                                              "retries": 1, "backoff": 0.0}})
    auth_server.shutdown()
    auth_server.server_close()
    with pytest.raises(RemoteRewardError) as e:
        down(images, prompts, metas)
    messages.append(str(e.value))
    out, err = capfd.readouterr()
    text = "\n".join([caplog.text, *messages, out, err])
    assert "401" in caplog.text and "a wrong bearer token" in caplog.text  # the refusals were logged ...
    assert TOKEN not in text and WRONG not in text and "two words" not in text  # ... without the tokens


def test_a_runs_config_holds_where_the_token_is_never_the_token(auth_server, token_file, tiny_ckpt, tmp_path,
                                                                monkeypatch):
    def overrides(where: str, out=None) -> list[str]:
        return tiny_overrides(tiny_ckpt, out, **{
            "train.iterations": 1, "eval.max_prompts": 2, "reward.weights": "{remote: 1.0}",
            "reward.options": f"{{remote: {{url: '{auth_server.url}', encoding: raw, {where}}}}}"})

    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['token'\] for reward 'remote'"):
        load_config(None, overrides(f"token: {TOKEN}"))
    monkeypatch.setenv("RUN_REWARD_TOKEN", TOKEN)
    by_env = yaml.safe_dump(load_config(None, overrides("token_env: RUN_REWARD_TOKEN")).to_dict())
    assert "token_env: RUN_REWARD_TOKEN" in by_env and TOKEN not in by_env
    out = tmp_path / "run"
    lines = []
    train(load_config(None, overrides(f"token_file: '{token_file}'", out)), progress=False, log=lines.append)
    config = (out / "config.yaml").read_text()
    assert f"token_file: {token_file}" in config
    written = [config, *lines, *(p.read_text() for p in out.rglob("*") if p.suffix in (".json", ".jsonl", ".yaml"))]
    assert not any(TOKEN in t for t in written)
    assert auth_server.jobs.counts["scored"] >= 1 and auth_server.jobs.counts["unauthorized"] == 0
