"""alertmanager.yml: route by severity to a receiver set from config.

With `monitoring.alertmanager.webhookUrl` set, both receivers post to that webhook
(critical ones at once and repeated hourly). The URL is a secret, so when it is set
the whole file is uploaded as a secret (Alertmanager 0.25, the Debian amtool, has no
`url_file` for webhooks). Without it alerts stay visible in the UI and Grafana only.

Alertmanager requires basic auth (`web_config`): whoever could reach it unauthenticated could
silence the paper-mode and real-trade alerts.
"""

from __future__ import annotations

from typing import Any

from settings import Settings

from . import layout
from ._yaml import dump

REDACTED_URL = "https://webhook.invalid/redacted"


def _receiver(name: str, url: str | None) -> dict[str, Any]:
    receiver: dict[str, Any] = {"name": name}
    if url:
        receiver["webhook_configs"] = [{"url": url, "send_resolved": True, "max_alerts": 50}]
    return receiver


def alertmanager_config(settings: Settings, webhook_url: str | None) -> str:
    """`webhook_url` is passed in (not read from settings) so the component can keep it secret."""
    del settings  # same signature as every builder; routing does not depend on other settings yet
    document: dict[str, Any] = {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": "default",
            "group_by": ["alertname", "color", "instance"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                {
                    "receiver": "critical",
                    "matchers": ['severity="critical"'],
                    "group_wait": "0s",
                    "group_interval": "1m",
                    "repeat_interval": "1h",
                },
                {"receiver": "default", "matchers": ['severity="warning"']},
            ],
        },
        "inhibit_rules": [{
            "source_matchers": ['severity="critical"'],
            "target_matchers": ['severity="warning"'],
            "equal": ["alertname", "instance"],
        }],
        "receivers": [_receiver("default", webhook_url), _receiver("critical", webhook_url)],
    }
    return dump(document, "alertmanager.yml")


def web_config(bcrypt_hash: str) -> str:
    """`--web.config.file`: every endpoint (UI, API, silences, /-/ready) needs basic auth.

    One user, `layout.ALERTMANAGER_USER`, for Prometheus, Grafana and the validation checks;
    the hash comes from pulumi-random (`RandomPassword.bcrypt_hash`), the file is a secret.
    """
    if not bcrypt_hash.startswith("$2"):
        raise ValueError("alertmanager web config: the password hash must be a bcrypt hash ($2...)")
    return dump({"basic_auth_users": {layout.ALERTMANAGER_USER: bcrypt_hash}}, "alertmanager web config")
