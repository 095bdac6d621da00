"""The attack lab: the firewall lab with 200 IPv6 clients (one /64 each), or with a bridged uplink
named br-lan, and the helpers the attack tests share (the fixtures: tests/host/attacks/conftest.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.support import render_with
from tests.support.firewall_lab import (
    TABLE,
    Lab,
)


def ruleset_with(firewall: dict[str, Any] | None = None, ids: dict[str, Any] | None = None,
                 name_prefix: str | None = None) -> str:
    """The prod stack's rendered ruleset with some settings changed (the guard's environment)."""
    from tools.render import stack_config

    config, _ = stack_config("prod")
    security = json.loads(config["paper-trading:security"])
    security.setdefault("firewall", {}).update(firewall or {})
    security.setdefault("ids", {}).update(ids or {})
    overrides: dict[str, Any] = {"security": security}
    if name_prefix:
        overrides["namePrefix"] = name_prefix
    guard = next(r for r in render_with("prod", **overrides).containers
                 if r.inputs.get("name", "").endswith("-host-guard"))
    env = next(e for e in guard.inputs["envs"] if e.startswith("HOST_GUARD_RULESET="))
    return str(env.split("=", 1)[1])


def _decision(directory: Path, address: str, seconds: int = 600, reason: str = "probe") -> None:
    (directory / address.replace(":", "_")).write_text(f"{int(time.time()) + seconds} {reason}\n")


def _elements(lab: Lab, set_name: str, table: str = TABLE) -> list[str]:
    out = json.loads(lab.ns(lab.host, "nft", "-j", "list", "set", *table.split(), set_name).stdout)
    found: list[str] = []
    for item in out["nftables"]:
        for element in (item.get("set") or {}).get("elem", []) or []:
            value = element.get("elem", {}).get("val") if isinstance(element, dict) else element
            found.append(str(value))
    return found


def _stop(proc: subprocess.Popen[str], signum: int = signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(signum)
    code = proc.wait(timeout=15)
    return code, proc.stderr.read() if proc.stderr else ""


def _loaded(lab: Lab, table: str = TABLE) -> bool:
    return lab.ns(lab.host, "nft", "list", "table", *table.split(), check=False).returncode == 0
