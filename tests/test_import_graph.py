"""mslib's modules import one another without a cycle: the import graph, read from the sources, is acyclic.

Every ``import``/``from ... import`` counts, at module level or inside a function (a function-level import
hides a cycle, it does not remove it); only ``if TYPE_CHECKING:`` blocks are left out (they never run).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "mslib"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    walk(sub)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            walk(child)

    walk(tree)
    return found


def import_graph(root: Path = PKG) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` for every ``.py`` file under ``root``."""
    files = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {m: set() for m in files}
    top = root.name
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # "from pkg import sub" imports the submodule pkg.sub; the package itself only for other names
                subs = [f"{stem}.{a.name}" for a in node.names if f"{stem}.{a.name}" in files]
                targets = subs + ([stem] if len(subs) < len(node.names) else [])
            for t in targets:
                if t.split(".")[0] != top:
                    continue
                while t and t not in files:  # "mslib.x.y" where y is a name in module mslib.x
                    t = t.rpartition(".")[0]
                # a module's own packages are already being imported when it runs: no edge to them
                if t and t != mod and not mod.startswith(t + "."):
                    graph[mod].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None when it is acyclic."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_graph_reader_sees_relative_absolute_and_function_level_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "mslib"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    import mslib.sub.c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import a\n")
    graph = import_graph(pkg)
    assert graph["mslib.a"] == {"mslib.b"} and graph["mslib.b"] == {"mslib.sub.c"}
    assert graph["mslib.sub.c"] == set()  # a TYPE_CHECKING import never runs
    assert find_cycle(graph) is None
    (pkg / "sub" / "c.py").write_text("def g():\n    from .. import a\n")  # a function-level import back
    assert find_cycle(import_graph(pkg)) == ["mslib.a", "mslib.b", "mslib.sub.c", "mslib.a"]


def test_mslib_imports_without_a_cycle() -> None:
    cycle = find_cycle(import_graph())
    if cycle:
        pytest.fail("import cycle inside mslib: " + " -> ".join(cycle))
