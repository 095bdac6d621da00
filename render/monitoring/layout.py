"""Container paths, ports and DNS aliases shared by the builders and the component.

Config files live in `/etc/paper-trading/<service>/`, an anonymous volume in each
container (uploads only work into volumes when the root filesystem is read-only);
secrets in `/run/secrets/`, also a volume, readable only by the service's user.
"""

from __future__ import annotations

from typing import Final

from contract import SECRETS_DIR

PROMETHEUS_DIR: Final = "/etc/paper-trading/prometheus"
PROMETHEUS_CONFIG: Final = f"{PROMETHEUS_DIR}/prometheus.yml"
ALERT_RULES: Final = f"{PROMETHEUS_DIR}/alerts.rules.yml"
RECORDING_RULES: Final = f"{PROMETHEUS_DIR}/recording.rules.yml"
PROMETHEUS_DATA: Final = "/prometheus"

ALERTMANAGER_DIR: Final = "/etc/paper-trading/alertmanager"
ALERTMANAGER_CONFIG: Final = f"{ALERTMANAGER_DIR}/alertmanager.yml"
ALERTMANAGER_DATA: Final = "/alertmanager"

BLACKBOX_DIR: Final = "/etc/paper-trading/blackbox"
BLACKBOX_CONFIG: Final = f"{BLACKBOX_DIR}/blackbox.yml"

GRAFANA_DIR: Final = "/etc/paper-trading/grafana"
GRAFANA_PROVISIONING: Final = f"{GRAFANA_DIR}/provisioning"
GRAFANA_DATASOURCES: Final = f"{GRAFANA_PROVISIONING}/datasources/datasources.yml"
GRAFANA_DASHBOARD_PROVIDERS: Final = f"{GRAFANA_PROVISIONING}/dashboards/dashboards.yml"
GRAFANA_DASHBOARDS_DIR: Final = f"{GRAFANA_DIR}/dashboards"
GRAFANA_DATA: Final = "/var/lib/grafana"
GRAFANA_ADMIN_PASSWORD_FILE: Final = f"{SECRETS_DIR}/grafana_admin_password"

LOKI_DIR: Final = "/etc/paper-trading/loki"
LOKI_CONFIG: Final = f"{LOKI_DIR}/loki.yml"
LOKI_DATA: Final = "/loki"

PROMTAIL_DIR: Final = "/etc/paper-trading/promtail"
PROMTAIL_CONFIG: Final = f"{PROMTAIL_DIR}/promtail.yml"
PROMTAIL_POSITIONS_DIR: Final = "/var/lib/promtail"
DOCKER_CONTAINERS_DIR: Final = "/var/lib/docker/containers"

# `monitoring.logs.backend: victorialogs`: both take their whole configuration as flags (no files,
# so both run with a read-only root); data paths are the official images' (images/victoria-logs, vlagent).
VICTORIALOGS_DATA: Final = "/victoria-logs-data"
VLAGENT_DATA: Final = "/vlagent-data"

POSTGRES_PASSWORD_FILE: Final = f"{SECRETS_DIR}/postgres_password"
REDIS_PASSWORD_FILE: Final = f"{SECRETS_DIR}/redis_passwords.json"

TEXTFILE_DIR: Final = "/textfile"

# Ports inside the containers (fixed by the images).
PROMETHEUS_PORT: Final = 9090
ALERTMANAGER_PORT: Final = 9093
GRAFANA_PORT: Final = 3000
LOKI_PORT: Final = 3100
PROMTAIL_PORT: Final = 9080
VICTORIALOGS_PORT: Final = 9428
VLAGENT_PORT: Final = 9429
NODE_EXPORTER_PORT: Final = 9100
POSTGRES_EXPORTER_PORT: Final = 9187
REDIS_EXPORTER_PORT: Final = 9121
NGINX_EXPORTER_PORT: Final = 9113
BLACKBOX_PORT: Final = 9115
RABBITMQ_PROMETHEUS_PORT: Final = 15692

# Proxy ports inside its container (team proxy design) and its aliases on the metrics network:
# `proxy` for the live listener, `proxy-status` (that network only) for the status listener,
# which also relays the apps' metrics and readiness (`scrape_path`, docs/monitoring.md).
PROXY_ALIAS: Final = "proxy"
PROXY_STATUS_ALIAS: Final = "proxy-status"
PROXY_HTTP_PORT: Final = 8080
PROXY_HTTPS_PORT: Final = 8443
PROXY_STATUS_PORT: Final = 8081
PROXY_STUB_STATUS_PATH: Final = "/stub_status"
PROXY_STATUS_ADDRESS: Final = f"{PROXY_STATUS_ALIAS}:{PROXY_STATUS_PORT}"

# Alertmanager's basic-auth user (Prometheus and Grafana); its password is a secret file.
ALERTMANAGER_USER: Final = "prometheus"
ALERTMANAGER_WEB_CONFIG: Final = f"{SECRETS_DIR}/alertmanager_web.yml"
ALERTMANAGER_PASSWORD_FILE: Final = f"{SECRETS_DIR}/alertmanager_password"

# The monitoring control plane: on the `monitoring` network, which no app, exporter or proxy
# joins (the `monitoring-segmented` policy); Prometheus also joins `metrics` to scrape.
CONTROL_PLANE: Final = frozenset({"prometheus", "alertmanager", "grafana", "loki", "victorialogs",
                                  "log-collector"})
#: Services on the metrics network (Prometheus meets what it scrapes there).
SCRAPED: Final = frozenset({
    "prometheus", "node-exporter", "postgres-exporter", "redis-exporter", "nginx-exporter",
    "blackbox-exporter",
})

# DNS aliases of the monitoring services (on each network they join).
ALIASES: Final[dict[str, str]] = {
    "prometheus": "prometheus",
    "alertmanager": "alertmanager",
    "grafana": "grafana",
    "loki": "loki",
    "victorialogs": "victorialogs",
    "log-collector": "promtail",
    "node-exporter": "node-exporter",
    "postgres-exporter": "postgres-exporter",
    "redis-exporter": "redis-exporter",
    "nginx-exporter": "nginx-exporter",
    "blackbox-exporter": "blackbox-exporter",
}

# Grafana datasource uids: dashboards reference these and tests check them.
PROMETHEUS_UID: Final = "prometheus"
LOKI_UID: Final = "loki"
VICTORIALOGS_UID: Final = "victorialogs"
ALERTMANAGER_UID: Final = "alertmanager"


#: The log collector's alias by `monitoring.logs.backend` (the service is `log-collector` for both).
COLLECTOR_ALIASES: Final[dict[str, str]] = {"loki": "promtail", "victorialogs": "vlagent"}


def app_container(prefix: str, color: str, n: int) -> str:
    """The app replica's container name (team app interface), resolvable by the proxy (frontend)."""
    return f"{prefix}-app-{color}-{n}"


def scrape_path(replica: str, what: str) -> str:
    """The proxy's relay path for a replica's `metrics` or `ready` (render/nginx/conf.py)."""
    return f"/scrape/{replica}/{what}"
