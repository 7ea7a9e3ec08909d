"""The config as documented YAML (``slas config show``): each field's documentation is the string literal written
under it in its section's class body."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from slas.config.root import Config


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its documentation: the string literal written under the field in the class body."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:] + [None], strict=True):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(re.sub(r"-\n\s*", "-", nxt.value.value).split())
    return docs


def describe(cfg: Config) -> str:
    """The resolved config as YAML, each field preceded by its documentation as a comment."""
    lines = []
    section_docs = field_docs(type(cfg))
    for sec in dataclasses.fields(cfg):
        section = getattr(cfg, sec.name)
        lines.append(f"{sec.name}:  # {section_docs.get(sec.name, '')}")
        docs = field_docs(type(section))
        for f in dataclasses.fields(section):
            for w in textwrap.wrap(docs.get(f.name, ""), 100, break_on_hyphens=False):
                lines.append(f"  # {w}")
            value = yaml.safe_dump({f.name: getattr(section, f.name)}, default_flow_style=True, width=10**6)
            lines.append("  " + value.strip()[1:-1])
    return "\n".join(lines) + "\n"

