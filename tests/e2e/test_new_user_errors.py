"""What a new user hit where one `error:` line is promised (docs/reliability.md): read-only output folders, empty model
and tokenizer folders, overrides after a flag, a byte-order mark, a 120 KB prompt line, `--steps 0`, a busy port."""

import os
import socket
import tempfile
from pathlib import Path

import pytest

from _toyruns import tiny_overrides
from slas.apps.cli import main, parse_args
from slas.config import load_config
from slas.recipe.metrics import read_metrics
from slas.recipe.prompts import load_prompts
from slas.toyworld import parse

ROOT = Path(__file__).resolve().parents[2]
LONG = "a photo of a " + "x" * 120_000  # one 120 KB prompt line
MAX_LINE = 1_000  # an error line quotes at most ~80 characters of any one input (a 120 KB line: 120,000)


def one_error(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err[:2000]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def read_only_dir(tmp_path) -> Path:
    """A folder this process cannot write in: a chmod 555 folder, or, as root (who writes through modes), /sys."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    for cand in (d, Path("/sys")):
        try:
            with tempfile.TemporaryFile(dir=cand):
                pass
        except OSError:
            yield cand
            break
    else:
        pytest.skip("no read-only folder on this machine")
    d.chmod(0o755)


def _never(*a, **k):
    raise AssertionError("reached the heavy part before failing")


def test_sample_into_a_read_only_folder_fails_before_sampling(read_only_dir, monkeypatch, capsys):
    import slas.policy.generate

    monkeypatch.setattr(slas.policy.generate, "generate", _never)
    out = read_only_dir / "grids" / "g.png"
    rc = main(["sample", "--prompt", "a photo of a red circle", "-n", "1", "--out", str(out)])
    one_error(capsys, rc, f"--out {out}: cannot write in {out.parent}")


def test_sample_out_under_a_file_fails_before_sampling(tmp_path, monkeypatch, capsys):
    import slas.policy.generate

    monkeypatch.setattr(slas.policy.generate, "generate", _never)
    (tmp_path / "f").write_text("")
    rc = main(["sample", "--prompt", "a photo of a red circle", "-n", "1", "--out", str(tmp_path / "f" / "g.png")])
    one_error(capsys, rc, f"--out {tmp_path / 'f' / 'g.png'}: {tmp_path / 'f'} is a file, not a folder")


def test_train_into_a_read_only_folder_fails_before_anything_loads(read_only_dir, monkeypatch, capsys):
    import slas.recipe.train

    for heavy in ("build_backbone", "build_reward", "train_prompts"):
        monkeypatch.setattr(slas.recipe.train, heavy, _never)
    out = read_only_dir / "run"
    rc = main(["train", "--no-progress", f"run.out_dir={out}"])
    one_error(capsys, rc, f"run.out_dir {out}")
    assert not out.exists()
    rc = main(["train", "--no-progress", f"run.out_dir={read_only_dir}"])  # the folder itself read-only
    one_error(capsys, rc, f"run.out_dir {read_only_dir}")


def test_an_empty_model_folder_is_named_before_anything_loads(tmp_path, monkeypatch, capsys):
    import slas.recipe.train

    monkeypatch.setattr(slas.recipe.train, "build_backbone", _never)
    empty = tmp_path / "sd14"
    empty.mkdir()
    out = tmp_path / "run"
    rc = main(["train", "--config", "sd14_slas", f"model.path={empty}", f"run.out_dir={out}"])
    line = one_error(capsys, rc, f"model.path '{empty}' holds no model_index.json (the folder is empty)",
                     "reward.options.hps.model_path", "data.prompts", "docs/real-models.md")
    assert line.count(" is not a directory") + line.count(" does not exist") == 4  # the HPS files and both prompt files
    assert not out.exists()


def test_train_checks_rewards_and_prompts_before_the_backbone(tmp_path, monkeypatch, capsys):
    import slas.recipe.train

    monkeypatch.setattr(slas.recipe.train, "build_backbone", _never)
    bad = tmp_path / "p.txt"
    bad.write_text("a photo of a circle\na photo of a dragon\n")
    one_error(capsys, main(["train", f"data.prompts={bad}", f"run.out_dir={tmp_path / 'r1'}"]), "p.txt:2", "dragon")
    one_error(capsys, main(["train", "reward.weights={toy_score: 1.0, toy_pref: 1.0}",
                            f"reward.options.toy_pref.checkpoint={tmp_path / 'no_pref'}", f"run.out_dir={tmp_path / 'r2'}"]),
              f"no toy_pref checkpoint at {tmp_path / 'no_pref'}")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_an_empty_model_folder_through_the_adapter(tmp_path):
    from slas.recipe.builders import build_backbone

    cfg = load_config(ROOT / "configs" / "sd14_slas.yaml", [f"model.path={tmp_path}"])
    with pytest.raises(FileNotFoundError, match=r"model.path .* holds no model_index.json \(the folder is empty\).*"
                                                r"hf download CompVis/stable-diffusion-v1-4"):
        build_backbone(cfg)


def test_an_empty_tokenizer_folder_is_named(tmp_path, capsys):
    from slas import rewards

    tok = tmp_path / "tok"
    tok.mkdir()
    ckpt = tmp_path / "HPS_v2.1_compressed.pt"
    ckpt.write_bytes(b"")
    cfg = tmp_path / "hps.yaml"
    cfg.write_text(f"reward:\n  weights: {{hps: 1.0}}\n  options:\n    hps: {{model_path: {ckpt}, tokenizer_path: {tok}}}\n")
    one_error(capsys, main(["config", "check", str(cfg)]), f"reward.options.hps.tokenizer_path '{tok}' is an empty folder")
    # the reward itself, as `slas reward-server` builds it: the option and the config key named, on one line
    with pytest.raises(ValueError) as e:
        rewards.build({"hps": 1.0}, options={"hps": {"model_path": str(ckpt), "tokenizer_path": str(tok)}})
    msg = str(e.value)
    assert "\n" not in msg and f"cannot load a CLIP tokenizer from tokenizer_path '{tok}'" in msg
    assert "(reward.options.hps.tokenizer_path of a config)" in msg


def test_overrides_after_a_flag_are_accepted(tiny_ckpt, tmp_path, capsys):
    args = parse_args(["train", "--config", "toy_slas", "train.iterations=2", "--no-progress", "run.seed=1"])
    assert args.overrides == ["train.iterations=2", "run.seed=1"] and args.no_progress
    run = tmp_path / "run"
    ov = tiny_overrides(tiny_ckpt, run)
    assert main(["train", *ov[:5], "--no-progress", *ov[5:], "run.seed=3"]) == 0
    assert load_config(run / "config.yaml").run.seed == 3 and read_metrics(run)[-1]["iteration"] == 2
    with pytest.raises(SystemExit):  # a flag it does not know is still refused
        parse_args(["train", "a.b=1", "--no-such-flag"])
    with pytest.raises(SystemExit):  # and a command without overrides takes no stray words
        parse_args(["sample", "--prompt", "a photo of a circle", "stray"])
    capsys.readouterr()


def test_a_byte_order_mark_is_not_part_of_the_first_prompt(tmp_path):
    f = tmp_path / "bom.txt"
    f.write_bytes("\ufeffa photo of a red circle\r\na photo of two squares\r\n".encode())
    assert [r["prompt"] for r in load_prompts(f, parse)] == ["a photo of a red circle", "a photo of two squares"]
    assert [r["prompt"] for r in load_prompts(f)] == ["a photo of a red circle", "a photo of two squares"]
    f.write_bytes("\ufeff# comment\na photo of a dragon\n".encode())
    with pytest.raises(ValueError, match=r"bom.txt:2: unknown word 'dragon'"):
        load_prompts(f, parse)


def test_a_120kb_prompt_is_not_echoed_in_full(tmp_path, capsys):
    line = one_error(capsys, main(["sample", "--prompt", LONG, "--out", str(tmp_path / "g.png")]), "unknown word")
    assert len(line) < MAX_LINE and "..." in line
    f = tmp_path / "long.txt"
    f.write_text(f"a photo of a circle\n{LONG}\n")
    line = one_error(capsys, main(["sample", "--prompts-file", str(f), "--out", str(tmp_path / "g.png")]), "long.txt:2")
    assert len(line) < MAX_LINE
    j = tmp_path / "long.jsonl"
    j.write_text('{"text": "' + "x" * 120_000 + '"}\n')
    line = one_error(capsys, main(["sample", "--prompts-file", str(j), "--out", str(tmp_path / "g.png")]), "long.jsonl:1")
    assert len(line) < MAX_LINE
    out = tmp_path / "run"
    line = one_error(capsys, main(["train", f"data.prompts={f}", f"run.out_dir={out}"]), "data.prompts", "long.txt:2")
    assert len(line) < MAX_LINE and not out.exists()
    line = one_error(capsys, main(["train", "train.lr" + "x" * 120_000]), "override")
    assert len(line) < MAX_LINE
    line = one_error(capsys, main(["reward-server", "--reward", "toy_score", "--option", "x" * 120_000]), "--option")
    assert len(line) < MAX_LINE


@pytest.mark.parametrize("flag", ["--steps", "--n-per-prompt", "--batch-size"])
def test_eval_refuses_zero_instead_of_using_the_default(flag, tmp_path, capsys):
    rc = main(["eval", "--suite", "toyworld", "--model", "base", "--out", str(tmp_path / "e"), flag, "0"])
    one_error(capsys, rc, f"{flag} must be >= 1, got 0")
    assert not (tmp_path / "e").exists()


def test_sample_and_toyworld_eval_refuse_zero_steps(tmp_path, capsys):
    one_error(capsys, main(["sample", "--prompt", "a photo of a circle", "--steps", "0", "--out", str(tmp_path / "g.png")]),
              "--steps must be >= 1")
    one_error(capsys, main(["toyworld", "eval", "--steps", "0"]), "--steps must be >= 1")


def test_a_busy_port_is_named(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc = main(["reward-server", "--reward", "toy_score", "--port", str(port)])
    one_error(capsys, rc, f"cannot listen on 127.0.0.1:{port}: ", "choose another --port")


def test_read_only_fixture_is_really_read_only(read_only_dir):
    with pytest.raises(OSError):
        (read_only_dir / "probe").write_text("x")
    assert not os.access(read_only_dir, os.W_OK) or os.geteuid() == 0
