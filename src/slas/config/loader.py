"""Loading a config: a YAML file plus dotted overrides (``train.lr=1e-4``) -> a validated ``Config``.

Unknown keys, wrong types, non-finite numbers, out-of-range ints and oversized documents are errors here; the
sections' rules and the rules between them run in ``validate``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from pathlib import Path

import yaml

from slas.config.errors import ConfigError, short
from slas.config.root import Config, validate

MAX_DEPTH, MAX_VALUES = 32, 100_000  # a config is a few sections of scalars: more is a mistake or a YAML alias bomb
INT_RANGE = 2**63  # every int field must fit an int64 (seeds, counts and sizes reach torch and numpy)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML (optional) plus dotted overrides, validate, and return a Config."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p} is not UTF-8 text: {e.reason} at byte {e.start}") from None
        except OSError as e:
            raise ConfigError(f"cannot read config {p}: {e.strerror or e}") from None
        except (yaml.YAMLError, ValueError, RecursionError) as e:  # ValueError: an int of > 4300 digits
            raise ConfigError(f"{p} is not valid YAML: {_yaml_problem(e)}") from None
        if data is None:  # an empty file (or only comments): the defaults
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p} must hold a mapping of sections (model:, train:, ...), got {type(data).__name__}")
        _check_size(data, str(p))
    # An override assigns its key: `reward.weights.toy_x=1` adds one reward to the file's weights, while
    # `reward.weights={toy_x: 1}` replaces them, so that no reward of the file stays in the sum unseen.
    data = copy.deepcopy(data)
    for key, value in _leaves(overrides or []):
        _set_dotted(data, key, value)
    return from_dict(data)


def from_dict(data: dict) -> Config:
    """Validate a nested mapping (the YAML's structure, e.g. ``Config.to_dict()`` edited) and return a Config."""
    cfg = _build(Config, data, "")
    validate(cfg)
    return cfg


def _build(cls, data: dict, prefix: str):
    """``cls`` (a config dataclass) from the mapping ``data``, recursing into sections; ``prefix`` is the dotted
    path of ``data`` in the document ("" at the top), for the messages."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names), key=str)  # YAML keys may be ints, bools or null
    if unknown:
        raise ConfigError(f"unknown key {short(prefix + str(unknown[0]))}; {prefix.rstrip('.') or 'config'} "
                          f"accepts: {names}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, f"{prefix}{name}.")
            continue
        if isinstance(value, str) and _type_ok(1.0, tp) and not _type_ok(value, tp):
            # PyYAML (YAML 1.1) reads `3e-4` as a string: it wants `3.0e-4`. Accept both.
            try:
                value = float(value)
            except ValueError:
                pass
        if not _type_ok(value, tp):
            raise ConfigError(f"{prefix}{name} must be {getattr(tp, '__name__', tp)}, got {short(value)}")
        if isinstance(value, int) and not isinstance(value, bool) and not -INT_RANGE <= value < INT_RANGE:
            raise ConfigError(f"{prefix}{name} is out of range: {short(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}{name} must be a finite number, got {value!r}")
        if tp is float:
            value = float(value)
        if tp is tuple:
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _type_ok(value, tp) -> bool:
    """Whether ``value`` (as YAML loads it) fits the field type ``tp``: an int is a float, a bool is neither, a list
    is a tuple."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is tuple:
        return isinstance(value, (list, tuple))
    return isinstance(value, origin or tp)


def _check_size(data, where: str) -> None:
    """ConfigError if ``data`` nests deeper than MAX_DEPTH or holds more than MAX_VALUES values (aliases counted
    each time they are used: asdict and deepcopy expand them). Iterative, so it cannot overflow the stack."""
    stack, count = [(data, 0)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH or count > MAX_VALUES:
            raise ConfigError(f"{where} nests deeper than {MAX_DEPTH} levels or holds more than {MAX_VALUES} values; "
                              "a config is a few sections of scalars")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)


def _leaves(overrides: list[str]) -> list[tuple[str, object]]:
    """``section.key=value`` strings -> (dotted key, YAML-parsed value), in order, with the format checked."""
    out = []
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {short(ov)} must look like section.key=value, e.g. train.lr=1e-4")
        key, raw = ov.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except (yaml.YAMLError, ValueError, RecursionError) as e:
            raise ConfigError(f"override {short(key.strip())}: value {short(raw, 40)} is not valid YAML: "
                              f"{_yaml_problem(e)}") from None
        _check_size(value, f"override {short(key.strip())}")
        out.append((key.strip(), value))
    return out


def _set_dotted(data: dict, key: str, value) -> None:
    """Assign ``value`` at the dotted ``key`` of the nested mapping ``data``, making the missing sections."""
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"override key {short(key)} has an empty part; it must look like section.key, e.g. train.lr")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {short(key)}: {short(p)} is not a section")
    node[parts[-1]] = value


def _yaml_problem(e: Exception) -> str:
    """One line about a YAML (or int conversion, or nesting) error: PyYAML's own message spans several lines."""
    if isinstance(e, RecursionError):
        return f"nested too deeply (more than {MAX_DEPTH} levels are never needed)"
    problem = getattr(e, "problem", None)
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    text = problem or " ".join(str(e).split())
    if mark is not None:
        text += f" (line {mark.line + 1}, column {mark.column + 1})"
    return text if len(text) <= 200 else text[:197] + "..."
