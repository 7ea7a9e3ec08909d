"""The package's layout: no import cycle between its parts, no upward import, and the generic layers never import
ShapesWorld (it plugs in through the registries, slas.plugins). Imports inside functions count."""

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "slas"
# bottom to top: a part may import only parts of a lower or equal rank
RANK = {"plugins": 0, "algo": 0, "policy": 1, "rewards": 1, "evals": 2, "config": 3, "recipe": 4, "toyworld": 5,
        "apps": 6, "__main__": 7}
GENERIC = ("plugins", "algo", "policy", "rewards", "evals", "config", "recipe")
RESEARCH = SRC.parents[1] / "research"
MAX_LINES = 500  # a file longer than this holds more than one concept: split it by concept


def module_name(path: Path) -> str:
    parts = ("slas",) + path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part(module: str) -> str | None:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 and bits[0] == "slas" else None


def imports(path: Path) -> set[str]:
    """Every slas module named by an import statement of the file, anywhere in it."""
    me = module_name(path)
    pkg = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("slas")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            if base.startswith("slas"):
                out.add(base)
                out |= {f"{base}.{a.name}" for a in node.names}  # `from slas.x import y`: y may be a module
    return out


def graph() -> dict[str, set[str]]:
    """part -> the other parts it imports."""
    edges: dict[str, set[str]] = defaultdict(set)
    for f in SRC.rglob("*.py"):
        a = part(module_name(f))
        for m in imports(f):
            b = part(m)
            if a and b and a != b and (SRC / b).exists() or (a and b and a != b and (SRC / f"{b}.py").exists()):
                edges[a].add(b)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                found.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n)
    return found


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, bs in edges.items() for b in bs if RANK.get(a, 99) < RANK.get(b, 99))


def test_every_part_has_a_rank():
    parts = {part(module_name(f)) for f in SRC.rglob("*.py")} - {None}
    assert parts <= set(RANK), f"parts without a layer: {parts - set(RANK)}"


def test_no_cycle_between_parts():
    assert cycles(graph()) == []


def test_no_upward_import():
    assert upward(graph()) == []


def test_generic_layers_never_import_toyworld():
    bad = []
    for f in SRC.rglob("*.py"):
        if part(module_name(f)) in GENERIC:
            bad += [f"{f.relative_to(SRC)} imports {m}" for m in imports(f) if part(m) == "toyworld"]
    assert bad == []


def too_long(files) -> list[str]:
    return [f"{f.name}: {n} lines" for f in files if (n := len(f.read_text().splitlines())) > MAX_LINES]


def test_no_source_file_exceeds_the_cap():
    files = sorted(SRC.rglob("*.py")) + sorted(RESEARCH.rglob("*.py"))
    assert len(files) > 50 and any(f.is_relative_to(RESEARCH) for f in files)
    assert too_long(files) == []


def test_the_checks_can_fail(tmp_path):
    long = tmp_path / "long.py"
    long.write_text("x = 1\n" * (MAX_LINES + 1))
    assert too_long([long]) == [f"long.py: {MAX_LINES + 1} lines"]
    assert cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
    assert upward({"algo": {"recipe"}}) == [("algo", "recipe")]
