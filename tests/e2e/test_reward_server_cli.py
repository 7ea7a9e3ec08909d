"""`slas reward-server` at the command line: one error line for a bad reward, option or token file, no non-loopback bind
without a token, and the warnings of --insecure-no-auth."""

import pytest

from slas.apps.cli import main
from slas.rewards.server import RewardHTTPServer
from slas.rewards.wire import TOKEN_ENV

TOKEN = "s3cret-Token_42.x"


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "reward.token"
    path.write_text(TOKEN + "\n")  # a trailing newline, as editors write it
    return path


@pytest.fixture(autouse=True)
def _no_token_in_the_environment(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("args, needle", [
    (["--reward", "nope"], "unknown reward 'nope'"),
    (["--reward", "toy_score", "--model-path", "/x"], "unknown option(s) ['model_path'] for reward 'toy_score'"),
    (["--reward", "toy_score", "--option", "novalue"], "must look like KEY=VALUE"),
    (["--reward", "remote", "--option", "url=http://127.0.0.1:1"], "cannot serve 'remote'"),
    (["--reward", "clip_score", "--model-path", "/no/such/dir"], "does not exist"),
])
def test_cli_reward_server_errors_are_one_line(args, needle, capsys):
    rc = main(["reward-server", *args, "--port", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err, err


@pytest.mark.parametrize("case", ["missing", "empty", "directory", "two_lines"])
def test_cli_a_bad_token_file_is_one_error_line(case, tmp_path, capsys):
    path = tmp_path / "token"
    if case == "empty":
        path.write_text("\n \n")
    elif case == "directory":
        path.mkdir()
    elif case == "two_lines":
        path.write_text(f"{TOKEN}\nsecond line\n")
    rc = main(["reward-server", "--reward", "toy_score", "--port", "0", "--token-file", str(path)])
    line = _one_error_line(capsys.readouterr().err)
    expected = {"missing": "does not exist", "empty": "is empty", "directory": "cannot be read: Is a directory",
                "two_lines": "must hold the token on one line"}[case]
    assert rc == 2 and line.startswith(f"error: token file {path} ") and expected in line and TOKEN not in line


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_cli_refuses_a_non_loopback_bind_without_a_token(host, capsys):
    rc = main(["reward-server", "--reward", "toy_score", "--host", host, "--port", "0"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and line.startswith(f"error: refusing to serve on {host} without authentication: ")
    assert "--token-file" in line and "--insecure-no-auth" in line


def test_cli_insecure_no_auth_warns_and_a_token_is_never_printed(token_file, monkeypatch, capsys):
    def stop(self, poll_interval=0.5):
        raise KeyboardInterrupt

    monkeypatch.setattr(RewardHTTPServer, "serve_forever", stop)  # bound, then "Ctrl-C" at once
    rc = main(["reward-server", "--reward", "toy_score", "--host", "0.0.0.0", "--port", "0", "--insecure-no-auth"])
    err = capsys.readouterr().err
    assert rc == 130 and err.startswith("warning: serving on 0.0.0.0 without authentication (--insecure-no-auth)")
    rc = main(["reward-server", "--reward", "toy_score", "--port", "0", "--token-file", str(token_file)])
    err = capsys.readouterr().err
    assert rc == 130 and "bearer token required but for /health" in err and "warning" not in err
    rc = main(["reward-server", "--reward", "toy_score", "--host", "0.0.0.0", "--port", "0", "--token-file",
               str(token_file)])
    err = capsys.readouterr().err
    assert rc == 130 and err.startswith("warning: serving plain HTTP on 0.0.0.0: the bearer token travels in clear")
    assert TOKEN not in err
    rc = main(["reward-server", "--reward", "toy_score", "--port", "0", "--token-file", str(token_file),
               "--insecure-no-auth"])
    assert rc == 2 and "give only one of them" in _one_error_line(capsys.readouterr().err)
