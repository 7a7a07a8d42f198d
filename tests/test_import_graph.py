"""The import graph of Podium's own modules: no circle anywhere, and function-local imports only where the lazy
load is the point. (The layers themselves are import-linter's contracts in pyproject.toml, run by `make test`.)"""
from __future__ import annotations

import ast
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "api", "dashboard", "terminal", "observability", "orchestration", "podium")
# Where a function imports Podium's own code, and why it must stay there.
LAZY_IMPORTS = {
    "orchestration/providers/base.py",  # a provider's adapter loads only when a model of its kind is called
    "orchestration/apps.py",  # AppConfig.ready: receivers register once the models are loaded
    "observability/apps.py",  # the same: the one place that registers live-event observers
    "config/celery.py",  # read while the settings load, before Django can import models
    "orchestration/calibration/fitting.py",  # scikit-learn (~0.7 s) loads in the refit job, never in a request
}


def import_cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[module])
            if low[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_no_module_of_podium_imports_another_in_a_circle():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)  # every import statement, function-local ones too
    assert "orchestration.gateway.chat" in graph.modules  # the tree under test, not an installed copy
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_circle():
    graph = grimp.ImportGraph()
    for module in ("a", "a.b", "a.c", "a.d"):
        graph.add_module(module)
    graph.add_import(importer="a.b", imported="a.c")
    graph.add_import(importer="a.c", imported="a.b")
    graph.add_import(importer="a.d", imported="a.b")
    assert import_cycles(graph) == [["a.b", "a.c"]]


def test_functions_import_podium_code_only_where_the_lazy_load_is_the_point():
    local = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for function in ast.walk(ast.parse(path.read_text())):
                if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(function):
                    names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                             else [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
                    if any(name.split(".")[0] in PACKAGES for name in names):
                        local.add(str(path.relative_to(ROOT)))
    assert local == LAZY_IMPORTS
