"""`settings` (the stack configuration) has one small public face, and pulls in no component code."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import settings

ROOT = Path(__file__).resolve().parents[2]

FACE = [
    "COLORS",
    "MAX_REPLICAS",
    "PROJECT",
    "SECRET_PATHS",
    "SKIPPABLE_CHECKS",
    "AppConfig",
    "AuditConfig",
    "AutoscaleConfig",
    "BackupConfig",
    "Color",
    "ConfigError",
    "DatastoreLimits",
    "FirewallConfig",
    "IdsConfig",
    "IdsJail",
    "Images",
    "Limits",
    "MonitoringConfig",
    "ProxyConfig",
    "ServerConfig",
    "Settings",
    "SwarmConfig",
    "WorkersConfig",
    "duration_ms",
    "image_pin_problem",
    "ip_network",
    "ipv4_address",
    "load_settings",
    "other_color",
    "parse_settings",
    "plain_secret_leaves",
    "read_stack_file",
    "stack_file_path",
]


def _imports_from_settings() -> dict[str, set[str]]:
    """`{module imported from: names}` for every `from settings... import` outside settings/."""
    found: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        if path.relative_to(ROOT).parts[0] in ("settings", "venv", ".git"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.split(".")[0] == "settings":
                found.setdefault(node.module, set()).update(alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("settings."):
                        found.setdefault(alias.name, set()).add("*")
    return found


def test_the_face_is_exactly_what_the_rest_of_the_repo_imports() -> None:
    assert settings.__all__ == FACE
    assert _imports_from_settings() == {"settings": set(FACE)}


def test_every_name_of_the_face_is_importable() -> None:
    module = importlib.import_module("settings")
    for name in FACE:
        assert getattr(module, name) is not None, name


def test_nothing_imports_the_old_config_module() -> None:
    assert not (ROOT / "components" / "config.py").exists()
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.relative_to(ROOT).parts[0] in ("venv", ".git"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] == "config" \
                    and (node.level > 0 or node.module == "components.config"):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_settings_imports_neither_docker_nor_component_code() -> None:
    """validation/ may use settings: it must not drag in Docker, a Pulumi component or a release step."""
    code = ("import sys, settings; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('stack', 'release', 'components', 'pulumi_docker', 'docker')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_section_module_is_long() -> None:
    lengths = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "settings").glob("*.py")}
    assert {name: n for name, n in lengths.items() if n > 300} == {}
