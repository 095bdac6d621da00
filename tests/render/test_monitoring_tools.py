"""The generated monitoring config checked by the real tools: promtool, amtool, JSON parsing.

Files are written into a temp dir that mirrors the container paths, so relative rule
files resolve exactly as in the Prometheus container.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from render.monitoring import alertmanager, grafana, layout, prometheus, rules
from tests.support import require_tool
from tests.support.monitoring import stack_settings, write_prometheus_tree

STACKS = ("prod", "dev")






def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.tools
@pytest.mark.parametrize("stack", STACKS)
def test_promtool_check_config(stack: str, tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    config = write_prometheus_tree(tmp_path, stack_settings(stack), stack)
    result = run([promtool, "check", "config", str(config)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout + result.stderr


@pytest.mark.tools
def test_promtool_check_rules(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    config = write_prometheus_tree(tmp_path, stack_settings("prod"), "prod")
    result = run([promtool, "check", "rules", str(config.parent / "alerts.rules.yml"),
                  str(config.parent / "recording.rules.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules.alerts(stack_settings('prod')))} rules found" in result.stdout


@pytest.mark.tools
def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check can fail: a rule with a PromQL syntax error is refused."""
    promtool = require_tool("promtool")
    bad = tmp_path / "bad.yml"
    bad.write_text(rules.alert_rules(stack_settings("prod")).replace("!= 1", "!= = 1", 1))
    result = run([promtool, "check", "rules", str(bad)])
    assert result.returncode != 0


@pytest.mark.tools
@pytest.mark.parametrize("webhook", [None, "https://hooks.example.com/paper-trading"])
def test_amtool_check_config(webhook: str | None, tmp_path: Path) -> None:
    amtool = require_tool("amtool")
    path = tmp_path / "alertmanager.yml"
    path.write_text(alertmanager.alertmanager_config(stack_settings("prod"), webhook))
    result = run([amtool, "check-config", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    document = yaml.safe_load(path.read_text())
    routes = {tuple(r["matchers"]): r["receiver"] for r in document["route"]["routes"]}
    assert routes[('severity="critical"',)] == "critical"
    has_hook = all("webhook_configs" in r for r in document["receivers"])
    assert has_hook == (webhook is not None)


@pytest.mark.tools
def test_amtool_routes_critical_to_the_critical_receiver(tmp_path: Path) -> None:
    amtool = require_tool("amtool")
    path = tmp_path / "alertmanager.yml"
    path.write_text(alertmanager.alertmanager_config(stack_settings("prod"), "https://hooks.example.com/x"))
    for severity, receiver in (("critical", "critical"), ("warning", "default")):
        result = run([amtool, "config", "routes", "test", f"--config.file={path}",
                      "alertname=PaperTradingModeOff", f"severity={severity}"])
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == receiver


@pytest.mark.parametrize("stack", STACKS)
def test_dashboards_reference_provisioned_datasources(stack: str) -> None:
    settings = stack_settings(stack)
    provisioned = yaml.safe_load(grafana.datasources(settings))["datasources"]
    uids = {d["uid"]: d["type"] for d in provisioned}
    logs = layout.LOKI_UID if settings.monitoring.logs.backend == "loki" else layout.VICTORIALOGS_UID
    assert {layout.PROMETHEUS_UID, logs} <= set(uids)
    boards = grafana.dashboards(settings)
    assert {"overview.json", "traffic.json", "datastores.json", "host.json"} <= set(boards)
    seen_uids: set[str] = set()
    for name, text in boards.items():
        board = json.loads(text)
        assert board["uid"] not in seen_uids, name
        seen_uids.add(board["uid"])
        assert board["panels"], name
        for panel in board["panels"]:
            refs = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
            for ref in refs:
                assert ref["uid"] in uids, f"{name}: panel {panel['title']!r} uses unknown {ref}"
                assert ref["type"] == uids[ref["uid"]], f"{name}: {panel['title']!r} type mismatch"
            assert panel["targets"], f"{name}: panel {panel['title']!r} has no query"


def test_overview_shows_live_color_and_safety() -> None:
    board = json.loads(grafana.dashboards(stack_settings("prod"))["overview.json"])
    exprs = " ".join(t.get("expr", "") for p in board["panels"] for t in p["targets"])
    assert rules.COLOR_LIVE in exprs
    assert rules.PAPER_MODE_MIN in exprs and rules.REAL_TRADES_1H in exprs
    assert 'audit="access"' in exprs


def test_dashboard_providers_point_at_the_dashboards_dir() -> None:
    providers = yaml.safe_load(grafana.dashboard_providers())["providers"]
    assert [p["options"]["path"] for p in providers] == [layout.GRAFANA_DASHBOARDS_DIR]


def test_every_alert_has_severity_and_runbook() -> None:
    document = yaml.safe_load(rules.alert_rules(stack_settings("prod")))
    found = [r for g in document["groups"] for r in g["rules"]]
    assert len(found) == len(rules.alerts(stack_settings("prod")))
    for rule in found:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert len(rule["annotations"]["runbook"]) > 20, rule["alert"]
        assert rule["annotations"]["runbook_url"].startswith("docs/monitoring.md#")
    by_name = {r["alert"]: r for r in found}
    for name in ("PaperTradingModeOff", "RealTradeAttempt"):
        assert by_name[name]["labels"]["severity"] == "critical"
        assert by_name[name]["for"] == "0m"


def test_prometheus_scrapes_both_colors_and_every_service() -> None:
    settings = stack_settings("prod")
    document = yaml.safe_load(prometheus.prometheus_config(settings, "prod"))
    jobs = {j["job_name"]: j for j in document["scrape_configs"]}
    assert {"app", "app-ready", "live-color", "tls", "nginx", "postgres", "redis", "rabbitmq", "node",
            "prometheus", "alertmanager", "grafana", "loki", "promtail", "blackbox"} <= set(jobs)
    # Through the proxy's status relay (Prometheus shares no network with the apps), one exact
    # relay path per replica, the replica's own instance/color labels.
    app = [(g["labels"]["color"], g["labels"]["instance"], g["targets"], g["labels"]["__metrics_path__"])
           for g in jobs["app"]["static_configs"]]
    expected = [(c, f"paper-trading-app-{c}-{n}", ["proxy-status:8081"],
                 f"/scrape/paper-trading-app-{c}-{n}/metrics")
                for c in ("blue", "green") for n in (1, 2)]
    assert app == expected
    ready = [(g["labels"]["color"], g["labels"]["instance"], g["targets"])
             for g in jobs["app-ready"]["static_configs"]]
    assert ready == [(c, f"paper-trading-app-{c}-{n}",
                      [f"http://proxy-status:8081/scrape/paper-trading-app-{c}-{n}/ready"])
                     for c in ("blue", "green") for n in (1, 2)]
    # Alertmanager needs basic auth: both the alerting client and its scrape job send it.
    auth = {"username": "prometheus", "password_file": "/run/secrets/alertmanager_password"}
    assert document["alerting"]["alertmanagers"][0]["basic_auth"] == auth
    assert jobs["alertmanager"]["basic_auth"] == auth
    assert jobs["rabbitmq"]["static_configs"][0]["targets"] == ["rabbitmq:15692"]


def test_active_color_flip_changes_no_monitoring_file() -> None:
    settings = stack_settings("prod")
    flipped = settings.model_copy(update={
        "deployment": settings.deployment.model_copy(update={"active_color": "green"})})
    assert flipped.deployment.active_color != settings.deployment.active_color
    for build in (
        lambda s: prometheus.prometheus_config(s, "prod"), rules.alert_rules,
        lambda s: alertmanager.alertmanager_config(s, None), grafana.datasources,
        lambda s: json.dumps(grafana.dashboards(s)),
    ):
        assert build(settings) == build(flipped)
