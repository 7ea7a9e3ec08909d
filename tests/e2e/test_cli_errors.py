"""Bad inputs at the command line: each is one `error:` line naming what is wrong, exit status 2, no traceback and
no run directory left behind. The table in docs/reliability.md lists these cases with the other files' tests."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from slas.apps.cli import main


def run(argv, capsys) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return rc, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err
    return lines[-1]


CONFIG_CASES = {  # case id -> (overrides, a phrase the one error line must hold)
    "config_unknown_key": (["train.lrr=1e-4"], "train.lrr"),
    "config_wrong_type": (["train.lr=fast"], "train.lr"),
    "config_unknown_section": (["optimizer.lr=1"], "optimizer"),
    "config_override_without_equals": (["train.lr"], "train.lr"),
    "config_unknown_estimator": (["advantage.estimator=ppo"], "estimator"),
    "config_unknown_objective": (["train.objective=dpo"], "train.objective"),
    "config_unknown_reward": (["reward.weights={nope: 1.0}"], "nope"),
    "config_reward_option_typo": (["reward.options={toy_biased: {lamb: 1}}", "reward.weights={toy_biased: 1.0}"],
                                  "lamb"),
    "config_negative_batch": (["train.prompts_per_iter=0"], "prompts_per_iter"),
    "config_ode_with_shared_noise": (["sample.same_noise_in_group=true"], "same_noise_in_group"),
    "config_ppo_on_ode": (["train.objective=ppo_sde", "sample.family=ode"], "ode"),
    "config_real_backbone_without_path": (["model.backbone=flux", "sample.family=dance"], "model.path"),
    "config_unknown_backbone": (["model.backbone=sdxl"], "sdxl"),
    "config_unknown_world": (["data.world=mars"], "mars"),
    "config_bad_sde_window": (["train.objective=ppo_sde", "sample.eta=0.5", "sample.sde_window=[5,2]"], "sde_window"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_is_one_line_and_leaves_nothing(case, tmp_path, capsys):
    overrides, phrase = CONFIG_CASES[case]
    out = tmp_path / "run"
    rc, err = run(["train", f"run.out_dir={out}", *overrides], capsys)
    assert rc == 2
    assert phrase in one_error_line(err)
    assert not out.exists()


def test_config_show_and_check_report_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1, 2\n")
    rc, err = run(["config", "check", bad], capsys)
    assert rc == 2 and "bad.yaml" in one_error_line(err)
    rc, err = run(["config", "show", "--config", "no_such_config"], capsys)
    assert rc == 2 and "toy_slas" in one_error_line(err)  # lists the shipped names


def test_config_file_not_a_mapping(tmp_path, capsys):
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    rc, err = run(["train", "--config", bad, f"run.out_dir={tmp_path / 'r'}"], capsys)
    assert rc == 2 and "list.yaml" in one_error_line(err)


PROMPT_FILES = {  # case id -> (file name, content, phrase)
    "prompts_missing_file": ("missing.txt", None, "does not exist"),
    "prompts_empty_file": ("empty.txt", "\n# only a comment\n", "holds no prompts"),
    "prompts_csv_file": ("p.csv", "prompt\na photo of a circle\n", ".csv"),
    "prompts_bad_json_line": ("p.jsonl", '{"prompt": "a photo of a circle"\n', "p.jsonl:1"),
    "prompts_json_without_prompt": ("q.jsonl", '{"text": "a photo of a circle"}\n', "prompt"),
    "prompts_not_utf8": ("latin.txt", b"a photo of a caf\xe9\n", "UTF-8"),
}


@pytest.mark.parametrize("case", sorted(PROMPT_FILES))
def test_bad_prompt_file_in_sample(case, tmp_path, capsys):
    name, content, phrase = PROMPT_FILES[case]
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    rc, err = run(["sample", "--prompts-file", path, "-n", 1, "--out", tmp_path / "g.png"], capsys)
    assert rc == 2 and phrase in one_error_line(err)
    assert not (tmp_path / "g.png").exists()


def test_unknown_word_in_a_prompt_is_named(tmp_path, capsys):
    rc, err = run(["sample", "--prompt", "a photo of a dragon", "-n", 1, "--out", tmp_path / "g.png"], capsys)
    assert rc == 2 and "dragon" in one_error_line(err)


@pytest.mark.parametrize("argv, phrase", [
    (["sample", "--checkpoint", "{tmp}/nowhere", "--prompt", "a photo of a circle"], "nowhere"),
    (["export", "{tmp}", "--out", "{tmp}/x"], "no config.yaml"),
    (["train", "--resume", "{tmp}"], "no config.yaml"),
    (["report", "{tmp}/nowhere"], "does not exist"),
    (["eval", "--suite", "geneval", "--model", "{tmp}/nowhere", "--out", "{tmp}/e"], "nowhere"),
], ids=["checkpoint_missing_dir", "export_not_a_run", "resume_not_a_run", "report_missing_dir", "eval_missing_model"])
def test_missing_run_or_model_is_one_line(argv, phrase, tmp_path, capsys):
    rc, err = run([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    assert rc == 2 and phrase in one_error_line(err)


def test_a_shipped_config_by_name_from_any_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # not the repository root
    assert main(["config", "show", "--config", "toy_dancegrpo"]) == 0
    out = capsys.readouterr().out
    assert "objective: ppo_sde" in out and "# the policy objective" in out  # values with their documentation
    assert main(["config", "check", "toy_slas"]) == 0
    capsys.readouterr()
    assert main(["config", "check", "flux_slas.yaml"]) == 2  # found; its model and reward files are not here
    assert "error: flux_slas.yaml: 5 of the files the config names are not there" in capsys.readouterr().err


@pytest.mark.parametrize("command, default", [("sample", "(default: 8)"), ("sample", "(default: grid.png)"),
                                              ("compare", "(default 2)")])
def test_help_shows_defaults(command, default, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and default in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("doc, overrides, needle", [
    (b"train:\n  lr: [1,\n", [], "is not valid YAML"),
    (b"\xff\xfe\x00garbage", [], "is not UTF-8 text"),
    (b"train: {lr: 1.0e-4}\n", ["train.lr=[", "run.seed=1"], "is not valid YAML"),
])
def test_cli_bad_config_is_one_error_line(tmp_path, doc, overrides, needle):
    cfg = tmp_path / "bad.yaml"
    cfg.write_bytes(doc)
    out_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "slas", "train", "--no-progress", "--config", str(cfg),
                           *overrides, f"run.out_dir={out_dir}"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:") and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    if not overrides:
        assert str(cfg) in proc.stderr  # names the file
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out_dir.exists()


def test_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "no config.yaml there" in capsys.readouterr().err
