"""The files a config names on disk: the backbone's folder (``model.path``), the reward models' files
(``reward.options.<reward>.<option>``) and the prompt files (``data.prompts``, ``data.eval_prompts``).

``check_paths`` is the check that every one of them is there, run by ``slas config check F`` and at the start of
``slas train`` (before any model loads): one ``ConfigError`` that lists every missing or empty one, so that a
half-done download costs one message instead of a model load per missing file. Relative paths are relative to the
working directory, as when the run loads them. docs/real-models.md gives the download command of each file the
shipped configs name.

Validation (``load_config``) does not check them: a config stays valid on a machine that has not fetched its files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slas.config.errors import ConfigError, short
from slas.config.root import Config


def is_path_option(name: str) -> bool:
    """A reward option that names a local file or folder: ``*_path`` (model_path, tokenizer_path, processor_path,
    head_path), ``*_file`` (the remote reward's token_file) and ImageReward's ``med_config`` (slas.rewards.clip)."""
    return name.endswith(("_path", "_file")) or name == "med_config"


@dataclass(frozen=True)
class NamedPath:
    key: str  # the dotted config key, e.g. reward.options.hps.tokenizer_path
    path: Path
    kind: str  # "diffusers" (a diffusers folder), "file" (a prompt file) or "any" (a file or a non-empty folder)


def named_paths(cfg: Config) -> list[NamedPath]:
    """Every local path ``cfg`` names, in config order."""
    out = []
    if cfg.model.path:
        out.append(NamedPath("model.path", Path(cfg.model.path).expanduser(), "diffusers"))
    for name in cfg.reward.weights:
        options = cfg.reward.options.get(name) or {}
        for option, value in options.items():
            if is_path_option(option) and isinstance(value, str) and value.strip():
                out.append(NamedPath(f"reward.options.{name}.{option}", Path(value).expanduser(), "any"))
    for key in ("prompts", "eval_prompts"):
        value = getattr(cfg.data, key)
        if value:
            out.append(NamedPath(f"data.{key}", Path(value).expanduser(), "file"))
    return out


def path_problem(named: NamedPath) -> str | None:
    """What is wrong with one named path (None when it is there)."""
    from slas.policy.common import diffusers_folder_problem

    p = named.path
    if named.kind == "diffusers":
        return diffusers_folder_problem(p)
    if not p.exists():
        return "does not exist"
    if named.kind == "file" and not p.is_file():
        return "is not a file"
    if p.is_dir() and not any(p.iterdir()):
        return "is an empty folder"
    return None


def check_paths(cfg: Config, where: str = "") -> None:
    """ConfigError listing every path ``cfg`` names that is missing or empty (``where``: the config file, for the
    message)."""
    problems = [f"{n.key} {short(str(n.path), 120)} {problem}" for n in named_paths(cfg)
                if (problem := path_problem(n))]
    if problems:
        head = f"{where}: " if where else ""
        raise ConfigError(f"{head}{len(problems)} of the files the config names {'is' if len(problems) == 1 else 'are'} "
                          f"not there: {'; '.join(problems)}. Nothing is downloaded at run time: fetch them first "
                          "(docs/real-models.md lists the command for each file of a shipped config)")
