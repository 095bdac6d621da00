"""contract/__init__.py: the labels and paths the program, policies and tools share are defined once."""

from __future__ import annotations

import ast
from pathlib import Path

import contract

ROOT = Path(__file__).resolve().parents[2]
SHARED = {contract.ROLE_LABEL, contract.COLOR_LABEL, contract.STACK_LABEL, contract.SERVICE_LABEL,
          contract.CARRIER_LABEL, contract.SECRETS_DIR}


def test_no_module_spells_a_shared_name_itself() -> None:
    spelled = []
    for folder in ("stack", "release", "policies", "tools", "validation"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in SHARED:
                    spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert spelled == []


def test_the_labels_share_one_prefix() -> None:
    labels = SHARED - {contract.SECRETS_DIR}
    assert all(label.startswith(f"{contract.LABEL_PREFIX}.") for label in labels)
    assert len(labels) == 5
