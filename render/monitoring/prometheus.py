"""prometheus.yml: what is scraped, from the same settings as the deployment.

App replicas of both colors are static targets named after their containers
(`instance`) and labelled `color`. Prometheus shares no network with the apps: it scrapes
each replica through the proxy's status listener (`proxy-status:8081/scrape/<replica>/...`,
an exact relay location per replica), and the `instance`/`color` labels are set per target,
so rules and dashboards see the same series as before. Alertmanager needs basic auth.
Whether a color is live is NOT written here: it is measured by probing the proxy's live
listener for `X-Deployment-Color` (job `live-color`), so an activeColor flip changes no monitoring input.
"""

from __future__ import annotations

from typing import Any

from settings import COLORS, Settings

from . import layout
from ._yaml import dump

BLACKBOX_ADDRESS = f"{layout.ALIASES['blackbox-exporter']}:{layout.BLACKBOX_PORT}"


def _probe_relabels(keep_instance: bool) -> list[dict[str, Any]]:
    """Standard blackbox relabelling: the target becomes `?target=`, the exporter the address."""
    relabels: list[dict[str, Any]] = [{"source_labels": ["__address__"], "target_label": "__param_target"}]
    if not keep_instance:
        relabels.append({"source_labels": ["__param_target"], "target_label": "instance"})
    relabels.append({"target_label": "__address__", "replacement": BLACKBOX_ADDRESS})
    return relabels


def live_listener_url(settings: Settings) -> str:
    """The proxy's live listener as seen from the monitoring network."""
    if settings.server.ssl.enabled:
        return f"https://{layout.PROXY_ALIAS}:{layout.PROXY_HTTPS_PORT}{settings.app.health.live}"
    return f"http://{layout.PROXY_ALIAS}:{layout.PROXY_HTTP_PORT}{settings.app.health.live}"


def app_targets(settings: Settings) -> list[dict[str, Any]]:
    """One group per replica: the relay address, its metrics path, and instance/color labels."""
    groups = []
    for color in COLORS:
        for n in range(1, settings.deployment.color(color).replicas + 1):
            name = layout.app_container(settings.name_prefix, color, n)
            groups.append({
                "targets": [layout.PROXY_STATUS_ADDRESS],
                "labels": {"color": color, "instance": name,
                           "__metrics_path__": layout.scrape_path(name, "metrics")},
            })
    return groups


def _replicas(settings: Settings) -> list[tuple[str, str]]:
    return [(color, layout.app_container(settings.name_prefix, color, n))
            for color in COLORS for n in range(1, settings.deployment.color(color).replicas + 1)]


def _alertmanager_auth() -> dict[str, Any]:
    return {"basic_auth": {"username": layout.ALERTMANAGER_USER,
                           "password_file": layout.ALERTMANAGER_PASSWORD_FILE}}


def _static(job: str, target: str, **extra: Any) -> dict[str, Any]:
    return {"job_name": job, **extra, "static_configs": [{"targets": [target]}]}


def scrape_configs(settings: Settings) -> list[dict[str, Any]]:
    mon = settings.monitoring
    jobs: list[dict[str, Any]] = [
        # Each target carries its relay path (`__metrics_path__`), the proxy relays to the app's
        # `app.health.metrics`.
        {"job_name": "app", "static_configs": app_targets(settings)},
        {
            "job_name": "app-ready",
            "metrics_path": "/probe",
            "params": {"module": ["http_ready"]},
            "static_configs": [
                {
                    "targets": [f"http://{layout.PROXY_STATUS_ADDRESS}{layout.scrape_path(name, 'ready')}"],
                    "labels": {"color": color, "instance": name},
                }
                for color, name in _replicas(settings)
            ],
            "relabel_configs": _probe_relabels(keep_instance=True),
        },
        {
            "job_name": "live-color",
            "metrics_path": "/probe",
            "static_configs": [
                {
                    "targets": [live_listener_url(settings)],
                    "labels": {"color": color, "__param_module": f"live_is_{color}",
                               "instance": f"live-{color}"},
                }
                for color in COLORS
            ],
            "relabel_configs": _probe_relabels(keep_instance=True),
        },
    ]
    if settings.server.ssl.enabled:
        jobs.append({
            "job_name": "tls",
            "metrics_path": "/probe",
            "params": {"module": ["tls_expiry"]},
            "static_configs": [{"targets": [f"{layout.PROXY_ALIAS}:{layout.PROXY_HTTPS_PORT}"],
                                "labels": {"instance": settings.server.host}}],
            "relabel_configs": _probe_relabels(keep_instance=True),
        })
    jobs += [
        _static("nginx", f"{layout.ALIASES['nginx-exporter']}:{layout.NGINX_EXPORTER_PORT}"),
        _static("postgres", f"{layout.ALIASES['postgres-exporter']}:{layout.POSTGRES_EXPORTER_PORT}"),
        _static("redis", f"{layout.ALIASES['redis-exporter']}:{layout.REDIS_EXPORTER_PORT}"),
        _static("rabbitmq", f"rabbitmq:{layout.RABBITMQ_PROMETHEUS_PORT}"),
        _static("node", f"{layout.ALIASES['node-exporter']}:{layout.NODE_EXPORTER_PORT}"),
        _static("blackbox", BLACKBOX_ADDRESS),
        _static("prometheus", f"localhost:{layout.PROMETHEUS_PORT}"),
    ]
    if mon.alertmanager.enabled:
        jobs.append(_static("alertmanager", f"{layout.ALIASES['alertmanager']}:{layout.ALERTMANAGER_PORT}",
                            **_alertmanager_auth()))
    if mon.grafana.enabled:
        jobs.append(_static("grafana", f"{layout.ALIASES['grafana']}:{layout.GRAFANA_PORT}"))
    if mon.logs.enabled and mon.logs.backend == "victorialogs":
        collector = layout.COLLECTOR_ALIASES["victorialogs"]
        jobs.append(_static("victorialogs", f"{layout.ALIASES['victorialogs']}:{layout.VICTORIALOGS_PORT}"))
        jobs.append(_static(collector, f"{collector}:{layout.VLAGENT_PORT}"))
    elif mon.logs.enabled:
        jobs.append(_static("loki", f"{layout.ALIASES['loki']}:{layout.LOKI_PORT}"))
        jobs.append(_static("promtail", f"{layout.ALIASES['log-collector']}:{layout.PROMTAIL_PORT}"))
    if settings.security.ids.enabled:
        # The IDS's ban metrics and heartbeat (stack/ids.py).
        from ..ids import METRICS_ALIAS, METRICS_PORT

        jobs.append(_static("ids", f"{METRICS_ALIAS}:{METRICS_PORT}"))
    return jobs


def prometheus_config(settings: Settings, stack: str) -> str:
    """The whole prometheus.yml. Rule files are relative: they resolve next to this file."""
    mon = settings.monitoring
    document: dict[str, Any] = {
        "global": {
            "scrape_interval": mon.prometheus.scrape_interval,
            "evaluation_interval": mon.prometheus.evaluation_interval,
            "external_labels": {"stack": stack, "environment": settings.environment},
        },
        "rule_files": [
            layout.RECORDING_RULES.rsplit("/", 1)[1],
            layout.ALERT_RULES.rsplit("/", 1)[1],
        ],
    }
    if mon.alertmanager.enabled:
        document["alerting"] = {"alertmanagers": [{
            **_alertmanager_auth(),
            "static_configs": [{"targets": [f"{layout.ALIASES['alertmanager']}:{layout.ALERTMANAGER_PORT}"]}],
        }]}
    document["scrape_configs"] = scrape_configs(settings)
    return dump(document, "prometheus.yml")
