"""The module map stays true: imports point only downward (see docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "prompts", "judges")


def _modules() -> dict[str, set[str]]:
    """module name -> the modules of ours it imports (at any level of the file)."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            imported: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    imported.add(node.module)
            graph[name] = {m for m in imported if m.split(".")[0] in PACKAGES}
    return graph


def _imports_under(graph: dict[str, set[str]], prefix: str) -> set[tuple[str, str]]:
    return {(m, i) for m, deps in graph.items() if m == prefix or m.startswith(prefix + ".") for i in deps}


def test_hot_paths_never_import_the_store() -> None:
    graph = _modules()
    for hot_path in ("gateway.serving", "gateway.llm"):
        bad = {(m, i) for m, i in _imports_under(graph, hot_path) if i.startswith("gateway.store")}
        assert not bad, f"{hot_path} must not read the store: {sorted(bad)}"


def test_store_imports_only_errors_and_refs() -> None:
    graph = _modules()
    allowed = ("gateway.store", "gateway.errors", "gateway.refs", "gateway.config")
    bad = {(m, i) for m, i in _imports_under(graph, "gateway.store") if not i.startswith(allowed)}
    assert not bad, sorted(bad)


def test_errors_import_nothing_of_ours() -> None:
    assert _modules()["gateway.errors"] == set()


def test_only_composition_points_import_prompts_and_judges() -> None:
    graph = _modules()
    composition = {"gateway.app", "gateway.cli"}
    bad = {
        (m, i)
        for m, deps in graph.items()
        if m.startswith("gateway") and m not in composition
        for i in deps
        if i.split(".")[0] in {"prompts", "judges"}
    }
    assert not bad, sorted(bad)


def test_no_import_cycles() -> None:
    graph = _modules()

    # Resolve "from gateway.x import y" where gateway.x.y is itself a module.
    def deps(module: str) -> set[str]:
        return {d for d in graph.get(module, set()) if d in graph}

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for dep in deps(module):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module)


def test_package_inits_stay_nearly_empty() -> None:
    for init in ROOT.glob("*/**/__init__.py"):
        if init.parts[len(ROOT.parts)] not in PACKAGES:
            continue
        tree = ast.parse(init.read_text())
        imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        assert not imports, f"{init.relative_to(ROOT)} imports modules; keep __init__ files empty"
