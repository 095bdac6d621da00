"""`images`: infrastructure images, each pinned by tag; the proxy's nginx at or above its floor."""

from __future__ import annotations

from pydantic import field_validator

# Plain standard-library module (no Pulumi, no Docker): the floor's one home, shared with the policy pack.
from contract.versions import nginx_floor_problem

from .base import Model, Pinned


class Images(Model):
    """Infrastructure images, pinned by tag; override per stack to move versions."""

    #: Must name an exact release at or above contract/versions.py's NGINX_FLOOR.
    nginx: Pinned = "nginx:1.30.6-alpine"
    #: The host firewall's guard: python3 + nftables. No official nftables image exists, so it is
    #: built from this repo's images/host-guard/Dockerfile (Debian's nftables) and pushed to the
    #: operator's registry or built on the host (docs/security.md, "Host firewall").
    host_guard: Pinned = "paper-trading/host-guard:1.0.6"
    postgres: Pinned = "postgres:15.10-alpine"
    redis: Pinned = "redis:7.4.1-alpine"
    rabbitmq: Pinned = "rabbitmq:3.13.7-alpine"
    prometheus: Pinned = "prom/prometheus:v2.55.1"
    alertmanager: Pinned = "prom/alertmanager:v0.27.0"
    grafana: Pinned = "grafana/grafana:11.3.1"
    loki: Pinned = "grafana/loki:3.3.0"
    promtail: Pinned = "grafana/promtail:3.3.0"
    #: `monitoring.logs.backend: victorialogs`. The official victoriametrics/* images are distroless
    #: (no program to run a healthcheck), so the defaults are this repo's images/victoria-logs and
    #: images/vlagent, built on the host by scripts/build-test-images like host_guard.
    victoria_logs: Pinned = "paper-trading/victoria-logs:1.52.2"
    vlagent: Pinned = "paper-trading/vlagent:1.52.2"
    node_exporter: Pinned = "prom/node-exporter:v1.8.2"
    cadvisor: Pinned = "gcr.io/cadvisor/cadvisor:v0.49.1"
    postgres_exporter: Pinned = "quay.io/prometheuscommunity/postgres-exporter:v0.16.0"
    redis_exporter: Pinned = "oliver006/redis_exporter:v1.66.0"
    nginx_exporter: Pinned = "nginx/nginx-prometheus-exporter:1.3.0"
    #: Any image with fail2ban and python3 on the PATH (docs/security.md, "Intrusion detection").
    ids: Pinned = "crazymax/fail2ban:1.1.0"

    @field_validator("nginx")
    @classmethod
    def _nginx_current(cls, value: str) -> str:
        # Also the mandatory `proxy-image-current` policy; here so a deploy without the pack refuses too.
        problem = nginx_floor_problem(value)
        if problem:
            raise ValueError(problem)
        return value
