# ruff: noqa: E501 -- the cases are a table of series; wrapping them hurts reading more than long lines.
"""`promtool test rules` on the generated rules: every alert fires when it should and stays silent otherwise.

Each case is its own promtool test group (own input series), with a fire check
and a silence check; a guard test proves no alert is left without a case.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from render.monitoring import rules
from tests.support import require_tool
from tests.support.monitoring import stack_settings, write_prometheus_tree
from tests.support.rule_cases import Case, _group, _sel

APP_BLUE = {"job": "app", "instance": "paper-trading-app-blue-1", "color": "blue"}


CASES: list[Case] = [
    Case("PaperTradingModeOff", [(_sel("paper_trading_mode", APP_BLUE), "1 1 0 0")], ["1m"], "2m",
         APP_BLUE, "paper-trading-app-blue-1 (blue) reports paper_trading_mode=0"),
    Case("PaperTradingModeMetricMissing",
         [(_sel("up", APP_BLUE), "1x10"), (_sel("paper_trading_mode", APP_BLUE), "1 1 stale")],
         ["1m", "2m"], "3m", APP_BLUE,
         "paper-trading-app-blue-1 answers /metrics without paper_trading_mode"),
    Case("RealTradeAttempt",
         [(_sel("paper_trading_real_trades_blocked_total", APP_BLUE), "0 0 0 1x10")],
         ["2m", "10m"], "3m", APP_BLUE, "paper-trading-app-blue-1 (blue) tried to place a real trade (blocked)"),
    Case("TargetDown", [(_sel("up", {"job": "nginx", "instance": "nginx-exporter:9113"}), "1 1 0x10")],
         ["1m", "3m"], "4m", {"job": "nginx", "instance": "nginx-exporter:9113"},
         "nginx target nginx-exporter:9113 is down"),
    Case("LiveColorNotReady", [
        (_sel("probe_success", {"job": "live-color", "color": "blue", "instance": "live-blue"}), "1x10"),
        (_sel("probe_success", {"job": "live-color", "color": "green", "instance": "live-green"}), "0x10"),
        (_sel("probe_success", {"job": "app-ready", "color": "blue", "instance": "b1"}), "1 1 0x10"),
        # The preview color not being ready must not page.
        (_sel("probe_success", {"job": "app-ready", "color": "green", "instance": "g1"}), "0x10"),
    ], ["1m", "2m"], "3m", {"job": "app-ready", "color": "blue", "instance": "b1"},
        "b1 on the LIVE color blue fails readiness"),
    Case("NoLiveColor", [
        (_sel("probe_success", {"job": "live-color", "color": "blue", "instance": "live-blue"}), "1 1 0x10"),
        (_sel("probe_success", {"job": "live-color", "color": "green", "instance": "live-green"}), "0x12"),
        # 8m, not 7m: the recording rule's group may run before or after the alert's (promtool does not
        # fix the order), so the alert can see the live color one evaluation late.
    ], ["1m", "6m"], "8m", {}, "The proxy serves no color live (or the live listener cannot be probed)"),
    Case("AppHighErrorRate", [
        (_sel("http_requests_total", {"job": "app", "color": "blue", "status": "200"}), "0+60x20"),
        (_sel("http_requests_total", {"job": "app", "color": "blue", "status": "500"}), "0+60x20"),
        (_sel("http_requests_total", {"job": "app", "color": "green", "status": "200"}), "0+60x20"),
        (_sel("http_requests_total", {"job": "app", "color": "green", "status": "500"}), "0x20"),
    ], ["3m"], "12m", {"color": "blue"}, "blue: 50% of requests fail with 5xx"),
    Case("AppHighLatencyP95", [
        (_sel("http_request_duration_seconds_bucket", {"job": "app", "color": "blue", "le": "0.5"}), "0x30"),
        (_sel("http_request_duration_seconds_bucket", {"job": "app", "color": "blue", "le": "2"}), "0+60x30"),
        (_sel("http_request_duration_seconds_bucket", {"job": "app", "color": "blue", "le": "+Inf"}), "0+60x30"),
        (_sel("http_request_duration_seconds_bucket", {"job": "app", "color": "green", "le": "0.5"}), "0+60x30"),
        (_sel("http_request_duration_seconds_bucket", {"job": "app", "color": "green", "le": "2"}), "0+60x30"),
        (_sel("http_request_duration_seconds_bucket", {"job": "app", "color": "green", "le": "+Inf"}), "0+60x30"),
    ], ["5m"], "20m", {"color": "blue"}, "blue: p95 latency 1.925s"),
    Case("CertificateExpiringSoon", [
        (_sel("probe_ssl_earliest_cert_expiry", {"job": "tls", "instance": "a"}), f"{10 * 86400}x30"),
        (_sel("probe_ssl_earliest_cert_expiry", {"job": "tls", "instance": "b"}), f"{30 * 86400}x30"),
    ], ["5m"], "20m", {"job": "tls", "instance": "a"},
        "TLS certificate of a expires in 9d 23h 40m 0s"),
    Case("CertificateExpiringCritical", [
        (_sel("probe_ssl_earliest_cert_expiry", {"job": "tls", "instance": "a"}), f"{2 * 86400}x30"),
        (_sel("probe_ssl_earliest_cert_expiry", {"job": "tls", "instance": "b"}), f"{10 * 86400}x30"),
    ], [], "10m", {"job": "tls", "instance": "a"}, "TLS certificate of a expires in 1d 23h 50m 0s"),
    Case("CertificateProbeFailing", [
        (_sel("probe_success", {"job": "tls", "instance": "a"}), "0x30"),
        (_sel("probe_success", {"job": "tls", "instance": "b"}), "1x30"),
    ], ["5m"], "11m", {"job": "tls", "instance": "a"},
        "TLS probe of a fails, certificate expiry is not being measured"),
    Case("AlertmanagerNotificationsFailing", [
        (_sel("alertmanager_notifications_failed_total",
              {"job": "alertmanager", "instance": "am", "integration": "webhook"}), "0+1x30"),
        (_sel("alertmanager_notifications_failed_total",
              {"job": "alertmanager", "instance": "am", "integration": "email"}), "0x30"),
    ], ["5m"], "20m", {"job": "alertmanager", "instance": "am", "integration": "webhook"},
        "Alertmanager cannot deliver webhook notifications"),
    Case("PostgresDown", [(_sel("pg_up", {"job": "postgres", "instance": "pe"}), "1 1 0x10")], ["1m", "2m"], "3m",
         {"job": "postgres", "instance": "pe"}, "Postgres is unreachable from the exporter"),
    Case("RedisDown", [(_sel("redis_up", {"job": "redis", "instance": "re"}), "1 1 0x10")], ["1m", "2m"], "3m",
         {"job": "redis", "instance": "re"}, "Redis is unreachable from the exporter"),
    Case("RabbitMQDown", [(_sel("up", {"job": "rabbitmq", "instance": "rabbitmq:15692"}), "1 1 0x10")],
         ["1m", "2m"], "3m", {"job": "rabbitmq", "instance": "rabbitmq:15692"},
         "RabbitMQ's Prometheus endpoint does not answer"),
    Case("HostDiskPressure", [
        (_sel("node_filesystem_avail_bytes", {"job": "node", "mountpoint": "/", "fstype": "ext4"}), "5x20"),
        (_sel("node_filesystem_size_bytes", {"job": "node", "mountpoint": "/", "fstype": "ext4"}), "100x20"),
        (_sel("node_filesystem_avail_bytes", {"job": "node", "mountpoint": "/data", "fstype": "ext4"}), "50x20"),
        (_sel("node_filesystem_size_bytes", {"job": "node", "mountpoint": "/data", "fstype": "ext4"}), "100x20"),
        (_sel("node_filesystem_avail_bytes", {"job": "node", "mountpoint": "/run", "fstype": "tmpfs"}), "1x20"),
        (_sel("node_filesystem_size_bytes", {"job": "node", "mountpoint": "/run", "fstype": "tmpfs"}), "100x20"),
    ], ["5m"], "11m", {"job": "node", "mountpoint": "/", "fstype": "ext4"}, "/ has 5% free"),
    Case("HostMemoryPressure", [
        (_sel("node_memory_MemAvailable_bytes", {"job": "node", "instance": "n1"}), "5x20"),
        (_sel("node_memory_MemTotal_bytes", {"job": "node", "instance": "n1"}), "100x20"),
        (_sel("node_memory_MemAvailable_bytes", {"job": "node", "instance": "n2"}), "50x20"),
        (_sel("node_memory_MemTotal_bytes", {"job": "node", "instance": "n2"}), "100x20"),
    ], ["3m"], "6m", {"job": "node", "instance": "n1"}, "Only 5% of host memory is available"),
    Case("BackupTooOld", [
        (_sel("paper_trading_backup_last_success_timestamp_seconds", {"job": "node", "instance": "old"}),
         "-100000x20"),
        (_sel("paper_trading_backup_last_success_timestamp_seconds", {"job": "node", "instance": "fresh"}),
         "0x20"),
    ], ["5m"], "11m", {"job": "node", "instance": "old"}, "The last successful backup is 1d 3h 57m 40s old"),
    Case("BackupMetricsMissing", [(_sel("up", {"job": "node", "instance": "n"}), "1x1600")],
         ["25h"], "26h1m", {}, "No backup has ever reported success (textfile metrics missing)"),
    Case("BackupFailed", [(_sel("paper_trading_backup_failures_total", {"job": "node", "instance": "n"}),
                           "0 0 1x70")],
         ["1m", "70m"], "2m", {"job": "node", "instance": "n"}, "A backup run failed in the last hour"),
]

# Background work (issue 15, part C). Prod: scrape 15s -> WorkersSplitBrain `for: 45s`; workers.noActiveWorkersFor 2m.
APP_GREEN = {"job": "app", "instance": "paper-trading-app-green-1", "color": "green"}
APP_BLUE_2 = {**APP_BLUE, "instance": "paper-trading-app-blue-2"}
ORDERS = {"job": "rabbitmq", "instance": "rabbitmq:15692", "vhost": "/", "queue": "paper-trading.orders"}
# Not a work queue, and a name the regex would match if its dot were not escaped.
OTHER_QUEUE = {**ORDERS, "queue": "paper-tradingXorders"}
LIVE_BLUE_PROBE = {"job": "live-color", "color": "blue", "instance": "live-blue"}
LIVE_GREEN_PROBE = {"job": "live-color", "color": "green", "instance": "live-green"}
CASES += [
    Case("WorkersSplitBrain", [
        (_sel("paper_trading_worker_active", APP_BLUE), "1x10"),
        (_sel("paper_trading_worker_active", APP_BLUE_2), "0x10"),
        (_sel("paper_trading_worker_active", APP_GREEN), "0 0 1x8"),
    ], ["1m", "2m"], "3m", {}, "Both colors run background work at once: orders and P&L may be processed twice"),
    Case("NoActiveWorkers", [
        (_sel("paper_trading_worker_active", APP_BLUE), "1 1 0x10"),
        (_sel("paper_trading_worker_active", APP_GREEN), "0x12"),
    ], ["1m", "3m"], "4m", {}, "No color has run background work for 2m: queues and schedulers stand still"),
    # The metric absent altogether (no replica exports it, or none is scraped) pages too.
    Case("NoActiveWorkers", [(_sel("up", APP_BLUE), "1x10")], ["1m"], "2m", {},
         "No color has run background work for 2m: queues and schedulers stand still"),
    # Blue live; green, the failed candidate whose hand-back failed, keeps the work from 2m on.
    Case("WorkersOnIdleColor", [
        (_sel("probe_success", LIVE_BLUE_PROBE), "1x12"),
        (_sel("probe_success", LIVE_GREEN_PROBE), "0x12"),
        (_sel("paper_trading_worker_active", APP_BLUE), "1 1 0x10"),
        (_sel("paper_trading_worker_active", APP_GREEN), "0 0 1x10"),
    ], ["1m", "2m"], "3m", APP_GREEN,
        "paper-trading-app-green-1 (green) runs background work but green is not the live color"),
    # A first promotion switched back (nothing live: both probes fail), blue kept the work.
    Case("WorkersOnIdleColor", [
        (_sel("probe_success", LIVE_BLUE_PROBE), "0x12"),
        (_sel("probe_success", LIVE_GREEN_PROBE), "0x12"),
        (_sel("paper_trading_worker_active", APP_BLUE), "0 0 1x10"),
        (_sel("paper_trading_worker_active", APP_GREEN), "0x12"),
    ], ["1m", "2m"], "3m", APP_BLUE,
        "paper-trading-app-blue-1 (blue) runs background work but blue is not the live color"),
    Case("QueueBacklogWithoutConsumer", [
        (_sel("rabbitmq_queue_messages_ready", ORDERS), "0 0 3+2x10"),
        (_sel("rabbitmq_queue_consumers", ORDERS), "1 1 0x10"),
        (_sel("rabbitmq_queue_messages_ready", OTHER_QUEUE), "0 0 3+2x10"),
        (_sel("rabbitmq_queue_consumers", OTHER_QUEUE), "0x12"),
    ], ["1m", "3m"], "4m", {"vhost": "/", "queue": "paper-trading.orders"},
        "Queue paper-trading.orders has 7 ready messages and no consumer"),
]

# A clean handoff (blue -> green, one scrape of overlap at most, a second blue replica always
# standby) and a consumed backlog: silent (separate groups).
HANDOFF = Case("WorkersSplitBrain", [
    # Both seen active at 2m (the colors are scraped at different moments), never for `for`.
    (_sel("paper_trading_worker_active", APP_BLUE), "1 1 1 0x9"),
    (_sel("paper_trading_worker_active", APP_BLUE_2), "0x12"),
    (_sel("paper_trading_worker_active", APP_GREEN), "0 0 1x10"),
], ["1m", "2m", "3m", "6m"], "", {}, "")
HANDOFF_GAP = Case("NoActiveWorkers", [
    # No color active for one minute (below workers.noActiveWorkersFor) during the handoff.
    (_sel("paper_trading_worker_active", APP_BLUE), "1 1 0x10"),
    (_sel("paper_trading_worker_active", APP_GREEN), "0 0 0 1x10"),
], ["2m", "3m", "6m"], "", {}, "")
# A clean switch blue -> green: the work follows the traffic within a scrape (blue seen active
# one evaluation after green went live, green active one later); a second blue replica always standby.
IDLE_HANDOFF = Case("WorkersOnIdleColor", [
    (_sel("probe_success", LIVE_BLUE_PROBE), "1 1 0x10"),
    (_sel("probe_success", LIVE_GREEN_PROBE), "0 0 1x10"),
    (_sel("paper_trading_worker_active", APP_BLUE), "1 1 1 0x9"),
    (_sel("paper_trading_worker_active", APP_BLUE_2), "0x12"),
    (_sel("paper_trading_worker_active", APP_GREEN), "0 0 0 1x9"),
], ["1m", "2m", "3m", "4m", "8m"], "", {}, "")
# The live color is not measured (no probe series): NoLiveColor's case, not this alert's.
IDLE_UNKNOWN = Case("WorkersOnIdleColor", [
    (_sel("paper_trading_worker_active", APP_GREEN), "1x12"),
], ["2m", "8m"], "", {}, "")
CONSUMED = Case("QueueBacklogWithoutConsumer", [
    (_sel("rabbitmq_queue_messages_ready", ORDERS), "0 0 3+2x10"),
    (_sel("rabbitmq_queue_consumers", ORDERS), "1x12"),
], ["3m", "6m"], "", {}, "")

# The IDS's alerts (issue 14, part 2): their cases live with the IDS tests.
from tests.support.ids_rule_cases import ids_case_rows  # noqa: E402

CASES += [Case(*row) for row in ids_case_rows()]

# A backup that keeps reporting success: BackupMetricsMissing must stay silent (separate group).
BACKUP_PRESENT = Case(
    "BackupMetricsMissing",
    [(_sel("paper_trading_backup_last_success_timestamp_seconds", {"job": "node", "instance": "n"}), "0x1600")],
    ["26h1m"], "", {}, "")


def _recording_group() -> dict[str, Any]:
    """The live label comes from the probe of X-Deployment-Color, not from config."""
    return {
        "name": "live color recording",
        "interval": "1m",
        "input_series": [
            {"series": _sel("probe_success", {"job": "live-color", "color": "blue", "instance": "live-blue"}),
             "values": "0 0 1 1"},
            {"series": _sel("probe_success", {"job": "live-color", "color": "green", "instance": "live-green"}),
             "values": "1 1 0 0"},
            {"series": _sel("up", {"job": "app", "color": "blue", "instance": "b1"}), "values": "1x4"},
            {"series": _sel("up", {"job": "app", "color": "green", "instance": "g1"}), "values": "1x4"},
        ],
        "promql_expr_test": [
            {"expr": f"{rules.COLOR_LIVE} == 1", "eval_time": "1m",
             "exp_samples": [{"labels": f'{rules.COLOR_LIVE}{{color="green"}}', "value": 1}]},
            {"expr": f"{rules.COLOR_LIVE} == 1", "eval_time": "3m",
             "exp_samples": [{"labels": f'{rules.COLOR_LIVE}{{color="blue"}}', "value": 1}]},
            {"expr": rules.APP_TARGET_UP, "eval_time": "3m", "exp_samples": [
                {"labels": f'{rules.APP_TARGET_UP}{{color="blue",instance="b1",job="app",live="true"}}',
                 "value": 1},
                {"labels": f'{rules.APP_TARGET_UP}{{color="green",instance="g1",job="app",live="false"}}',
                 "value": 1},
            ]},
        ],
    }


def _work_holder_group(settings: Any) -> dict[str, Any]:
    """The "Background work holder" panel's own queries, evaluated by promtool (issue 15, part C)."""
    from render.monitoring import grafana

    board = json.loads(grafana.dashboards(settings)["overview.json"])
    [panel] = [p for p in board["panels"] if p["title"] == grafana.WORK_HOLDER_TITLE]
    queries = [t["expr"] for t in panel["targets"]]
    assert queries == [expr for expr, _ in grafana.work_holder_queries(settings)]
    active, epoch, consumers = queries
    blue_2 = {**APP_BLUE, "instance": "paper-trading-app-blue-2"}
    green = {"job": "app", "instance": "paper-trading-app-green-1", "color": "green"}
    orders = {"job": "rabbitmq", "instance": "rabbitmq:15692", "vhost": "/", "queue": "paper-trading.orders"}
    return {
        "name": "background work holder panel",
        "interval": "1m",
        "input_series": [
            {"series": _sel("paper_trading_worker_active", APP_BLUE), "values": "1x3"},
            {"series": _sel("paper_trading_worker_active", blue_2), "values": "0x3"},
            {"series": _sel("paper_trading_worker_active", green), "values": "0x3"},
            {"series": _sel("paper_trading_worker_epoch", APP_BLUE), "values": "7x3"},
            {"series": _sel("paper_trading_worker_epoch", blue_2), "values": "7x3"},
            {"series": _sel("paper_trading_worker_epoch", green), "values": "6x3"},
            {"series": _sel("rabbitmq_queue_consumers", orders), "values": "1x3"},
            {"series": _sel("rabbitmq_queue_consumers", {**orders, "queue": "unrelated"}), "values": "2x3"},
        ],
        "promql_expr_test": [
            {"expr": active, "eval_time": "2m", "exp_samples": [
                {"labels": '{color="blue"}', "value": 1}, {"labels": '{color="green"}', "value": 0}]},
            {"expr": epoch, "eval_time": "2m", "exp_samples": [{"labels": "{}", "value": 7}]},
            {"expr": consumers, "eval_time": "2m", "exp_samples": [
                {"labels": '{queue="paper-trading.orders"}', "value": 1}]},
        ],
    }


def _test_file(tmp_path: Path) -> Path:
    settings = stack_settings("prod")
    config = write_prometheus_tree(tmp_path, settings, "prod")
    alert_by_name = {a.name: a for a in rules.alerts(settings)}
    groups = [_group(c, alert_by_name) for c in [*CASES, BACKUP_PRESENT, HANDOFF, HANDOFF_GAP, CONSUMED, IDLE_HANDOFF, IDLE_UNKNOWN]] + [
        _recording_group(), _work_holder_group(settings)]
    document = {
        "rule_files": [config.parent.joinpath(p).name for p in ("recording.rules.yml", "alerts.rules.yml")],
        "evaluation_interval": "1m",
        "tests": groups,
    }
    path = config.parent / "rules.test.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_every_alert_has_a_case() -> None:
    names = {a.name for a in rules.alerts(stack_settings("prod"))}
    cased = {c.alert for c in CASES}
    assert names == cased, f"alerts without a rule test: {sorted(names - cased)}; stale: {sorted(cased - names)}"
    for case in CASES:
        # Silence is shown by a check with no alerts, or by a second series that must not alert.
        assert case.silent_at or len(case.series) > 1, case.alert


@pytest.mark.tools
def test_promtool_test_rules(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    path = _test_file(tmp_path)
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.tools
def test_promtool_test_rules_can_fail(tmp_path: Path) -> None:
    """A rule test against rules where paper mode 0 is ignored must fail: the tests have teeth."""
    promtool = require_tool("promtool")
    path = _test_file(tmp_path)
    alerts_file = path.parent / "alerts.rules.yml"
    alerts_file.write_text(alerts_file.read_text().replace('paper_trading_mode{job="app"} != 1',
                                                            'paper_trading_mode{job="app"} > 1'))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "PaperTradingModeOff" in result.stdout + result.stderr


def test_worker_alerts_follow_the_workers_config() -> None:
    """Off: no worker alerts (nothing is meant to run) and no panel; the split-brain `for` outlasts scrape skew."""
    from render.monitoring import grafana
    from settings import Settings

    base = stack_settings("prod")
    worker_alerts = {"WorkersSplitBrain", "NoActiveWorkers", "QueueBacklogWithoutConsumer", "WorkersOnIdleColor"}
    assert worker_alerts <= {a.name for a in rules.alerts(base)}
    data = base.model_dump(by_alias=True)
    off = Settings.model_validate({**data, "workers": {**data["workers"], "enabled": False}})
    assert not worker_alerts & {a.name for a in rules.alerts(off)}
    board = json.loads(grafana.dashboards(off)["overview.json"])
    assert grafana.WORK_HOLDER_TITLE not in {p["title"] for p in board["panels"]}
    slow = Settings.model_validate({**data, "monitoring": {**data["monitoring"], "prometheus": {
        **data["monitoring"]["prometheus"], "scrapeInterval": "1m"}}})
    assert (rules.split_brain_for(base), rules.split_brain_for(slow)) == ("45s", "180s")
    by_name = {a.name: a for a in rules.alerts(base)}
    assert by_name["NoActiveWorkers"].for_ == by_name["QueueBacklogWithoutConsumer"].for_ == "2m"
    assert all(by_name[n].severity == "critical" for n in worker_alerts)
