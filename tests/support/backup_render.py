"""The backup container as the program renders it: its graph, its inputs, its environment."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from tools.render import ROOT, Graph, Resource, evaluate, stack_config

WIRING = """
from stack.backup import Backup, BackupArgs, BackupProps
backup = Backup("backup", BackupArgs(props=BackupProps.of(settings), networks=networks.names, volumes=volumes,
                datastores=datastores, stack_labels=stack_labels))
"""

def _wired() -> bool:
    return "stack.backup" in (ROOT / "__main__.py").read_text()

def backup_graph(stack: str = "prod", **overrides: Any) -> Graph:
    """The stack's graph with `paper-trading:<key>` overrides, Backup wired in."""
    config, secrets = stack_config(stack)
    for key, value in overrides.items():
        config[f"paper-trading:{key}"] = value if isinstance(value, str) else json.dumps(value)
    if _wired():
        return evaluate(stack, config=config, secret_keys=secrets)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "__main__.py").write_text((ROOT / "__main__.py").read_text() + WIRING)
        return evaluate(stack, config=config, secret_keys=secrets, root=Path(tmp))

def backup_container(graph: Graph) -> Resource:
    found = [r for r in graph.containers if r.label_map.get("paper-trading.service") == "backup"]
    assert len(found) == 1, [r.name for r in found]
    return found[0]

def envs(res: Resource) -> dict[str, str]:
    return dict(e.split("=", 1) for e in res.inputs["envs"])
