"""The drawing of the house holds (docs/architecture.md): who may import whom, no cycle, no long file."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: This repository's top-level packages and modules.
OURS = {"contract", "settings", "render", "programs", "validation", "policies", "release", "stack",
        "components", "tools", "tests", "bench", "reference_app", "__main__"}
#: Per layer, the top-level packages its modules may never import.
FORBIDDEN = {
    "contract": OURS | {"pulumi", "pulumi_docker", "docker", "pydantic"},
    "settings": {"docker", "pulumi_docker", "policies", "tools", "render", "stack", "release", "components"},
    "render": {"components", "stack", "release", "docker", "pulumi", "pulumi_docker", "policies", "tools"},
    "policies": {"stack", "release", "components", "docker", "pulumi_docker", "validation"},
    # The release protocol is wired into the graph by the stack, never the other way round.
    "release": {"stack", "components", "policies", "tools", "pulumi_docker"},
    "stack": {"policies", "tools", "components"},
}
#: release/ modules that talk to the single host's Docker Engine (exec, archives, one-shot
#: containers). The rest of release/ is the target-independent protocol; a second target brings
#: its own engine side for these, keeps the others.
DOCKER_SIDE = {
    "release/routing/docker_side.py", "release/routing/switching.py", "release/routing/provider.py",
    "release/routing/cli.py", "release/routing/__main__.py", "release/routing/__init__.py",
    "release/guard.py", "release/gate.py",
    "release/handoff.py", "release/audit.py", "release/audit_seal.py", "release/record.py",
    # The Swarm target's engine side: each node's engine, the proxy tasks, the gate's Swarm checks,
    # the handoff on the data node.
    "release/swarm/nodes.py", "release/swarm/checks.py", "release/swarm/switch.py",
    "release/swarm/provider.py", "release/swarm/cli.py", "release/swarm/__main__.py",
    "release/swarm/guard.py", "release/swarm/autoscale.py", "release/swarm/work.py",
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def _top(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_it_must_not(layer: str) -> None:
    offending = {str(path.relative_to(ROOT)): sorted(_top(_imports(path)) & FORBIDDEN[layer])
                 for path in sorted((ROOT / layer).rglob("*.py"))}
    assert {k: v for k, v in offending.items() if v} == {}


def test_the_release_protocol_reaches_docker_only_through_its_engine_side() -> None:
    """Outside DOCKER_SIDE, release/ imports neither the Docker SDK nor a module that does."""
    engine_side = {_module(ROOT / name) for name in DOCKER_SIDE}
    offending = {}
    for path in sorted((ROOT / "release").rglob("*.py")):
        name = str(path.relative_to(ROOT))
        if name in DOCKER_SIDE:
            continue
        bad = {m for m in _imports(path) if m.split(".")[0] == "docker" or m in engine_side}
        if bad:
            offending[name] = sorted(bad)
    assert offending == {}
    # ... and the list is not a blanket: every entry exists and really reaches the engine.
    for name in DOCKER_SIDE:
        reached = _imports(ROOT / name)
        assert any(m.split(".")[0] == "docker" or m in engine_side for m in reached), name


def test_no_import_cycle_between_the_modules_of_this_repository() -> None:
    paths = [p for top in OURS - {"__main__", "tests"} for p in sorted((ROOT / top).rglob("*.py"))
             if (ROOT / top).is_dir()]
    graph: dict[str, set[str]] = {_module(p): set() for p in paths}
    for path in paths:
        for name in _imports(path):
            while name and name not in graph:
                name = name.rpartition(".")[0]
            if name and name != _module(path):
                graph[_module(path)].add(name)
    # A package's __init__ re-exporting its own modules is not a cycle of the code.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_old_names_only_forward() -> None:
    """components/ keeps the old module names for existing stacks' pickles and the documented
    commands: every module there only imports from stack/ or release/ (and sys), no code."""
    for path in sorted((ROOT / "components").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue  # the docstring
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] in ("stack", "release"), path
            elif isinstance(node, ast.Import):
                assert [a.name for a in node.names] == ["sys"], path
            else:
                assert isinstance(node, ast.If) and "__main__" in ast.unparse(node.test), path


def test_no_source_file_outside_the_tests_is_over_500_lines() -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z", "*.py", "*.sh"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    long = {name: n for name in listed if name and not name.startswith("tests/") and (ROOT / name).is_file()
            and (n := len((ROOT / name).read_text().splitlines())) > 500}
    assert long == {}


def test_no_component_is_given_the_whole_settings() -> None:
    """Each component gets a Props holding what it reads (built by `Props.of(settings)` next to it);
    no `*Args` field and no component body names `Settings`."""
    offending = []
    for path in sorted((ROOT / "stack").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = {ast.unparse(base) for base in node.bases}
            if node.name.endswith("Args"):
                for field in node.body:
                    if isinstance(field, ast.AnnAssign) and "Settings" in ast.unparse(field.annotation):
                        offending.append(f"{path.name}:{node.name}.{ast.unparse(field.target)}")
            elif "pulumi.ComponentResource" in bases and (
                    "Settings" in ast.unparse(node) or ".settings" in ast.unparse(node)):
                offending.append(f"{path.name}:{node.name}")
    assert offending == []
    # Every component's Args names a Props.
    args = {node.name for p in (ROOT / "stack").rglob("*.py") for node in ast.walk(ast.parse(p.read_text()))
            if isinstance(node, ast.ClassDef) and node.name.endswith("Props")}
    assert {"AppColorProps", "BackupProps", "DatastoresProps", "FirewallProps", "IdsProps", "MonitoringProps",
            "ProxyProps", "SwarmColorProps", "SwarmProxyProps"} <= args


def test_the_tests_mirror_the_code_and_keep_their_helpers_in_one_place() -> None:
    """Tests live in a folder per package (or docker/, host/, engine/), helpers in tests/support/;
    no test module imports another, and no test file is much over 500 lines."""
    tests = ROOT / "tests"
    loose = sorted(p.name for p in tests.glob("test_*.py"))
    assert loose == []
    folders = {p.parent.relative_to(tests).parts[0] for p in tests.rglob("test_*.py")}
    assert folders <= {"contract", "settings", "render", "programs", "validation", "policies", "release",
                       "stack", "tools", "docker", "host", "engine"}, folders
    crossing = {}
    for path in sorted(tests.rglob("*.py")):
        bad = [m for m in _imports(path) if m.startswith("tests.") and m.split(".")[-1].startswith("test_")]
        if bad:
            crossing[str(path.relative_to(ROOT))] = bad
    assert crossing == {}
    long = {str(p.relative_to(ROOT)): n for p in sorted(tests.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > 520}
    assert long == {}
