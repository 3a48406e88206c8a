"""The package's shape: no import cycles, every function small enough to hold in one's head."""

from __future__ import annotations

import ast
from pathlib import Path

import commplan_xl

PACKAGE = Path(commplan_xl.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every commplan_xl module `path` imports, at its top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: _imports(path, modules) - {name} for name, path in paths.items()}


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, trail = stack.pop()
        for nxt in graph[node]:
            if nxt == start:
                return [*trail, start]
            if nxt not in seen and not nxt.endswith("__init__"):
                seen.add(nxt)
                stack.append((nxt, [*trail, nxt]))
    return None


def test_no_module_imports_one_that_imports_it_back() -> None:
    """No module of commplan_xl imports, directly or through others, a module that imports it."""
    graph = _graph()
    cycles = {" -> ".join(c) for name in graph if (c := _cycle_from(name, graph))}
    assert not cycles, "\n".join(sorted(cycles))
