"""What to validate and how: one immutable options object shared by the CLI and the gate."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HealthPaths(_Model):
    """The app contract's paths; also the stack config's `app.health` (one definition)."""

    basic: str = "/health"
    detailed: str = "/health/detailed"
    ready: str = "/health/ready"
    live: str = "/health/live"
    metrics: str = "/metrics"

    @field_validator("*")
    @classmethod
    def _rooted(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value


class ExchangeCredentials(_Model):
    """A key to ask the exchange about; `base_url` is the exchange's REST root."""

    exchange: Literal["binance", "kucoin"]
    api_key: SecretStr
    api_secret: SecretStr
    passphrase: SecretStr | None = None
    base_url: str

    @field_validator("base_url")
    @classmethod
    def _https_unless_loopback(cls, value: str) -> str:
        parts = urlsplit(value)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError("exchange base URL must be https:// (http only on loopback)")
        return value.rstrip("/")


class ValidationOptions(_Model):
    base_url: str
    color: Literal["blue", "green"] | None = None
    #: Overall deadline for the whole run, seconds.
    timeout: float = Field(default=30.0, gt=0, le=3600)
    #: Budget of one check including its retries, seconds.
    check_timeout: float = Field(default=5.0, gt=0, le=600)
    #: Extra attempts after a connection error or a 502/503/504, with exponential backoff.
    retries: int = Field(default=2, ge=0, le=10)
    backoff: float = Field(default=0.1, ge=0, le=10)
    ca_file: str | None = None
    insecure: bool = False
    #: TLS server name and Host header when the URL names another address (e.g. a tunnel).
    server_name: str | None = None
    #: Plain-HTTP URL of the same site, for the redirect check (derived for https on 443).
    http_url: str | None = None
    prometheus_url: str | None = None
    alertmanager_url: str | None = None
    #: Alertmanager basic auth (the deployment always requires it; user `prometheus`).
    alertmanager_user: str | None = None
    alertmanager_password: SecretStr | None = None
    grafana_url: str | None = None
    grafana_user: str | None = None
    grafana_password: SecretStr | None = None
    grafana_token: SecretStr | None = None
    expected_replicas: int | None = Field(default=None, ge=1, le=100)
    cert_min_days: int = Field(default=14, ge=0, le=3650)
    latency_threshold_ms: float = Field(default=500.0, gt=0)
    smoke_requests: int = Field(default=30, ge=1, le=10000)
    smoke_concurrency: int = Field(default=10, ge=1, le=256)
    rate_limit_path: str = "/api/auth/login"
    rate_limit_burst: int = Field(default=5, ge=0, le=100000)
    injection_path: str = "/api/search"
    paths: HealthPaths = HealthPaths()
    exchanges: tuple[ExchangeCredentials, ...] = ()
    skip: frozenset[str] = frozenset()
    #: security.audit_log: the audit file (release/audit.py, e.g. a copy of the volume's
    #: audit.jsonl) or Loki's base URL to query `{job="audit"}`; neither: the check skips.
    audit_log_file: str | None = None
    audit_loki_url: str | None = None
    audit_stack: str | None = None
    #: `LINE:SHA256`: the audit file's line LINE must hash to SHA256 (the deploy record's
    #: `auditHead` in Pulumi state), so a truncated or rewritten trail fails security.audit_log.
    audit_anchor: str | None = None
    #: security.firewall: the host's address as seen from here (never loopback), the ports that
    #: must answer (the proxy's public ports) and those that must not (anything else published).
    firewall_address: str | None = None
    firewall_open_ports: tuple[int, ...] = (80, 443)
    firewall_closed_ports: tuple[int, ...] = ()
    #: safety.background_work: the role the validated color must have. "standby": it must not
    #: work (a candidate before promotion); "active": it holds the work (after promotion, the
    #: switch's post-promotion checks). None: inferred from the app's `liveColor` (active when
    #: it names the validated color, standby otherwise).
    expect_work_role: Literal["standby", "active"] | None = None
    #: Whether the stack runs background work (queues or schedulers configured). The app's
    #: role "disabled" passes after promotion only when this is False; with True a disabled
    #: candidate fails too. None: not stated (a disabled live color then fails).
    work_enabled: bool | None = None

    @field_validator("firewall_address")
    @classmethod
    def _not_loopback(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            address = ipaddress.ip_address(value)
        except ValueError as exc:
            raise ValueError(f"firewall address {value!r} is not an IP address") from exc
        if address.is_loopback or address.is_unspecified:
            raise ValueError(f"firewall address {value}: probe from outside, not loopback/unspecified")
        return value

    @field_validator("audit_anchor")
    @classmethod
    def _anchor(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[1-9][0-9]*:[0-9a-f]{64}", value):
            raise ValueError(f"audit anchor {value!r} is not LINE:SHA256 (the deploy record's auditHead)")
        return value

    @field_validator("firewall_open_ports", "firewall_closed_ports")
    @classmethod
    def _tcp_ports(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for port in value:
            if not 1 <= port <= 65535:
                raise ValueError(f"{port} is not a TCP port (1-65535)")
        return value

    @field_validator("base_url", "http_url", "prometheus_url", "alertmanager_url", "grafana_url",
                     "audit_loki_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @property
    def is_https(self) -> bool:
        return urlsplit(self.base_url).scheme == "https"

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def tls_name(self) -> str:
        """The name the certificate must be valid for."""
        return self.server_name or self.host

    @property
    def redirect_url(self) -> str | None:
        if self.http_url:
            return self.http_url
        parts = urlsplit(self.base_url)
        if parts.scheme == "https" and parts.port in (None, 443):
            return f"http://{parts.hostname}"
        return None
