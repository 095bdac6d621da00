"""The settings of the proxy-limit stacks."""

from __future__ import annotations

from functools import cache

from settings import Settings, parse_settings
from tools.render import stack_config


@cache
def stack_settings(stack: str) -> Settings:
    config, secrets = stack_config(stack)
    prefix = "paper-trading:"
    raw = {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)}
    return parse_settings(raw, frozenset(k[len(prefix):] for k in secrets if k.startswith(prefix)))
