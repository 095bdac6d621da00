"""The shape of `validation/`: no import cycle, no deferred imports, a locked public face.

Read from the source (ast), so a cycle hidden in a function body counts as much as one at
the top of a module.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import validation

PACKAGE = Path(validation.__file__).resolve().parent

PUBLIC = {
    "CheckResult", "ExchangeCredentials", "ValidationOptions", "ValidationReport", "avalidate", "validate",
}

#: Imports allowed inside a function, by (module, imported module), each with its reason.
DEFERRED = {
    # settings/ imports validation.options on every program evaluation, which runs
    # validation/__init__.py; the runner (httpx, every check) is loaded only when checks run.
    ("validation", "validation.report"),
    ("validation", "validation.runner"),
}

#: What is specific to one deployment target (or to the Pulumi program): never imported here.
TARGET_SPECIFIC = ("pulumi", "pulumi_docker", "pulumi_random", "docker", "components", "stack", "release",
                   "policies")


def _module_name(path: Path) -> str:
    return "validation" if path.name == "__init__.py" else f"validation.{path.stem}"


MODULES = {_module_name(path): path for path in sorted(PACKAGE.glob("*.py"))}


def _imports(name: str) -> list[tuple[str, bool]]:
    """(imported module, inside a function) for every import in `name`'s source."""
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, inner) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(["validation", *([base] if base else [])])
                for alias in child.names:
                    # `from validation import checks_health` imports a module, not a name.
                    sub = f"{base}.{alias.name}"
                    found.append((sub if sub in MODULES else base, inner))
            visit(child, inner)

    visit(tree, False)
    return found


def _graph() -> dict[str, set[str]]:
    return {name: {target for target, _ in _imports(name) if target in MODULES} for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := walk(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := walk(start)) is not None:
            return found
    return None


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_modules_of_validation_import_no_cycle() -> None:
    graph = _graph()
    assert set(graph) >= {"validation.runner", "validation.registry", "validation.checks_health"}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_checks_import_the_registry_and_the_runner_imports_every_check() -> None:
    graph = _graph()
    checks = {name for name in MODULES if name.startswith("validation.checks_")}
    assert len(checks) == 8  # health, safety, work, exchange, security, audit, monitoring, performance
    for name in checks:
        assert "validation.registry" in graph[name], name
        assert "validation.runner" not in graph[name], name
    assert checks <= graph["validation.runner"]


def test_no_import_is_deferred_without_a_reason() -> None:
    deferred = {(name, target) for name in MODULES for target, inner in _imports(name) if inner}
    assert deferred == DEFERRED


def test_no_module_level_getattr() -> None:
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert "__getattr__" not in defined, name


def test_validation_imports_nothing_target_specific() -> None:
    for name in MODULES:
        bad = [t for t, _ in _imports(name) if t.split(".")[0] in TARGET_SPECIFIC]
        assert not bad, f"{name} imports {bad}"


def test_the_public_face_is_exactly_the_intended_names() -> None:
    assert sorted(validation.__all__) == sorted(PUBLIC)
    assert len(validation.__all__) == len(PUBLIC)
    fresh = importlib.import_module("validation")
    for name in PUBLIC:
        assert getattr(fresh, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from validation import *", namespace)  # noqa: S102 - the star import is the public face
    assert {k for k in namespace if not k.startswith("__")} == PUBLIC


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_each_public_name_imports(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from validation import {name}", namespace)  # noqa: S102
    assert namespace[name] is getattr(validation, name)
