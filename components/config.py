"""Typed stack configuration for the `paper-trading:` namespace.

Every key is validated before a single resource is registered: a typo or an unsafe
value stops the program with one message naming every offending key by its config
path. Paper-trading mode, real trades and exchange permissions are typed as literals,
so no value other than the safe one can even be represented.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import pulumi
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from validation.options import HealthPaths

from .versions import nginx_floor_problem

PROJECT = "paper-trading"
Color = Literal["blue", "green"]
COLORS: tuple[Color, Color] = ("blue", "green")


def other_color(color: str) -> Color:
    """The idle color when `color` is live: the one on the preview listener."""
    return "green" if color == "blue" else "blue"


class ConfigError(pulumi.RunError):
    """Raised for invalid stack config; `RunError` makes Pulumi print only the message."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "invalid stack configuration:\n  " + "\n  ".join(problems)
        )


class _Model(BaseModel):
    """Base for every config object: camelCase keys, unknown keys rejected, immutable."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        strict=False,
    )

    @model_validator(mode="before")
    @classmethod
    def _keep_nested_defaults(cls, data: Any) -> Any:
        """A partly set object keeps the defaults of the keys it leaves out.

        `app: {limits: {cpus: 2}}` means "512 MiB (the default) and 2 CPUs", not "memoryMb is
        missing": an object's default (e.g. `Limits(memory_mb=512, cpus=1.0)`) is merged under
        what the stack sets, so a key that has a default never has to be set (issue 13, item 11).
        """
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            key = field.alias if field.alias in merged else name
            given = merged.get(key)
            if not isinstance(given, dict):
                continue
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                merged[key] = _under(default.model_dump(by_alias=True), given)
        return merged


def _under(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`given` with `defaults` filled in where it says nothing, object by object."""
    out = dict(given)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _under(value, out[key])
    return out


def _pinned(ref: str) -> str:
    """An image reference must carry an explicit tag or digest, never `latest`."""
    if not ref or any(c.isspace() for c in ref):
        raise ValueError("must be an image reference like repo/name:tag")
    if "@sha256:" in ref:
        return ref
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        raise ValueError(f"image {ref!r} must be pinned to a tag or digest")
    if last.rsplit(":", 1)[1] in ("", "latest"):
        raise ValueError(f"image {ref!r} must not use the 'latest' tag")
    return ref


def _ipv4_address(value: str) -> str:
    """A bind address Docker accepts for a published port."""
    import ipaddress

    try:
        ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise ValueError("must be an IPv4 address such as 127.0.0.1") from exc
    return value


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")


class SslConfig(_Model):
    enabled: bool = True
    cert_path: str = "/etc/ssl/paper-trading/fullchain.pem"
    key_path: str = "/etc/ssl/paper-trading/privkey.pem"

    @field_validator("cert_path", "key_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path on the Docker host")
        return value


class ServerConfig(_Model):
    """`port` is the app's listen port inside its container; `host` the public name."""

    port: int = Field(default=3000, ge=1024, le=65535)
    host: str = Field(default="localhost", min_length=1)
    ssl: SslConfig = SslConfig()

    @field_validator("host")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not _HOSTNAME.match(value):
            raise ValueError("must be a DNS name such as paper.example.com (no scheme, port or path)")
        return value


class DatabaseConfig(_Model):
    url: SecretStr | None = None
    ssl: bool = False
    pool_size: int = Field(default=10, ge=1, le=200)

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        # The message never repeats the value: it is a secret.
        if value is not None and not value.get_secret_value().startswith(("postgres://", "postgresql://")):
            raise ValueError("must be a postgres:// or postgresql:// URL")
        return value


class ExchangeConfig(_Model):
    api_key: SecretStr
    api_secret: SecretStr | None = None
    passphrase: SecretStr | None = None
    sandbox: bool = True
    permissions: Literal["READ_ONLY"]
    base_url: str | None = None

    @field_validator("base_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("must be an https:// URL")
        return value


SANDBOX_URLS = {
    "binance": "https://testnet.binance.vision",
    "kucoin": "https://openapi-sandbox.kucoin.com",
}
PRODUCTION_URLS = {
    "binance": "https://api.binance.com",
    "kucoin": "https://api.kucoin.com",
}


class ExchangesConfig(_Model):
    binance: ExchangeConfig | None = None
    kucoin: ExchangeConfig | None = None

    @model_validator(mode="after")
    def _binance_has_no_passphrase(self) -> ExchangesConfig:
        if self.binance is not None and self.binance.passphrase is not None:
            raise ValueError("binance.passphrase: Binance keys have no passphrase")
        return self

    def configured(self) -> dict[str, ExchangeConfig]:
        """The exchanges that have a key, by name, in a stable order."""
        found = {"binance": self.binance, "kucoin": self.kucoin}
        return {name: ex for name, ex in found.items() if ex is not None}

    def base_url(self, name: str) -> str:
        exchange = self.configured()[name]
        if exchange.base_url:
            return exchange.base_url
        return (SANDBOX_URLS if exchange.sandbox else PRODUCTION_URLS)[name]


class PrometheusConfig(_Model):
    enabled: bool = True
    port: int = Field(default=9090, ge=1, le=65535)
    retention: str = Field(default="15d", pattern=r"^[0-9]+[smhdwy]$")
    scrape_interval: str = Field(default="15s", pattern=r"^[0-9]+[smh]$")
    evaluation_interval: str = Field(default="15s", pattern=r"^[0-9]+[smh]$")


class GrafanaConfig(_Model):
    enabled: bool = True
    port: int = Field(default=3001, ge=1, le=65535)
    admin_password: SecretStr | None = None


class AlertmanagerConfig(_Model):
    enabled: bool = True
    port: int = Field(default=9093, ge=1, le=65535)
    webhook_url: SecretStr | None = None


#: Log stores the program can deploy (docs/monitoring.md, "Log aggregation on machines without a registry").
LogsBackend = Literal["loki", "victorialogs"]


class LogsConfig(_Model):
    enabled: bool = True
    #: `loki`: Loki + promtail (registry images). `victorialogs`: VictoriaLogs + vlagent (Apache-2.0,
    #: built from the Go module proxy by scripts/build-test-images: images/victoria-logs, images/vlagent).
    backend: LogsBackend = "loki"
    #: The log store's published port (Loki's 3100 or VictoriaLogs' 9428 inside the container).
    port: int = Field(default=3100, ge=1, le=65535)
    retention: str = Field(default="168h", pattern=r"^[0-9]+h$")


class AlertThresholds(_Model):
    """Alert thresholds (docs/monitoring.md); the paper-trading safety alerts have none: they fire at once."""

    error_rate: float = Field(default=0.05, gt=0, lt=1)
    latency_p95_seconds: float = Field(default=1.0, gt=0, le=60)
    cert_expiry_days: int = Field(default=14, ge=1, le=90)
    backup_max_age_hours: int = Field(default=26, ge=1, le=24 * 14)
    disk_free_ratio: float = Field(default=0.10, gt=0, lt=1)
    memory_available_ratio: float = Field(default=0.10, gt=0, lt=1)


class MonitoringConfig(_Model):
    prometheus: PrometheusConfig = PrometheusConfig()
    grafana: GrafanaConfig = GrafanaConfig()
    alertmanager: AlertmanagerConfig = AlertmanagerConfig()
    logs: LogsConfig = LogsConfig()
    bind_address: str = "127.0.0.1"
    alerts: AlertThresholds = AlertThresholds()
    # Probes readiness, the live color (X-Deployment-Color) and certificate expiry.
    blackbox_image: str = "prom/blackbox-exporter:v0.25.0"
    # `Limits` is defined further down: a factory defers building the default.
    exporter_limits: Limits = Field(default_factory=lambda: Limits(memory_mb=128, cpus=0.25))

    @field_validator("blackbox_image")
    @classmethod
    def _blackbox_pinned(cls, value: str) -> str:
        return _pinned(value)

    @field_validator("bind_address")
    @classmethod
    def _ipv4(cls, value: str) -> str:
        return _ipv4_address(value)


#: The most replicas one color may run (the proxy's scrape relay admits exactly these names).
MAX_REPLICAS = 20


class ColorConfig(_Model):
    image: str
    replicas: int = Field(default=2, ge=1, le=MAX_REPLICAS)

    @field_validator("image")
    @classmethod
    def _image_pinned(cls, value: str) -> str:
        return _pinned(value)


class DeploymentConfig(_Model):
    active_color: Color = "blue"
    blue: ColorConfig
    green: ColorConfig

    def color(self, color: Color) -> ColorConfig:
        return self.blue if color == "blue" else self.green

    @property
    def preview_color(self) -> Color:
        return other_color(self.active_color)


class Limits(_Model):
    """Per-container resource limits; memory in MiB, CPUs as a fraction of cores."""

    memory_mb: int = Field(ge=16, le=65536)
    cpus: float = Field(gt=0, le=64)


class AppConfig(_Model):
    health: HealthPaths = HealthPaths()
    limits: Limits = Limits(memory_mb=512, cpus=1.0)
    user: str = Field(default="1000:1000", pattern=r"^[1-9][0-9]*(:[1-9][0-9]*)?$")
    log_level: Literal["debug", "info", "warn", "error"] = "info"


class RateLimit(_Model):
    rate_per_second: int = Field(ge=1, le=100000)
    burst: int = Field(ge=0, le=100000)


class ProxyConfig(_Model):
    public_address: str = "0.0.0.0"
    http_port: int = Field(default=80, ge=1, le=65535)
    https_port: int = Field(default=443, ge=1, le=65535)
    preview_port: int = Field(default=8443, ge=1, le=65535)
    api_rate_limit: RateLimit = RateLimit(rate_per_second=20, burst=40)
    auth_rate_limit: RateLimit = RateLimit(rate_per_second=1, burst=5)
    worker_shutdown_timeout: str = Field(default="30s", pattern=r"^[0-9]+[sm]$")
    limits: Limits = Limits(memory_mb=256, cpus=1.0)
    #: nginx `worker_connections`: client and upstream connections per worker (issue 13, item 3).
    worker_connections: int = Field(default=4096, ge=512, le=65536)
    #: Open files per process: nginx's `worker_rlimit_nofile` and the container's `nofile` ulimit
    #: (soft = hard), one value for both. At least 2 x workerConnections: a proxied request
    #: holds a client and an upstream socket.
    open_files_limit: int = Field(default=16384, ge=1024, le=1048576)
    #: The container's `nproc` ulimit (soft = hard). The kernel counts every process of the
    #: proxy's uid (101) on the host, not only this container's (docs/proxy.md, issue 13, item 4).
    max_processes: int = Field(default=128, ge=32, le=4096)

    @field_validator("public_address")
    @classmethod
    def _ipv4(cls, value: str) -> str:
        return _ipv4_address(value)

    @property
    def worker_processes(self) -> int:
        """nginx `worker_processes`: one per (started) CPU of the container's limit, 1 to 8."""
        return max(1, min(8, math.ceil(self.limits.cpus)))

    @model_validator(mode="after")
    def _limits_fit_nginx(self) -> ProxyConfig:
        if self.open_files_limit < 2 * self.worker_connections:
            raise ValueError(
                f"openFilesLimit: must be at least 2 x proxy.workerConnections "
                f"({2 * self.worker_connections}): each proxied connection holds two files"
            )
        # Old and new workers overlap during reloads; plus master, init, healthcheck, docker exec.
        needed = 4 * self.worker_processes + 16
        if self.max_processes < needed:
            raise ValueError(
                f"maxProcesses: must be at least {needed} (4 x {self.worker_processes} worker "
                "processes for overlapping reloads, plus 16 for master, init, healthchecks and exec)"
            )
        return self


class Images(_Model):
    """Infrastructure images, pinned by tag; override per stack to move versions."""

    #: Must name an exact release at or above components/versions.py's NGINX_FLOOR (issue 13, item 2).
    nginx: str = "nginx:1.30.6-alpine"
    #: The host firewall's guard: python3 + nftables. No official nftables image exists, so it is
    #: built from this repo's images/host-guard/Dockerfile (Debian's nftables) and pushed to the
    #: operator's registry or built on the host (docs/security.md, "Host firewall").
    host_guard: str = "paper-trading/host-guard:1.0.6"
    postgres: str = "postgres:15.10-alpine"
    redis: str = "redis:7.4.1-alpine"
    rabbitmq: str = "rabbitmq:3.13.7-alpine"
    prometheus: str = "prom/prometheus:v2.55.1"
    alertmanager: str = "prom/alertmanager:v0.27.0"
    grafana: str = "grafana/grafana:11.3.1"
    loki: str = "grafana/loki:3.3.0"
    promtail: str = "grafana/promtail:3.3.0"
    #: `monitoring.logs.backend: victorialogs`. The official victoriametrics/* images are distroless
    #: (no program to run a healthcheck), so the defaults are this repo's images/victoria-logs and
    #: images/vlagent, built on the host by scripts/build-test-images like host_guard.
    victoria_logs: str = "paper-trading/victoria-logs:1.52.2"
    vlagent: str = "paper-trading/vlagent:1.52.2"
    node_exporter: str = "prom/node-exporter:v1.8.2"
    cadvisor: str = "gcr.io/cadvisor/cadvisor:v0.49.1"
    postgres_exporter: str = "quay.io/prometheuscommunity/postgres-exporter:v0.16.0"
    redis_exporter: str = "oliver006/redis_exporter:v1.66.0"
    nginx_exporter: str = "nginx/nginx-prometheus-exporter:1.3.0"
    #: Any image with fail2ban and python3 on the PATH (docs/security.md, "Intrusion detection").
    ids: str = "crazymax/fail2ban:1.1.0"

    @field_validator("*")
    @classmethod
    def _image_pinned(cls, value: str) -> str:
        return _pinned(value)

    @field_validator("nginx")
    @classmethod
    def _nginx_current(cls, value: str) -> str:
        # Also the mandatory `proxy-image-current` policy; here so a deploy without the pack refuses too.
        problem = nginx_floor_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class DatastoreLimits(_Model):
    postgres: Limits = Limits(memory_mb=1024, cpus=1.0)
    redis: Limits = Limits(memory_mb=256, cpus=0.5)
    rabbitmq: Limits = Limits(memory_mb=512, cpus=0.5)
    monitoring: Limits = Limits(memory_mb=512, cpus=0.5)


class BackupRetention(_Model):
    """Backups are removed when beyond `keepCount` OR older than `maxAgeDays`; the newest good one never."""

    keep_count: int = Field(default=14, ge=1, le=1000)
    max_age_days: int = Field(default=30, ge=1, le=3650)


class BackupConfig(_Model):
    """Scheduled logical backups (docs/backup.md). `secondTarget` is an absolute host path bind-mounted."""

    enabled: bool = True
    interval_minutes: int = Field(default=360, ge=5, le=10080)
    retention: BackupRetention = BackupRetention()
    second_target: str | None = None
    rabbitmq_definitions: bool = True
    redis_snapshot: bool = True
    restore_check_days: int = Field(default=7, ge=0, le=365)
    limits: Limits = Limits(memory_mb=256, cpus=0.5)

    @field_validator("second_target")
    @classmethod
    def _host_path(cls, value: str | None) -> str | None:
        if value is None:
            return value
        forbidden = ("", "/var/lib/docker")
        if not value.startswith("/") or value.rstrip("/") in forbidden or ".." in value.split("/"):
            raise ValueError("must be an absolute host path (not /, not containing '..')")
        if any(c.isspace() or c in ":,\\" for c in value):
            raise ValueError("must not contain whitespace, ':' , ',' or backslashes")
        return value.rstrip("/")


class ValidationConfig(_Model):
    """The promotion gate's post-deploy checks (see docs/validation.md).

    `previewUrl` defaults to the proxy's preview listener on the Docker host's loopback
    (`http(s)://127.0.0.1:<proxy.previewPort>`); point it at an SSH tunnel when the Docker
    host is remote. `rateLimitBurst` defaults to `proxy.authRateLimit.burst`.
    """

    #: Always on: there is no configuration in which traffic moves unchecked.
    enabled: Literal[True] = True
    preview_url: str | None = None
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    check_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    retries: int = Field(default=2, ge=0, le=10)
    latency_threshold_ms: float = Field(default=500.0, gt=0, le=60000)
    cert_min_days: int = Field(default=14, ge=0, le=365)
    rate_limit_path: str = Field(default="/api/auth/login", pattern=r"^/")
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


class FirewallConfig(_Model):
    """Host firewall (components/firewall.py, docs/security.md "Host firewall").

    An nftables table per stack (`inet paper_trading_guard_<namePrefix>`) loaded by the `host-guard`
    container: from outside, only the proxy's public ports (`proxy.httpPort`/`httpsPort` on
    `proxy.publicAddress`) reach a container, each source limited in new connections; banned
    addresses (the IDS's decisions) are dropped first.
    """

    enabled: bool = True
    #: New connections per second one source address may open to the public ports ...
    new_connections_per_second: int = Field(default=50, ge=1, le=100000)
    #: ... and how many above that rate it may open at once (nft `burst`, packets).
    new_connections_burst: int = Field(default=100, ge=0, le=100000)
    #: Sources (addresses or CIDRs) that may reach every published port (and the host, see
    #: filterHostInput): the operator's network. Empty: nobody.
    admin_sources: tuple[str, ...] = ()
    #: Also filter the host's own sockets (INPUT): only the public ports, `hostPorts`, admin
    #: sources, ICMP and replies. Off: only traffic to containers is filtered.
    filter_host_input: bool = False
    #: Host TCP ports open to everybody when filterHostInput is on (ssh: keep 22 or an admin source).
    host_ports: tuple[int, ...] = (22,)
    #: Extra exact names of Docker bridges this stack's containers use, beyond its own networks'
    #: bridges (which the program names itself). No wildcards: `br-*` would trust a host uplink.
    docker_interfaces: tuple[str, ...] = ()
    #: Seconds between checks that the table is still loaded (reloaded if not).
    check_interval_seconds: int = Field(default=5, ge=1, le=3600)
    limits: Limits = Limits(memory_mb=64, cpus=0.25)

    @field_validator("admin_sources")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        out = []
        for item in value:
            try:
                out.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or CIDR (e.g. 198.51.100.0/24)") from exc
        return tuple(out)

    @field_validator("host_ports")
    @classmethod
    def _ports(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for port in value:
            if not 1 <= port <= 65535:
                raise ValueError(f"{port} is not a TCP port (1-65535)")
        return value

    @field_validator("docker_interfaces")
    @classmethod
    def _interfaces(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", name):
                raise ValueError(f"security.firewall.dockerInterfaces: {name!r} is not an exact interface "
                                 "name (letters, digits, _ . -, at most 15; no wildcards: the stack's own "
                                 "bridges are named by the program)")
        return value


class IdsJail(_Model):
    """One detector: `maxRetry` matching requests from one address within `findTimeSeconds` ban it."""

    find_time_seconds: int = Field(ge=1, le=86400)
    max_retry: int = Field(ge=1, le=100000)
    enabled: bool = True


def _network(value: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP address or CIDR (e.g. 203.0.113.7 or 10.0.0.0/8)") from exc


class IdsConfig(_Model):
    """Intrusion detection with automatic bans (components/ids.py, docs/security.md "Intrusion detection").

    fail2ban reads the proxy's JSON access log; a ban is a decision file the host guard turns
    into an nftables set element for `banTimeSeconds`.
    """

    enabled: bool = True
    #: How long a ban lasts; the decision file is removed (unban) when it ends.
    ban_time_seconds: int = Field(default=3600, ge=10, le=30 * 86400)
    #: Never banned (addresses or CIDRs): monitoring, the operator's address. Loopback always.
    allow_list: tuple[str, ...] = ()
    #: Scanners: 404s on typical probe paths (.php, .env, .git, wp-, cgi-bin, admin panels...).
    probe: IdsJail = IdsJail(find_time_seconds=60, max_retry=10)
    #: Brute force: 401/403/429 answers to POST on `validation.rateLimitPath` (the auth path).
    auth: IdsJail = IdsJail(find_time_seconds=60, max_retry=8)
    #: Injection probes: requests the proxy blocked as SQLi/XSS/traversal/command injection.
    injection: IdsJail = IdsJail(find_time_seconds=300, max_retry=3)
    #: Any 4xx burst from one address.
    errors: IdsJail = IdsJail(find_time_seconds=10, max_retry=60)
    #: `IdsBanStorm` fires when more bans than this happen within 5 minutes.
    ban_storm_threshold: int = Field(default=20, ge=1, le=100000)
    #: The proxy's access-log file is rotated beyond this size (one old file kept).
    access_log_max_mb: int = Field(default=16, ge=1, le=1024)

    @field_validator("allow_list")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_network(item) for item in value)


class AuditConfig(_Model):
    """Append-only audit trail of operations and requests (docs/security.md, "Audit trail")."""

    #: Off: no operation records are appended (the log collector still ships an existing file).
    enabled: bool = True
    #: How long Loki keeps the audit records and the proxy's request log; never less than
    #: `monitoring.logs.retention` (the other logs).
    retention_days: int = Field(default=400, ge=1, le=3650)
    #: The actor recorded when `PAPER_TRADING_ACTOR` is unset (else the OS user), e.g. `ci`.
    actor: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.@+-]{1,64}$")
    #: On: an operation whose intent record cannot be appended (full disk, unwritable or missing
    #: volume) is refused before it acts, and one whose outcome record cannot be appended fails
    #: loudly. Off: a warning, and the operation goes on.
    fail_closed: bool = True


class SecurityConfig(_Model):
    """The security layer: host firewall, intrusion detection, audit trail."""

    firewall: FirewallConfig = FirewallConfig()
    ids: IdsConfig = IdsConfig()
    audit: AuditConfig = AuditConfig()


#: A queue name the stack declares: RabbitMQ's limit is 255 bytes; the app reads the list from
#: one comma-separated env (WORK_QUEUES) and Prometheus matches it in a regex, so the characters
#: are limited to ones that need no quoting anywhere. `amq.` names are reserved by the broker.
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
_PROM_DURATION = re.compile(r"^(?:[0-9]+(?:ms|[smhdwy]))+$")
_DURATION_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
                      "w": 7 * 86_400_000, "y": 365 * 86_400_000}


def duration_ms(value: str) -> int:
    """A Prometheus duration (`2m`, `1h30m`, `500ms`) in milliseconds."""
    return sum(int(n) * _DURATION_UNITS_MS[u] for n, u in re.findall(r"([0-9]+)(ms|[smhdwy])", value))


#: The handoff must leave room for a crashed holder's lease to expire and for the new color
#: to take it on its next attempt: at least this many lease TTLs.
HANDOFF_LEASE_TTLS = 2


class WorkersConfig(_Model):
    """Background work (queue consumers, schedulers) that only the live color runs (issue 15).

    The app gets these as WORK_* envs (components/app.py); the queues are declared by the
    broker's definitions with single active consumer (components/datastores.py); the switch
    waits up to `handoffTimeoutSeconds` for the new color to hold the lease and the old one to
    have no consumers; `NoActiveWorkers` pages when no color holds the work for `noActiveWorkersFor`.
    """

    #: Off: the apps run no consumers or schedulers (`role: disabled`); the worker alerts are off.
    enabled: bool = True
    #: Queues the live color consumes (durable, `x-single-active-consumer`).
    queues: tuple[str, ...] = ("paper-trading.orders",)
    #: The work lease's TTL in Redis: a crashed or partitioned holder loses the work this long
    #: after its last renewal.
    lease_ttl_ms: int = Field(default=3000, ge=500, le=60000)
    #: Unacknowledged messages per consumer (AMQP basic.qos); 0 (unlimited) is not allowed.
    prefetch: int = Field(default=10, ge=1, le=10000)
    #: Scheduler tick period.
    tick_ms: int = Field(default=1000, ge=100, le=3_600_000)
    #: How long the switch waits for the new color to hold the lease and the old one to have no
    #: consumers before it switches back.
    handoff_timeout_seconds: float = Field(default=15.0, gt=0, le=600)
    #: `NoActiveWorkers` fires when no color holds the work for this long (Prometheus duration).
    no_active_workers_for: str = "2m"

    @field_validator("queues")
    @classmethod
    def _queue_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must list at least one queue")
        for name in value:
            if not _QUEUE_NAME.match(name):
                raise ValueError(
                    f"{name!r} is not a queue name this stack accepts: 1-200 characters, letters, "
                    "digits and . _ : - only, starting with a letter or digit"
                )
            if name.startswith("amq."):
                raise ValueError(f"{name!r}: names starting with 'amq.' are reserved by RabbitMQ")
        duplicates = sorted({name for name in value if value.count(name) > 1})
        if duplicates:
            raise ValueError(f"lists {', '.join(map(repr, duplicates))} more than once")
        return value

    @field_validator("no_active_workers_for")
    @classmethod
    def _duration(cls, value: str) -> str:
        if not _PROM_DURATION.match(value) or duration_ms(value) == 0:
            raise ValueError(f"{value!r} must be a Prometheus duration such as 2m or 1h30m")
        return value

    @model_validator(mode="after")
    def _handoff_outlasts_a_lease(self) -> WorkersConfig:
        needed_ms = HANDOFF_LEASE_TTLS * self.lease_ttl_ms
        if self.handoff_timeout_seconds * 1000 < needed_ms:
            raise ValueError(
                f"handoffTimeoutSeconds: must be at least {needed_ms / 1000:g} "
                f"({HANDOFF_LEASE_TTLS} x workers.leaseTtlMs = {self.lease_ttl_ms} ms): a crashed "
                "holder's lease must be able to expire, and the new color take it, within the handoff"
            )
        if duration_ms(self.no_active_workers_for) <= self.handoff_timeout_seconds * 1000:
            raise ValueError(
                f"noActiveWorkersFor: must be longer than workers.handoffTimeoutSeconds "
                f"({self.handoff_timeout_seconds:g} s): a handoff in progress is not an outage"
            )
        return self


class Settings(_Model):
    """The whole `paper-trading:` namespace."""

    environment: Literal["production", "staging", "development"] = "production"
    paper_trading_mode: Literal[True]
    allow_real_trades: Literal[False]
    name_prefix: str = Field(default="paper-trading", pattern=r"^[a-z][a-z0-9-]{1,30}$")
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    exchanges: ExchangesConfig = ExchangesConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    deployment: DeploymentConfig
    app: AppConfig = AppConfig()
    proxy: ProxyConfig = ProxyConfig()
    images: Images = Images()
    limits: DatastoreLimits = DatastoreLimits()
    backup: BackupConfig = BackupConfig()
    validation: ValidationConfig = ValidationConfig()
    security: SecurityConfig = SecurityConfig()
    workers: WorkersConfig = WorkersConfig()

    @model_validator(mode="after")
    def _production_is_tls_only(self) -> Settings:
        if self.environment == "production" and not self.server.ssl.enabled:
            raise ValueError("server.ssl.enabled: production requires TLS")
        ports = [self.proxy.http_port, self.proxy.https_port, self.proxy.preview_port]
        if len(set(ports)) != len(ports):
            raise ValueError("proxy: httpPort, httpsPort and previewPort must differ")
        clash = _port_clash(self)
        if clash:
            raise ValueError(clash)
        for name in self.validation.skip:
            applies = SKIPPABLE_CHECKS[name](self)
            if applies is not None:
                raise ValueError(
                    f"validation.skip: {name!r} applies to this stack ({applies}); it cannot be skipped"
                )
        return self


def _port_clash(settings: Settings) -> str | None:
    """Two published host ports that would collide on the Docker host, named by key."""
    proxy, mon = settings.proxy, settings.monitoring
    published = [
        ("proxy.httpPort", proxy.public_address, proxy.http_port, True),
        ("proxy.httpsPort", proxy.public_address, proxy.https_port, settings.server.ssl.enabled),
        ("proxy.previewPort", "127.0.0.1", proxy.preview_port, True),
        ("monitoring.prometheus.port", mon.bind_address, mon.prometheus.port, mon.prometheus.enabled),
        ("monitoring.alertmanager.port", mon.bind_address, mon.alertmanager.port, mon.alertmanager.enabled),
        ("monitoring.grafana.port", mon.bind_address, mon.grafana.port, mon.grafana.enabled),
        ("monitoring.logs.port", mon.bind_address, mon.logs.port, mon.logs.enabled),
    ]
    active = [(key, address, port) for key, address, port, on in published if on]
    for i, (key, address, port) in enumerate(active):
        for other, other_address, other_port in active[:i]:
            overlap = address == other_address or "0.0.0.0" in (address, other_address)
            if port == other_port and overlap:
                return f"{key}: host port {port} is already published by {other}"
    return None


def _holds_secret(annotation: Any) -> bool:
    import typing

    return annotation is SecretStr or any(_holds_secret(a) for a in typing.get_args(annotation))


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _nested_models(a)]


def _secret_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        key = (*prefix, field.alias or name)
        if _holds_secret(field.annotation):
            found.append(key)
        for sub in _nested_models(field.annotation):
            found.extend(_secret_paths(sub, key))
    return found


#: Every key the models type as a secret (`SecretStr`), by config path. Pulumi marks secrecy per
#: top-level key: once any path under `exchanges` is set with `--secret`, the whole object arrives
#: secret, so the program also reads the stack file to see how each of these leaves is stored.
SECRET_PATHS: tuple[tuple[str, ...], ...] = tuple(_secret_paths(Settings))


def _is_secure(node: Any) -> bool:
    return isinstance(node, dict) and set(node) == {"secure"}


def plain_secret_leaves(stored: Mapping[str, Any], source: str) -> list[str]:
    """Problems for secret keys a stack file's `config:` holds in plain text (values never shown).

    `stored` is the file's `config:` mapping as written (`{secure: ...}` for an encrypted value).
    A leaf is fine when it, or an object above it, is stored `secure:`.
    """
    problems: list[str] = []
    for path in SECRET_PATHS:
        node: Any = stored.get(f"{PROJECT}:{path[0]}")
        for part in path[1:]:
            if _is_secure(node) or not isinstance(node, dict):
                break
            node = node.get(part)
        else:
            if node is not None and not _is_secure(node):
                problems.append(
                    f"{PROJECT}:{_path(path)}: is a secret but {source} holds it in plain text; remove "
                    f"it and set it with `pulumi config set --secret --path {_path(path)} ...`"
                )
    return problems


def stack_file_path(project_dir: Path, stack: str) -> Path:
    """Where the Pulumi CLI keeps `stack`'s config: `Pulumi.<stack>.yaml`, in `stackConfigDir` if set."""
    import yaml

    folder = project_dir
    project_file = project_dir / "Pulumi.yaml"
    if project_file.is_file():
        project = yaml.safe_load(project_file.read_text()) or {}
        if isinstance(project, dict) and isinstance(project.get("stackConfigDir"), str):
            folder = project_dir / project["stackConfigDir"]
    return folder / f"Pulumi.{stack.rsplit('/', 1)[-1]}.yaml"


def read_stack_file(path: Path) -> Mapping[str, Any]:
    """A stack file's `config:` mapping as written; a `ConfigError` naming the file if unreadable."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError([f"{path}: cannot read the stack file: {exc}"]) from None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(document, dict) or not isinstance(config or {}, dict):
        raise ConfigError([f"{path}: expected a mapping with a `config:` mapping"])
    return dict(config or {})


_FRIENDLY = {
    "extra_forbidden": "unknown key (is it misspelt?)",
    "missing": "is required",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
}


def _describe(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        if not expected:
            return "has a forbidden value"
        expected = expected.replace("'", "").replace("True", "true").replace("False", "false")
        return f"must be {expected}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}"
    if kind == "greater_than":
        return f"must be greater than {ctx['gt']}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx['pattern']}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return _FRIENDLY.get(kind, str(error["msg"]))


def _path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _decode(raw: str) -> Any:
    """Pulumi hands scalars as strings and objects as JSON strings."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _dig(tree: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def parse_settings(
    raw: Mapping[str, str],
    secret_keys: frozenset[str] = frozenset(),
    stored: Mapping[str, Any] | None = None,
    source: str = "the stack file",
) -> Settings:
    """Validate `{key: raw string}` (keys without namespace) into `Settings`.

    Collects every problem (schema, unsafe values, secrets stored in plain text)
    and raises one `ConfigError` listing them all by config path. `stored` is the
    stack file's `config:` as written, when there is one: each secret leaf in it
    must be stored `secure:` (the engine only says which top-level keys are secret).
    """
    data = {key: _decode(value) for key, value in raw.items()}
    problems: list[str] = [] if stored is None else plain_secret_leaves(stored, source)
    for path in SECRET_PATHS:
        named = any(p.startswith(f"{PROJECT}:{_path(path)}: ") for p in problems)
        if _dig(data, path) is not None and path[0] not in secret_keys and not named:
            problems.append(
                f"{PROJECT}:{_path(path)}: is a secret; set it with "
                f"`pulumi config set --secret --path {_path(path)} ...`"
            )
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            text = _describe(error)
            if error["type"] == "extra_forbidden" and len(loc) == 1 and "." in str(loc[0]):
                # `pulumi config set a.b 1` without --path makes one flat key named "a.b".
                text = f"unknown key; to set a nested key use `pulumi config set --path {loc[0]} ...`"
            nested = re.match(r"^([A-Za-z0-9_.]+): (.*)$", text)
            if error["type"] == "value_error" and nested:
                loc, text = loc + tuple(nested.group(1).split(".")), nested.group(2)
            problems.append(f"{PROJECT}:{_path(loc)}: {text}")
    if problems or settings is None:
        raise ConfigError(sorted(set(problems)))
    return settings


def load_settings(project_dir: str | Path | None = None) -> Settings:
    """Read the `paper-trading:` namespace from the running Pulumi program.

    With `project_dir` (the folder of `Pulumi.yaml`), the stack's file there is read too
    when it exists, and a secret key it holds in plain text is refused (issue 13, item 12).
    Without a stack file (config from elsewhere) that check is skipped: see README, Secrets.
    """
    from pulumi.runtime import config as runtime_config

    prefix = f"{PROJECT}:"
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    raw: dict[str, str] = {}
    secrets: set[str] = set()
    for full_key in sorted(k for k in keys if k.startswith(prefix)):
        value = runtime_config.get_config(full_key)
        if value is None:
            continue
        key = full_key[len(prefix):]
        raw[key] = value
        if runtime_config.is_config_secret(full_key) or full_key in set(
            runtime_config.get_config_secret_keys_env()
        ):
            secrets.add(key)
    stored: Mapping[str, Any] | None = None
    source = "the stack file"
    if project_dir is not None:
        path = stack_file_path(Path(project_dir), pulumi.get_stack())
        if path.is_file():
            stored, source = read_stack_file(path), path.name
    return parse_settings(raw, frozenset(secrets), stored, source)
