"""The monitoring files as rendered for a stack, written where the real tools (promtool, amtool) read them."""

from __future__ import annotations

from pathlib import Path

from render.monitoring import layout, prometheus, rules
from settings import Settings, parse_settings
from tools.render import stack_config


def stack_settings(stack: str) -> Settings:
    config, secrets = stack_config(stack)
    prefix = "paper-trading:"
    raw = {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)}
    return parse_settings(raw, frozenset(k[len(prefix):] for k in secrets if k.startswith(prefix)))

def write_prometheus_tree(root: Path, settings: Settings, stack: str) -> Path:
    """prometheus.yml and its rule files under `root` + container path; returns the config path."""
    files = {
        layout.PROMETHEUS_CONFIG: prometheus.prometheus_config(settings, stack),
        layout.ALERT_RULES: rules.alert_rules(settings),
        layout.RECORDING_RULES: rules.recording_rules(),
    }
    for path, text in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root / layout.PROMETHEUS_CONFIG.lstrip("/")
