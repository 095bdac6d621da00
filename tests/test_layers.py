"""The target-independent layers import nothing Docker-single-host-specific (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Per layer, the top-level packages its modules may never import.
FORBIDDEN = {
    "render": {"components", "docker", "pulumi", "pulumi_docker", "policies", "tools"},
    "settings": {"docker", "pulumi_docker", "policies", "tools", "render"},
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_it_must_not(layer: str) -> None:
    offending = {str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[layer])
                 for path in sorted((ROOT / layer).rglob("*.py"))}
    assert {k: v for k, v in offending.items() if v} == {}


def test_no_source_file_outside_the_tests_is_over_500_lines() -> None:
    import subprocess

    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z", "*.py", "*.sh"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    long = {name: n for name in listed if name and not name.startswith("tests/") and (ROOT / name).is_file()
            and (n := len((ROOT / name).read_text().splitlines())) > 500}
    assert long == {}
