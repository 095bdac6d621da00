"""The pack's configuration: defaults, JSON schemas, and merging what the engine passes.

Each policy reads its own keys (the engine passes `--policy-pack-config` per policy name).
Defaults are merged here, so a policy behaves the same whether or not the CLI filled the
schema defaults in. Numbers arrive as floats (protobuf Struct), like resource props.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi_policy import PolicyConfigSchema, ResourceValidationArgs

# Exchanges whose env prefix (`BINANCE_...`) or file name (`binance_api_key`) marks a credential.
DEFAULT_EXCHANGES = [
    "binance", "kucoin", "coinbase", "kraken", "bybit", "okx", "bitfinex", "bitstamp", "huobi",
    "bitget", "mexc", "gemini",
]
SANDBOX_HOSTS = ["testnet.binance.vision", "openapi-sandbox.kucoin.com"]
APP_IMAGES = ["ghcr.io/example/paper-trading-app", "paper-trading-reference-app"]
# What the official postgres/redis/rabbitmq entrypoints need to chown their data and drop to
# their own user; nothing else gets any capability back.
_DATASTORE_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"]
ALLOWED_CAPABILITIES: dict[str, list[str]] = {
    "postgres": _DATASTORE_CAPS, "redis": _DATASTORE_CAPS, "rabbitmq": _DATASTORE_CAPS,
}
# Host paths a service may bind-mount read-only. An entry ending in "/" allows the files below
# that directory; any other entry allows exactly that path.
ALLOWED_HOST_MOUNTS: dict[str, list[str]] = {
    "node-exporter": ["/proc", "/sys"],
    "log-collector": ["/var/lib/docker/containers"],
    "proxy": ["/etc/ssl/paper-trading/"],
}

#: CIS 5.12 exceptions: the services that still run with a writable root, each with its reason
#: (docs/policies.md lists the same). Never an app or the proxy: `container-read-only-rootfs`
#: refuses a writable root for them whatever the config says.
WRITABLE_REASONS: dict[str, str] = {
    service: f"receives uploaded files ({what}); pulumi-docker extracts uploads at `/`, which Docker refuses "
             "on a read-only root; moving them to a carrier (stack/carrier.py) is open work"
    for service, what in {
        "postgres": "the password file",
        "redis": "redis.conf with the password",
        "rabbitmq": "its conf.d file, plugins and definitions with the password",
        "backup": "the backup scripts and two passwords",
        "postgres-exporter": "the database password",
        "redis-exporter": "the password file",
        "prometheus": "its configuration, rules and the Alertmanager password",
        "alertmanager": "its configuration, web config and password",
        "grafana": "provisioning, dashboards and two passwords",
        "loki": "its configuration",
        "log-collector": "its configuration",
        "blackbox-exporter": "its configuration",
    }.items()
}
#: Services whose root is never exempt: the apps (any `app*` service) and the proxy.
NEVER_WRITABLE = ("proxy",)

_STRINGS = {"type": "array", "items": {"type": "string"}}
_STRING_LISTS_BY_SERVICE = {"type": "object", "additionalProperties": _STRINGS}

DEFAULTS: dict[str, dict[str, Any]] = {
    "read-only-exchange-keys": {
        "allowedEndpoints": SANDBOX_HOSTS,
        "exchanges": DEFAULT_EXCHANGES,
        "requireSandbox": True,
    },
    "app-containers-labelled": {"appImages": APP_IMAGES, "exchanges": DEFAULT_EXCHANGES},
    "container-capabilities-dropped": {"allowedCapabilities": ALLOWED_CAPABILITIES},
    "container-no-sensitive-mounts": {"allowedHostMounts": ALLOWED_HOST_MOUNTS},
    "container-ports-bound": {"publicPorts": [80, 443], "publicServices": ["proxy"]},
    "backend-network-internal": {"internalNetworkSuffixes": ["-backend"]},
    "data-volumes-protected": {"disposableVolumeSuffixes": ["-backup-metrics"]},
    "container-read-only-rootfs": {"writableServices": sorted(WRITABLE_REASONS)},
    "container-restart-bounded": {"maxRetries": 10},
    "monitoring-segmented": {
        "appNetworkSuffixes": ["-frontend", "-backend"],
        "controlPlaneNetworkSuffixes": ["-monitoring", "-metrics"],
        "controlPlaneServices": ["prometheus", "alertmanager", "grafana", "loki", "victorialogs"],
    },
}

SCHEMAS: dict[str, dict[str, dict[str, Any]]] = {
    "read-only-exchange-keys": {
        "allowedEndpoints": {**_STRINGS, "description": "Exchange API hosts the app may be pointed at."},
        "exchanges": {
            **_STRINGS, "description": "Exchange names whose env prefix or file name marks a credential.",
        },
        "requireSandbox": {"type": "boolean", "description": "Require <EXCHANGE>_SANDBOX=true."},
    },
    "app-containers-labelled": {
        "appImages": {**_STRINGS, "description": "Image repositories (without tag) of the trading app."},
        "exchanges": {**_STRINGS, "description": "Exchange names whose settings mark an app container."},
    },
    "container-capabilities-dropped": {
        "allowedCapabilities": {
            **_STRING_LISTS_BY_SERVICE,
            "description": "Capabilities a service (paper-trading.service label) may add back.",
        },
    },
    "container-no-sensitive-mounts": {
        "allowedHostMounts": {
            **_STRING_LISTS_BY_SERVICE,
            "description": "Host paths a service may bind-mount read-only ('dir/' allows files under dir).",
        },
    },
    "container-ports-bound": {
        "publicPorts": {
            "type": "array", "items": {"type": "integer"},
            "description": "Host ports allowed on a public address.",
        },
        "publicServices": {**_STRINGS, "description": "Services allowed to publish on a public address."},
    },
    "backend-network-internal": {
        "internalNetworkSuffixes": {**_STRINGS, "description": "Name suffixes of internal networks."},
    },
    "data-volumes-protected": {
        "disposableVolumeSuffixes": {
            **_STRINGS, "description": "Name suffixes of volumes holding only derived data (not protected).",
        },
    },
    "container-read-only-rootfs": {
        "writableServices": {
            **_STRINGS, "description": "Services that may keep a writable root (never an app or the proxy).",
        },
    },
    "container-restart-bounded": {
        "maxRetries": {"type": "integer", "minimum": 1, "description": "Highest on-failure retry count."},
    },
    "monitoring-segmented": {
        "appNetworkSuffixes": {
            **_STRINGS, "description": "Name suffixes of the only networks apps may join.",
        },
        "controlPlaneNetworkSuffixes": {
            **_STRINGS, "description": "Name suffixes of the only networks the control plane may join "
                                       "(disjoint from appNetworkSuffixes).",
        },
        "controlPlaneServices": {
            **_STRINGS, "description": "Services (paper-trading.service) of the monitoring control plane.",
        },
    },
}


def schema(policy: str) -> PolicyConfigSchema | None:
    properties = SCHEMAS.get(policy)
    if not properties:
        return None
    with_defaults = {key: {**spec, "default": DEFAULTS[policy][key]} for key, spec in properties.items()}
    return PolicyConfigSchema(properties=with_defaults)


def config(args: ResourceValidationArgs, policy: str) -> dict[str, Any]:
    """The policy's defaults overlaid with what the engine (or the offline check) passed."""
    merged = dict(DEFAULTS.get(policy, {}))
    given: Mapping[str, Any] = args.get_config() or {}
    for key, value in given.items():
        if key != "enforcementLevel":
            merged[key] = value
    return merged
