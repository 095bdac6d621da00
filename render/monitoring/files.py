"""Every file and flag list of the monitoring stack, rendered at once for its component."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import SecretStr

from settings import Settings

from . import alertmanager, blackbox, grafana, loki, prometheus, promtail, rules, victorialogs


@dataclass(frozen=True)
class MonitoringFiles:
    """Every monitoring file and flag list, rendered (render/monitoring) from the settings."""

    prometheus: str
    alert_rules: str
    #: Alertmanager's file as shown in the state and plan: the webhook URL, if any, redacted.
    alertmanager: str
    #: ... and the file it reads, with the webhook URL (None: there is none, `alertmanager` is it).
    alertmanager_secret: SecretStr | None
    grafana_datasources: str
    grafana_dashboards: Mapping[str, str]
    grafana_plugins: tuple[str, ...]
    loki: str
    promtail: str
    blackbox: str
    victorialogs_args: tuple[str, ...]

    @classmethod
    def of(cls, settings: Settings, stack: str) -> MonitoringFiles:
        webhook = settings.monitoring.alertmanager.webhook_url
        return cls(
            prometheus=prometheus.prometheus_config(settings, stack),
            alert_rules=rules.alert_rules(settings),
            alertmanager=alertmanager.alertmanager_config(
                settings, None if webhook is None else alertmanager.REDACTED_URL),
            alertmanager_secret=None if webhook is None else SecretStr(
                alertmanager.alertmanager_config(settings, webhook.get_secret_value())),
            grafana_datasources=grafana.datasources(settings),
            grafana_dashboards=grafana.dashboards(settings),
            grafana_plugins=tuple(grafana.plugins(settings)),
            loki=loki.loki_config(settings),
            promtail=promtail.promtail_config(settings, stack),
            blackbox=blackbox.blackbox_config(settings),
            victorialogs_args=tuple(victorialogs.server_args(settings)),
        )
