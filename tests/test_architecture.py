"""The package's shape: no import cycles (function-level imports included), the command line
is a leaf that nothing else imports, and the benchmarks/examples use public modules only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "keras_ssm"

pytestmark = pytest.mark.core


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(name: str) -> str | None:
    """The keras_ssm module ``name`` refers to (itself, or the closest enclosing module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(path: Path, package: str) -> set[str]:
    """Every keras_ssm module ``path`` imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule; `from mod import name`, the module
            names = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            if len(names) < len(node.names):
                names.append(base)
        else:
            continue
        for name in names:
            if name.split(".")[0] == "keras_ssm":
                target = _resolve(name)
                if target is not None:
                    found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    edges = {}
    for name, path in MODULES.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges[name] = imports_of(path, package) - {name}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_checker_sees_function_level_imports_and_cycles(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "def f():\n    from keras_ssm.cli import build_parser\n    import keras_ssm.wrap\n"
    )
    assert imports_of(source, "keras_ssm") == {"keras_ssm.cli", "keras_ssm.wrap"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles() -> None:
    assert find_cycle(graph()) is None


def test_nothing_outside_the_command_line_imports_it() -> None:
    users = sorted(
        name
        for name, targets in graph().items()
        if not name.startswith("keras_ssm.cli")
        and any(t.startswith("keras_ssm.cli") for t in targets)
    )
    assert users == []
    for folder in ("export", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert "keras_ssm.cli" not in text and "keras_ssm import cli" not in text, path


def test_layers_depend_one_way() -> None:
    """masks -> layers -> wrap/stats -> the rest: the method's core imports nothing above it."""
    edges = graph()
    core = {
        "keras_ssm.masks",
        "keras_ssm.initializers",
        "keras_ssm.masked_base",
        "keras_ssm.layers",
    }
    for name in core:
        assert edges[name] <= core | {"keras_ssm.atomic"}, (name, edges[name])
    assert edges["keras_ssm.layers_more"] <= core, edges["keras_ssm.layers_more"]
    # the structure-aware penalty is a Keras regularizer on the scores: it imports none of ours
    assert edges["keras_ssm.structure"] == set(), edges["keras_ssm.structure"]
    layers = core | {"keras_ssm.layers_more", "keras_ssm.structure"}
    # wrap's rooms, in their order: layer_tree -> graph (the channel chains supermask's unit
    # penalty and shrink walk) -> norms -> wrapper -> wrap
    rooms = ["keras_ssm.layer_tree", "keras_ssm.graph", "keras_ssm.norms", "keras_ssm.wrapper",
             "keras_ssm.wrap"]  # fmt: skip
    for i, name in enumerate(rooms):
        assert edges[name] <= layers | set(rooms[:i]), (name, edges[name])


def test_benchmarks_use_public_names_only() -> None:
    """The harness in export/ imports no private (underscore) name of keras_ssm."""
    for path in (ROOT / "export").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras_ssm"):
                assert not any(a.name.startswith("_") for a in node.names), (path, node.module)
                assert not any(part.startswith("_") for part in node.module.split(".")), path
