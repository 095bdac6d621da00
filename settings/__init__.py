"""Typed stack configuration for the `paper-trading:` namespace: one module per section.

This module is the public face: exactly the names the program, its components, the policy
pack, the tools and the tests import (tests/settings/test_settings_face.py keeps the list exact).
`base` holds what every section shares, one module per top-level key holds that section's
models, and `stack` the `Settings` root with its cross-section checks and the readers.
"""

from __future__ import annotations

from .app import AppConfig
from .backup import BackupConfig
from .base import (
    COLORS,
    PROJECT,
    Color,
    ConfigError,
    duration_ms,
    image_pin_problem,
    ip_network,
    ipv4_address,
    other_color,
)
from .deployment import MAX_REPLICAS
from .images import Images
from .limits import DatastoreLimits, Limits
from .monitoring import MonitoringConfig
from .proxy import ProxyConfig
from .security import AuditConfig, FirewallConfig, IdsConfig, IdsJail
from .server import ServerConfig
from .stack import (
    SECRET_PATHS,
    Settings,
    load_settings,
    parse_settings,
    plain_secret_leaves,
    read_stack_file,
    stack_file_path,
)
from .swarm import AutoscaleConfig, SwarmConfig
from .validation import SKIPPABLE_CHECKS
from .workers import WorkersConfig

__all__ = [
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
