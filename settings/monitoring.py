"""`monitoring`: Prometheus, Grafana, Alertmanager, the log store and the alert thresholds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from .base import IPv4, Model, Pinned, PromInterval
from .limits import Limits


class PrometheusConfig(Model):
    enabled: bool = True
    port: int = Field(default=9090, ge=1, le=65535)
    retention: str = Field(default="15d", pattern=r"^[0-9]+[smhdwy]$")
    scrape_interval: PromInterval = "15s"
    evaluation_interval: PromInterval = "15s"


class GrafanaConfig(Model):
    enabled: bool = True
    port: int = Field(default=3001, ge=1, le=65535)
    admin_password: SecretStr | None = None


class AlertmanagerConfig(Model):
    enabled: bool = True
    port: int = Field(default=9093, ge=1, le=65535)
    webhook_url: SecretStr | None = None


#: Log stores the program can deploy (docs/monitoring.md, "Log aggregation on machines without a registry").
LogsBackend = Literal["loki", "victorialogs"]


class LogsConfig(Model):
    enabled: bool = True
    #: `loki`: Loki + promtail (registry images). `victorialogs`: VictoriaLogs + vlagent (Apache-2.0,
    #: built from the Go module proxy by scripts/build-test-images: images/victoria-logs, images/vlagent).
    backend: LogsBackend = "loki"
    #: The log store's published port (Loki's 3100 or VictoriaLogs' 9428 inside the container).
    port: int = Field(default=3100, ge=1, le=65535)
    retention: str = Field(default="168h", pattern=r"^[0-9]+h$")


class AlertThresholds(Model):
    """Alert thresholds (docs/monitoring.md); the paper-trading safety alerts have none: they fire at once."""

    error_rate: float = Field(default=0.05, gt=0, lt=1)
    latency_p95_seconds: float = Field(default=1.0, gt=0, le=60)
    cert_expiry_days: int = Field(default=14, ge=1, le=90)
    backup_max_age_hours: int = Field(default=26, ge=1, le=24 * 14)
    disk_free_ratio: float = Field(default=0.10, gt=0, lt=1)
    memory_available_ratio: float = Field(default=0.10, gt=0, lt=1)


class MonitoringConfig(Model):
    prometheus: PrometheusConfig = PrometheusConfig()
    grafana: GrafanaConfig = GrafanaConfig()
    alertmanager: AlertmanagerConfig = AlertmanagerConfig()
    logs: LogsConfig = LogsConfig()
    bind_address: IPv4 = "127.0.0.1"
    alerts: AlertThresholds = AlertThresholds()
    # Probes readiness, the live color (X-Deployment-Color) and certificate expiry.
    blackbox_image: Pinned = "prom/blackbox-exporter:v0.25.0"
    exporter_limits: Limits = Limits(memory_mb=128, cpus=0.25)
