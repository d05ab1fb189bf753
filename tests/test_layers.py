"""The package's layers hold: every import points down, no two modules import each other in a circle,
and no module or function grows past what a newcomer can read at once.

Every import counts, lazy ones inside functions and ``TYPE_CHECKING`` ones too: a lazy import only
hides a circle, it does not cut it (a fact that sits in the wrong module; move the fact).
The order is the one in each subpackage's docstring and docs/design.md's Layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cifar_hpc"

LAYERS = ("base", "config", ("data", "cluster"), "training", "study", "report", "submit", "cli")
"""Bottom first; a tuple is one level of siblings that must not import each other."""

RANK = {name: level for level, entry in enumerate(LAYERS) for name in (entry if isinstance(entry, tuple) else (entry,))}
TOP_LEVEL = {"cifar_hpc", "cifar_hpc.__main__"}
"""Outside the layers: the package's version and ``python -m cifar_hpc``."""

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
"""Outside ``cli/`` (Typer commands list their options in their signature)."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """The package modules ``name`` imports, wherever in the file the import stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:  # `from pkg import module` imports the module
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
    return {target for target in found if target in MODULES and target != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def test_every_module_lives_in_a_layer():
    outside = [name for name in MODULES if _layer(name) is None and name not in TOP_LEVEL]
    assert not outside, f"modules outside the layers {LAYERS}: {outside}"


def test_imports_only_point_down():
    upward = [
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if _layer(name)
        and _layer(target)
        and _layer(target) != _layer(name)
        and RANK[_layer(target)] >= RANK[_layer(name)]
    ]
    assert not upward, "imports that point up or sideways (move the fact down instead):\n" + "\n".join(sorted(upward))


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_import_circles():
    circles = _circles({name: {t for t in targets if t not in TOP_LEVEL} for name, targets in GRAPH.items()})
    assert not circles, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_circle_finder_sees_a_circle_through_a_lazy_import(tmp_path):
    """The checks above can fail: a lazy import inside a function is read like any other."""
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from cifar_hpc.cli import main\n")
    assert "cifar_hpc.cli" in _imports("cifar_hpc.base.m", module)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_functions_stay_readable(name):
    path = MODULES[name]
    lines = path.read_text().count("\n")
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(PACKAGE.parent)}: {lines} lines (split it by concern)"
    if _layer(name) == "cli":
        return
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.relative_to(PACKAGE.parent)}: functions over {MAX_FUNCTION_LINES} lines: {long}"
