"""The config's one error type, and the two helpers that every rule uses."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config problem; the message names the key and says what is allowed."""


def need(ok: bool, msg: str) -> None:
    """One rule: ConfigError(msg) unless ``ok``; ``msg`` names the key and says why the rule holds."""
    if not ok:
        raise ConfigError(msg)


def short(value, n: int = 80) -> str:
    """``repr(value)`` cut to ``n`` characters, so that a message about a huge value stays one short line."""
    r = repr(value)
    return r if len(r) <= n else r[: n - 3] + "..."
