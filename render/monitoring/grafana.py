"""Grafana provisioning: datasources, the dashboard provider, and dashboards as JSON.

Datasource uids are fixed (`layout.*_UID`) so dashboards can reference them and a
test can prove every panel's datasource exists.
"""

from __future__ import annotations

import json
from typing import Any

from settings import Settings

from . import layout, rules, victorialogs
from ._yaml import dump

PROM = {"type": "prometheus", "uid": layout.PROMETHEUS_UID}
LOKI = {"type": "loki", "uid": layout.LOKI_UID}
#: Grafana reads VictoriaLogs through VictoriaMetrics' datasource plugin (Apache-2.0), which the
#: Grafana container installs at start (`GF_INSTALL_PLUGINS`, stack/monitoring.py).
VICTORIALOGS_PLUGIN = "victoriametrics-logs-datasource"
VICTORIALOGS_PLUGIN_VERSION = "0.16.1"
VICTORIALOGS = {"type": VICTORIALOGS_PLUGIN, "uid": layout.VICTORIALOGS_UID}


def logs_datasource(settings: Settings) -> dict[str, str] | None:
    """The logs datasource's reference for panels: the store `monitoring.logs.backend` chose."""
    logs = settings.monitoring.logs
    if not logs.enabled:
        return None
    return VICTORIALOGS if logs.backend == "victorialogs" else LOKI


def plugins(settings: Settings) -> list[str]:
    """Grafana plugins the provisioning needs (`GF_INSTALL_PLUGINS` entries: `id version`)."""
    if logs_datasource(settings) == VICTORIALOGS:
        return [f"{VICTORIALOGS_PLUGIN} {VICTORIALOGS_PLUGIN_VERSION}"]
    return []


def datasources(settings: Settings) -> str:
    mon = settings.monitoring
    entries: list[dict[str, Any]] = [{
        "name": "Prometheus", "uid": layout.PROMETHEUS_UID, "type": "prometheus", "access": "proxy",
        "url": f"http://{layout.ALIASES['prometheus']}:{layout.PROMETHEUS_PORT}", "isDefault": True,
        "editable": False, "jsonData": {"timeInterval": mon.prometheus.scrape_interval},
    }]
    if logs_datasource(settings) == LOKI:
        entries.append({
            "name": "Loki", "uid": layout.LOKI_UID, "type": "loki", "access": "proxy",
            "url": f"http://{layout.ALIASES['loki']}:{layout.LOKI_PORT}", "editable": False,
        })
    elif logs_datasource(settings) == VICTORIALOGS:
        entries.append({
            "name": "VictoriaLogs", "uid": layout.VICTORIALOGS_UID, "type": VICTORIALOGS_PLUGIN,
            "access": "proxy", "editable": False,
            "url": f"http://{layout.ALIASES['victorialogs']}:{layout.VICTORIALOGS_PORT}",
        })
    if mon.alertmanager.enabled:
        entries.append({
            "name": "Alertmanager", "uid": layout.ALERTMANAGER_UID, "type": "alertmanager", "access": "proxy",
            "url": f"http://{layout.ALIASES['alertmanager']}:{layout.ALERTMANAGER_PORT}", "editable": False,
            "jsonData": {"implementation": "prometheus", "handleGrafanaManagedAlerts": False},
            # Alertmanager requires basic auth; Grafana expands $__file{} from its secret file.
            "basicAuth": True, "basicAuthUser": layout.ALERTMANAGER_USER,
            "secureJsonData": {"basicAuthPassword": f"$__file{{{layout.ALERTMANAGER_PASSWORD_FILE}}}"},
        })
    return dump({"apiVersion": 1, "prune": True, "datasources": entries}, "Grafana datasources")


def dashboard_providers() -> str:
    return dump({"apiVersion": 1, "providers": [{
        "name": "paper-trading", "orgId": 1, "folder": "Paper trading", "type": "file",
        "disableDeletion": True, "allowUiUpdates": False, "updateIntervalSeconds": 60,
        "options": {"path": layout.GRAFANA_DASHBOARDS_DIR, "foldersFromFilesStructure": False},
    }]}, "Grafana dashboard providers")


class _Board:
    """Lays panels out on Grafana's 24-column grid, left to right."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self._x = 0
        self._y = 0
        self._row_h = 0

    def add(self, title: str, kind: str, targets: list[dict[str, Any]], w: int = 8, h: int = 8,
            datasource: dict[str, str] | None = None, unit: str | None = None,
            extra: dict[str, Any] | None = None) -> None:
        if self._x + w > 24:
            self._x, self._y, self._row_h = 0, self._y + self._row_h, 0
        ds = datasource or PROM
        panel: dict[str, Any] = {
            "id": len(self.panels) + 1, "title": title, "type": kind, "datasource": ds,
            "gridPos": {"x": self._x, "y": self._y, "w": w, "h": h},
            "targets": [{**t, "datasource": ds, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
            "fieldConfig": {"defaults": {"unit": unit} if unit else {}, "overrides": []},
            "options": {},
        }
        panel.update(extra or {})
        self.panels.append(panel)
        self._x += w
        self._row_h = max(self._row_h, h)


def _q(expr: str, legend: str = "") -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend}


def _dashboard(uid: str, title: str, board: _Board, tags: list[str]) -> str:
    document = {
        "uid": uid, "title": title, "tags": ["paper-trading", *tags], "editable": False,
        "schemaVersion": 39, "version": 1, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
        "timezone": "utc", "panels": board.panels, "templating": {"list": []}, "annotations": {"list": []},
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


WORK_HOLDER_TITLE = "Background work holder"


def work_holder_queries(settings: Settings) -> list[tuple[str, str]]:
    """(expr, legend) of the "Background work holder" panel: who holds the work,
    the holder's epoch, and the consumers of each work queue."""
    queues = rules.queue_regex(settings.workers.queues)
    active = f'{rules.WORKER_ACTIVE}{{job="app"}}'
    return [
        (f"max by (color) ({active})", "{{color}} active"),
        (f'max({rules.WORKER_EPOCH}{{job="app"}} and on (instance) ({active} == 1))', "epoch"),
        (f'sum by (queue) (rabbitmq_queue_consumers{{job="rabbitmq",queue=~"{queues}"}})',
         "{{queue}} consumers"),
    ]


def _overview(settings: Settings) -> str:
    b = _Board()
    b.add("Live color", "stat", [_q(f"{rules.COLOR_LIVE} == 1", "{{color}}")], w=6,
          extra={"options": {"textMode": "name", "colorMode": "background"}})
    b.add("Paper trading mode (min over replicas, must be 1)", "stat", [_q(rules.PAPER_MODE_MIN)], w=6,
          extra={"fieldConfig": {"defaults": {"thresholds": {"mode": "absolute", "steps": [
              {"color": "red", "value": None}, {"color": "green", "value": 1}]}}, "overrides": []}})
    b.add("Real-trade attempts blocked (1h)", "stat", [_q(rules.REAL_TRADES_1H)], w=6,
          extra={"fieldConfig": {"defaults": {"thresholds": {"mode": "absolute", "steps": [
              {"color": "green", "value": None}, {"color": "red", "value": 1}]}}, "overrides": []}})
    b.add("Firing alerts", "stat", [_q('count(ALERTS{alertstate="firing"}) or vector(0)')], w=6)
    b.add("Paper mode per replica", "timeseries", [_q('paper_trading_mode{job="app"}', "{{instance}}")], w=12)
    b.add("App targets (live label)", "table", [_q(rules.APP_TARGET_UP, "")], w=12,
          extra={"targets": [{**_q(rules.APP_TARGET_UP), "format": "table", "instant": True,
                              "datasource": PROM, "refId": "A"}]})
    b.add("Requests per second by color", "timeseries", [_q(rules.REQUESTS_RATE, "{{color}}")],
          w=12, unit="reqps")
    b.add("Readiness by replica", "timeseries", [_q('probe_success{job="app-ready"}', "{{instance}}")], w=12)
    if settings.workers.enabled:
        b.add(WORK_HOLDER_TITLE, "stat", [_q(expr, legend) for expr, legend in work_holder_queries(settings)],
              w=24, h=6, extra={"options": {"textMode": "value_and_name", "colorMode": "value",
                                            "reduceOptions": {"calcs": ["lastNotNull"]}}})
    logs = logs_datasource(settings)
    if logs == LOKI:
        b.add("Audit trail: proxy access log", "logs", [{"expr": '{service="proxy", audit="access"}'}],
              w=24, h=10, datasource=LOKI)
    elif logs == VICTORIALOGS:
        b.add("Audit trail: proxy access log", "logs",
              [{"expr": victorialogs.ACCESS_LOG_QUERY}], w=24, h=10,
              datasource=VICTORIALOGS)
    return _dashboard("paper-trading-overview", "Paper trading: overview", b, ["overview", "safety"])


def _traffic() -> str:
    b = _Board()
    b.add("Requests per second", "timeseries", [_q(rules.REQUESTS_RATE, "{{color}}")], unit="reqps")
    b.add("5xx ratio", "timeseries", [_q(rules.ERROR_RATIO, "{{color}}")], unit="percentunit")
    b.add("p95 latency", "timeseries", [_q(rules.LATENCY_P95, "{{color}}")], unit="s")
    b.add("Requests by status", "timeseries",
          [_q('sum by (color, status) (rate(http_requests_total{job="app"}[5m]))', "{{color}} {{status}}")],
          w=12, unit="reqps")
    b.add("Nginx connections", "timeseries", [_q("nginx_connections_active", "active"),
                                              _q("rate(nginx_http_requests_total[5m])", "req/s")], w=12)
    title = "Paper trading: requests, errors, latency per color"
    return _dashboard("paper-trading-traffic", title, b, ["traffic"])


def _datastores() -> str:
    b = _Board()
    b.add("Postgres up", "stat", [_q('pg_up{job="postgres"}')], w=6)
    b.add("Redis up", "stat", [_q('redis_up{job="redis"}')], w=6)
    b.add("RabbitMQ up", "stat", [_q('up{job="rabbitmq"}')], w=6)
    b.add("Exporters up", "stat", [_q('up{job=~"postgres|redis|nginx|node|blackbox"}', "{{job}}")], w=6)
    b.add("Postgres connections", "timeseries",
          [_q("sum by (datname) (pg_stat_database_numbackends)", "{{datname}}")])
    b.add("Redis memory", "timeseries", [_q("redis_memory_used_bytes", "used")], unit="bytes")
    b.add("RabbitMQ ready messages", "timeseries", [_q("sum(rabbitmq_queue_messages_ready)", "ready")])
    return _dashboard("paper-trading-datastores", "Paper trading: datastores", b, ["datastores"])


def _host() -> str:
    b = _Board()
    b.add("CPU busy", "timeseries", [_q('1 - avg(rate(node_cpu_seconds_total{mode="idle"}[5m]))', "busy")],
          unit="percentunit")
    b.add("Memory available", "timeseries",
          [_q("node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes", "available")],
          unit="percentunit")
    b.add("Disk free", "timeseries", [_q(
        'node_filesystem_avail_bytes{fstype!~"tmpfs|ramfs|squashfs|nsfs|proc|sysfs|devtmpfs"}'
        " / node_filesystem_size_bytes", "{{mountpoint}}")], unit="percentunit")
    b.add("Last successful backup age", "stat",
          [_q("time() - paper_trading_backup_last_success_timestamp_seconds")], unit="s")
    b.add("Last backup size", "stat", [_q("paper_trading_backup_last_size_bytes")], unit="bytes")
    b.add("Backup failures (24h)", "stat", [_q("increase(paper_trading_backup_failures_total[24h])")])
    return _dashboard("paper-trading-host", "Paper trading: host and backups", b, ["host", "backup"])


def dashboards(settings: Settings) -> dict[str, str]:
    """File name -> dashboard JSON."""
    return {
        "overview.json": _overview(settings),
        "traffic.json": _traffic(),
        "datastores.json": _datastores(),
        "host.json": _host(),
    }
