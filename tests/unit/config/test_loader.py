"""Loading configs (slas.config.loader): the shipped YAML files, the default config, dotted overrides, file errors."""

from pathlib import Path

import pytest

from slas.config import Config, ConfigError, load_config
from slas.recipe.builders import build_backbone

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def test_shipped_configs_exist_and_validate():
    names = {p.name for p in CONFIGS}
    assert {"toy_slas.yaml", "toy_dancegrpo.yaml", "toy_drgrpo.yaml"} <= names
    for p in CONFIGS:
        load_config(p)


def test_default_config_is_toy_slas_yaml():
    shipped = load_config(ROOT / "configs" / "toy_slas.yaml").to_dict()
    default = Config().to_dict()
    assert shipped == default


def test_override_with_a_mapping_replaces_and_a_dotted_key_adds(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("reward:\n  weights: {toy_biased: 1.0}\n  options: {toy_biased: {lam: 2.0}}\n")
    # a mapping value replaces the file's (it used to merge: toy_biased silently stayed in the reward sum)
    assert load_config(f, ["reward.weights={toy_geneval: 1.0}", "reward.options={}"]).reward.weights == {
        "toy_geneval": 1.0}
    # a dotted key assigns one entry and keeps the rest
    cfg = load_config(f, ["reward.weights.toy_score=0.5", "reward.options.toy_biased.lam=1.0"])
    assert cfg.reward.weights == {"toy_biased": 1.0, "toy_score": 0.5}
    assert cfg.reward.options == {"toy_biased": {"lam": 1.0}}
    # later overrides win, in order
    assert load_config(f, ["train.lr=1e-3", "train.lr=2e-3"]).train.lr == 2e-3


def test_scientific_notation_is_a_float(tmp_path):
    assert load_config(None, ["train.lr=3e-4"]).train.lr == 3e-4  # PyYAML alone reads a str
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 2e-5\n  clip_range: 1e-3\n")
    cfg = load_config(f)
    assert cfg.train.lr == 2e-5 and cfg.train.clip_range == 1e-3


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_real_configs_validate_without_weights_and_fail_clearly_at_load(tmp_path):
    for name in ("flux_dancegrpo", "flux_slas", "sd14_dancegrpo", "sd14_slas", "sd35_flowgrpo"):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert cfg.model.backbone in ("flux", "sd", "sd3") and cfg.model.path
    cfg = load_config(ROOT / "configs" / "flux_dancegrpo.yaml", [f"model.path={tmp_path / 'nope'}"])
    with pytest.raises(FileNotFoundError, match="model.path .* is not a directory.*hf download"):
        build_backbone(cfg)
