"""Folder boundaries: `validation/` is a plain library (no Pulumi, no `components`)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_validation_imports_neither_pulumi_nor_components() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & {"pulumi", "pulumi_docker", "components"})
        for path in sorted((ROOT / "validation").rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_gate_resource_lives_with_the_other_resources() -> None:
    assert (ROOT / "release" / "gate.py").is_file()
    assert not (ROOT / "validation" / "gate.py").exists()
