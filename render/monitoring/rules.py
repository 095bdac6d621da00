"""Alerting and recording rules for Prometheus.

Alerts are data (`Alert`), so tests can check that every one has a severity, a
runbook and a promtool rule test. The paper-trading safety alerts have `for: 0m`:
a replica out of paper mode pages on the first evaluation that sees it.

App metric contract (docs/monitoring.md): `paper_trading_mode` (gauge, 1 = paper),
`paper_trading_real_trades_blocked_total` (counter, starts at 0),
`http_requests_total{status}` and `http_request_duration_seconds` (histogram).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from settings import Settings, duration_ms

from ._yaml import dump

Severity = Literal["critical", "warning"]
RUNBOOK_DOC = "docs/monitoring.md"

# Recording rules dashboards and alerts share.
COLOR_LIVE = "paper_trading:color_live"
APP_TARGET_UP = "paper_trading:app_target_up"
REQUESTS_RATE = "paper_trading:http_requests:rate5m"
ERRORS_RATE = "paper_trading:http_errors:rate5m"
ERROR_RATIO = "paper_trading:http_error_ratio:rate5m"
LATENCY_P95 = "paper_trading:http_request_duration_seconds:p95_5m"
PAPER_MODE_MIN = "paper_trading:paper_mode:min"
REAL_TRADES_1H = "paper_trading:real_trades_blocked:increase1h"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: Severity
    group: str
    summary: str
    runbook: str

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "runbook": self.runbook,
                "runbook_url": f"{RUNBOOK_DOC}#{self.name.lower()}",
            },
        }


def recording_rules_document() -> dict[str, Any]:
    live = f"({COLOR_LIVE} == 1)"
    return {"groups": [{
        "name": "paper-trading.recording",
        "rules": [
            # 1 for the color the proxy serves live (measured from X-Deployment-Color), 0 for the other.
            {"record": COLOR_LIVE, "expr": 'max by (color) (probe_success{job="live-color"})'},
            {"record": APP_TARGET_UP, "expr": (
                f'label_replace(up{{job="app"}} and on (color) {live}, "live", "true", "", "")'
                f' or label_replace(up{{job="app"}} unless on (color) {live}, "live", "false", "", "")'
            )},
            {"record": REQUESTS_RATE, "expr": 'sum by (color) (rate(http_requests_total{job="app"}[5m]))'},
            {"record": ERRORS_RATE,
             "expr": 'sum by (color) (rate(http_requests_total{job="app",status=~"5.."}[5m]))'},
            {"record": ERROR_RATIO, "expr": f"{ERRORS_RATE} / {REQUESTS_RATE}"},
            {"record": LATENCY_P95, "expr": (
                "histogram_quantile(0.95, sum by (color, le) "
                '(rate(http_request_duration_seconds_bucket{job="app"}[5m])))'
            )},
            {"record": PAPER_MODE_MIN, "expr": 'min(paper_trading_mode{job="app"})'},
            {"record": REAL_TRADES_1H,
             "expr": 'sum(increase(paper_trading_real_trades_blocked_total{job="app"}[1h]))'},
        ],
    }]}


def alerts(settings: Settings) -> list[Alert]:
    t = settings.monitoring.alerts
    live = f"on (color) ({COLOR_LIVE} == 1)"
    return [
        # --- paper-trading safety: critical at once, no `for`.
        Alert("PaperTradingModeOff", 'paper_trading_mode{job="app"} != 1', "0m", "critical", "safety",
              "{{ $labels.instance }} ({{ $labels.color }}) reports paper_trading_mode={{ $value }}",
              "Take the replica out of traffic now (flip/rollback to the other color), stop it, and "
              "check its PAPER_TRADING_MODE env and image; never re-enable until paper mode is proven."),
        Alert("PaperTradingModeMetricMissing",
              'up{job="app"} == 1 unless on (job, instance) paper_trading_mode{job="app"}', "1m",
              "critical", "safety",
              "{{ $labels.instance }} answers /metrics without paper_trading_mode",
              "A replica that cannot prove paper mode is unsafe: stop it or roll back to a release that "
              "exports the metric."),
        Alert("RealTradeAttempt",
              'increase(paper_trading_real_trades_blocked_total{job="app"}[5m]) > 0', "0m", "critical",
              "safety",
              "{{ $labels.instance }} ({{ $labels.color }}) tried to place a real trade (blocked)",
              "A code path tried to trade for real: freeze releases, find the caller in the audit logs "
              "(Grafana Explore, service=app) and roll back the color that made it."),
        # --- service health.
        Alert("TargetDown", "up == 0", "2m", "warning", "service",
              "{{ $labels.job }} target {{ $labels.instance }} is down",
              "Check the container (`docker ps -a`, `docker logs`) and its attachment to the "
              "monitoring network."),
        Alert("LiveColorNotReady", f'probe_success{{job="app-ready"}} == 0 and {live}', "1m", "critical",
              "service", "{{ $labels.instance }} on the LIVE color {{ $labels.color }} fails readiness",
              "Live traffic is degraded: check /health/detailed on the replica; if the color cannot recover, "
              "roll back to the other color."),
        Alert("NoLiveColor", f"absent({COLOR_LIVE} == 1)", "5m", "warning", "service",
              "The proxy serves no color live (or the live listener cannot be probed)",
              "On a first deploy promote a validated color; otherwise check the proxy's routing file and the "
              "blackbox exporter."),
        Alert("AppHighErrorRate", f"{ERROR_RATIO} > {t.error_rate:g}", "5m", "warning", "service",
              "{{ $labels.color }}: {{ $value | humanizePercentage }} of requests fail with 5xx",
              "Look at the color's logs and /health/detailed; on the live color consider a rollback."),
        Alert("AppHighLatencyP95", f"{LATENCY_P95} > {t.latency_p95_seconds:g}", "10m", "warning", "service",
              "{{ $labels.color }}: p95 latency {{ $value | humanizeDuration }}",
              "Check datastore latency and host pressure dashboards; scale or roll back the color."),
        Alert("CertificateExpiringSoon",
              f'probe_ssl_earliest_cert_expiry{{job="tls"}} - time() < {t.cert_expiry_days} * 86400', "10m",
              "warning", "service",
              "TLS certificate of {{ $labels.instance }} expires in {{ $value | humanizeDuration }}",
              "Renew the certificate at server.ssl.certPath/keyPath and reload the proxy."),
        Alert("CertificateExpiringCritical",
              'probe_ssl_earliest_cert_expiry{job="tls"} - time() < 3 * 86400', "0m", "critical", "service",
              "TLS certificate of {{ $labels.instance }} expires in {{ $value | humanizeDuration }}",
              "Renew now: browsers and clients will refuse the site when it expires."),
        Alert("CertificateProbeFailing", 'probe_success{job="tls"} == 0', "10m", "warning", "service",
              "TLS probe of {{ $labels.instance }} fails, certificate expiry is not being measured",
              "Check the proxy's 8443 listener and the certificate files."),
        Alert("AlertmanagerNotificationsFailing",
              "rate(alertmanager_notifications_failed_total[5m]) > 0", "10m", "warning", "service",
              "Alertmanager cannot deliver {{ $labels.integration }} notifications",
              "Check monitoring.alertmanager.webhookUrl and the receiver's availability; alerts are only "
              "in the UI."),
        # --- datastores.
        Alert("PostgresDown", 'pg_up{job="postgres"} == 0', "1m", "critical", "datastores",
              "Postgres is unreachable from the exporter",
              "Check the postgres container, its data volume and disk space; the app cannot trade (paper) "
              "without it."),
        Alert("RedisDown", 'redis_up{job="redis"} == 0', "1m", "critical", "datastores",
              "Redis is unreachable from the exporter",
              "Check the redis container and its password file; restart it if it crashed."),
        Alert("RabbitMQDown", 'up{job="rabbitmq"} == 0', "1m", "critical", "datastores",
              "RabbitMQ's Prometheus endpoint does not answer",
              "Check the rabbitmq container and its memory/disk alarms (`rabbitmq-diagnostics status`)."),
        # --- host.
        Alert("HostDiskPressure",
              'node_filesystem_avail_bytes{fstype!~"tmpfs|ramfs|squashfs|nsfs|proc|sysfs|devtmpfs"}'
              ' / node_filesystem_size_bytes < ' + f"{t.disk_free_ratio:g}", "10m", "warning", "host",
              "{{ $labels.mountpoint }} has {{ $value | humanizePercentage }} free",
              "Free space: prune old images (`docker image prune`), check log and backup volumes."),
        Alert("HostMemoryPressure",
              f"node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes < {t.memory_available_ratio:g}",
              "5m", "warning", "host",
              "Only {{ $value | humanizePercentage }} of host memory is available",
              "Find the biggest containers (`docker stats`), lower limits or add memory."),
        # --- backups (textfile metrics written by the backup job).
        Alert("BackupTooOld",
              "time() - paper_trading_backup_last_success_timestamp_seconds > "
              f"{t.backup_max_age_hours} * 3600",
              "10m", "critical", "backup",
              "The last successful backup is {{ $value | humanizeDuration }} old",
              "Run the backup job by hand, read its logs, check the backups volume's free space."),
        Alert("BackupMetricsMissing", "absent(paper_trading_backup_last_success_timestamp_seconds)",
              f"{t.backup_max_age_hours}h", "warning", "backup",
              "No backup has ever reported success (textfile metrics missing)",
              "Check that the backup job runs and writes its .prom file into the metrics volume."),
        Alert("BackupFailed", "increase(paper_trading_backup_failures_total[1h]) > 0", "0m", "warning",
              "backup", "A backup run failed in the last hour",
              "Read the backup job's logs; a second failure in a row needs a manual backup."),
        *_ids_alerts(settings),
        *_worker_alerts(settings),
    ]


#: The IDS pings fail2ban every 15 s (render/ids HEARTBEAT_SECONDS): 2 min is 8 misses.
IDS_HEARTBEAT_STALE_SECONDS = 120


def _ids_alerts(settings: Settings) -> list[Alert]:
    """Intrusion detection (docs/security.md): ban storm, detector down."""
    ids = settings.security.ids
    if not ids.enabled:
        return []
    return [
        Alert("IdsBanStorm",
              f'sum(increase(paper_trading_ids_bans_total{{job="ids"}}[5m])) > {ids.ban_storm_threshold}',
              "0m", "warning", "security",
              f"The IDS banned more than {ids.ban_storm_threshold} addresses in 5 minutes",
              "A scan or attack wave, or a false positive banning real users: look at the bans by jail "
              "(paper_trading_ids_bans_total) and the proxy's request log; unban with "
              "`docker exec <prefix>-ids fail2ban-client -c /run/paper-trading-ids/conf unban <ip>`."),
        Alert("IdsDetectorDown",
              # Target down or gone, fail2ban never answered, or it stopped answering.
              'up{job="ids"} == 0 or absent(up{job="ids"})'
              ' or (up{job="ids"} == 1 unless on (job, instance)'
              ' paper_trading_ids_heartbeat_timestamp_seconds)'
              ' or time() - '
              f'paper_trading_ids_heartbeat_timestamp_seconds{{job="ids"}} > {IDS_HEARTBEAT_STALE_SECONDS}',
              "2m", "critical", "security",
              "The intrusion detector is down or fail2ban stopped answering: nobody is banned",
              "Check the ids container (`docker logs <prefix>-ids`); it restarts on failure. Until it "
              "runs, abusive clients are only rate-limited by the proxy."),
    ]


#: The app's background-work metrics (docs/monitoring.md "Background work").
WORKER_ACTIVE = "paper_trading_worker_active"
WORKER_EPOCH = "paper_trading_worker_epoch"


def _seconds(ms: int) -> str:
    return f"{-(-ms // 1000)}s"


def split_brain_for(settings: Settings) -> str:
    """`for` of WorkersSplitBrain: short, but longer than a scrape's skew between the colors.

    Prometheus scrapes the two colors at different moments of a scrape interval, so a clean
    handoff can show both as active for up to one interval; three intervals (at least 30 s)
    never page for that, and a real split brain pages within a minute at the default 15 s.
    """
    interval = duration_ms(settings.monitoring.prometheus.scrape_interval)
    return _seconds(max(30_000, 3 * interval))


def queue_regex(queues: tuple[str, ...]) -> str:
    """An exact-match RE2 alternation of the work queues (names hold only [A-Za-z0-9._:-]),
    written for a double-quoted PromQL string (whose own escaping takes one backslash)."""
    return "|".join(name.replace(".", "\\\\.") for name in queues)


def _worker_alerts(settings: Settings) -> list[Alert]:
    """Background work: exactly one color holds it, the live one; its queues are consumed."""
    w = settings.workers
    if not w.enabled:
        return []
    app_active = f'{WORKER_ACTIVE}{{job="app"}}'
    queues = f'job="rabbitmq",queue=~"{queue_regex(w.queues)}"'
    by_queue = "sum by (vhost, queue)"
    ready = f"rabbitmq_queue_messages_ready{{{queues}}}"
    return [
        Alert("WorkersSplitBrain", f"count(count by (color) ({app_active} == 1)) > 1",
              split_brain_for(settings), "critical", "workers",
              "Both colors run background work at once: orders and P&L may be processed twice",
              "The lease or the switch failed: check /health/detailed of every replica (role, epoch, "
              "liveColor) and the Redis keys paper-trading:work:live and paper-trading:work:lease; stop "
              "the color that is not live (`docker stop <prefix>-app-<color>-<n>`), then re-run the switch "
              "or the emergency CLI so the live color is published with a new epoch."),
        Alert("NoActiveWorkers", f"absent({app_active} == 1)", w.no_active_workers_for, "critical", "workers",
              f"No color has run background work for {w.no_active_workers_for}: "
              "queues and schedulers stand still",
              "Check the live color's /health/detailed (role, liveColor, epoch): standby with a liveColor of "
              "the other color means the switch did not publish; no lease means Redis is unreachable "
              "(RedisDown) or the replicas are down (LiveColorNotReady). Re-publish the live color with the "
              "emergency CLI."),
        Alert("WorkersOnIdleColor",
              # Active (lease, consumers or schedulers) on a color the proxy does not serve live; only
              # while the live color is measured at all (without it, NoLiveColor pages instead).
              f"({app_active} == 1) unless on (color) ({COLOR_LIVE} == 1)"
              f" and on () (count({COLOR_LIVE}) > 0)",
              split_brain_for(settings), "critical", "workers",
              "{{ $labels.instance }} ({{ $labels.color }}) runs background work but {{ $labels.color }} "
              "is not the live color",
              "Usually a failed hand-back: a switch that was undone could not give the work back (its "
              "error and its `rollback` audit record, result failed, say 'background work not handed "
              "back'), so the failed candidate still holds the lease or consumes. Hand the work to the live "
              "color: re-run the emergency CLI `switch --to <live color>` (it publishes the live color with "
              "a new epoch and waits for the handoff); if the idle color does not stand down, stop its "
              "replicas."),
        Alert("QueueBacklogWithoutConsumer",
              # Ready messages, no consumer, and not draining (5m).
              f"({by_queue} ({ready}) > 0)"
              f" and on (vhost, queue) ({by_queue} (rabbitmq_queue_consumers{{{queues}}}) == 0)"
              f" and on (vhost, queue) ({by_queue} (delta({ready}[5m])) >= 0)",
              w.no_active_workers_for, "critical", "workers",
              "Queue {{ $labels.queue }} has {{ $value }} ready messages and no consumer",
              "Nobody drains the queue: see NoActiveWorkers; if a color is active, its consumer of this "
              "queue died (the app's /health/detailed lists the queues it consumes): restart that replica "
              "so the lease moves, and check RabbitMQ's connections (management API, backend network)."),
    ]


def alert_rules_document(settings: Settings) -> dict[str, Any]:
    order = ["safety", "service", "workers", "datastores", "host", "backup", "security"]
    found = alerts(settings)
    return {"groups": [
        {"name": f"paper-trading.{group}", "rules": [a.rule() for a in found if a.group == group]}
        for group in order
    ]}


def alert_rules(settings: Settings) -> str:
    return dump(alert_rules_document(settings), "alerts.rules.yml")


def recording_rules() -> str:
    return dump(recording_rules_document(), "recording.rules.yml")
