"""`validation`: the promotion gate's post-deploy checks and which of them a stack may skip.

The gate hands these to `validation.options.ValidationOptions`; a default both state is taken
from there (`_gate_default`), so the two cannot drift.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from validation.options import ValidationOptions

from .base import Model

if TYPE_CHECKING:
    from .stack import Settings


def _gate_default(option: str) -> Any:
    """The default of `ValidationOptions.<option>`: what the checks use when the stack says nothing."""
    return ValidationOptions.model_fields[option].default


class ValidationConfig(Model):
    """The promotion gate's post-deploy checks (see docs/validation.md).

    `previewUrl` defaults to the proxy's preview listener on the Docker host's loopback
    (`http(s)://127.0.0.1:<proxy.previewPort>`); point it at an SSH tunnel when the Docker
    host is remote. `rateLimitBurst` defaults to `proxy.authRateLimit.burst`.
    """

    #: Always on: there is no configuration in which traffic moves unchecked.
    enabled: Literal[True] = True
    preview_url: str | None = None
    timeout_seconds: float = Field(default=_gate_default("timeout"), gt=0, le=600)
    check_timeout_seconds: float = Field(default=_gate_default("check_timeout"), gt=0, le=120)
    retries: int = Field(default=_gate_default("retries"), ge=0, le=10)
    latency_threshold_ms: float = Field(default=_gate_default("latency_threshold_ms"), gt=0, le=60000)
    cert_min_days: int = Field(default=_gate_default("cert_min_days"), ge=0, le=365)
    rate_limit_path: str = Field(default=_gate_default("rate_limit_path"), pattern=r"^/")
    rate_limit_burst: int | None = Field(default=None, ge=0, le=100000)
    ca_file: str | None = None
    insecure: bool = False
    skip: tuple[str, ...] = ()
    prometheus_url: str | None = None
    alertmanager_url: str | None = None
    grafana_url: str | None = None

    @field_validator("preview_url", "prometheus_url", "alertmanager_url", "grafana_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("skip")
    @classmethod
    def _skippable_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name.startswith(("safety.", "health.")):
                raise ValueError(f"{name!r} can never be skipped: safety.* and health.* checks always run")
            if name not in SKIPPABLE_CHECKS:
                raise ValueError(
                    f"{name!r} cannot be skipped (skippable: {', '.join(sorted(SKIPPABLE_CHECKS))})"
                )
        return value


def _tls_off(settings: Settings) -> str | None:
    return None if not settings.server.ssl.enabled else "server.ssl.enabled is true"


def _service_off(service: str) -> Callable[[Settings], str | None]:
    def off(settings: Settings) -> str | None:
        enabled = getattr(settings.monitoring, service).enabled
        return None if not enabled else f"monitoring.{service}.enabled is true"

    return off


def _never_blocks(_settings: Settings) -> str | None:
    return None


#: The only checks a stack may skip, each with the condition under which it cannot apply
#: (None = may be skipped here; a string = why it applies). Performance is advisory only.
#: `Settings` checks them against the whole stack (settings/stack.py).
SKIPPABLE_CHECKS: dict[str, Callable[[Settings], str | None]] = {
    "security.certificate": _tls_off,
    "security.tls_protocol": _tls_off,
    "security.https_redirect": _tls_off,
    "monitoring.prometheus_targets": _service_off("prometheus"),
    "monitoring.prometheus_rules": _service_off("prometheus"),
    "monitoring.alertmanager": _service_off("alertmanager"),
    "monitoring.grafana_datasources": _service_off("grafana"),
    "monitoring.grafana_dashboards": _service_off("grafana"),
    "performance.p95_latency": _never_blocks,
}
