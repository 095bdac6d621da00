"""Monitoring checks against the real Prometheus and Alertmanager running the product's own
rendered configs and rules (tests/support/fidelity_prometheus.py), and a fake Grafana API.

Prometheus scrapes reference apps standing in for each rendered app replica (blue and green);
faults are a replica that is down, fewer replicas than expected, and an erroring rule injected
next to the product's rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fakes.grafana import FakeGrafana, fake_grafana
from tests.support.fakes.validation_servers import RefApp, free_port, reference_app
from tests.support.fidelity_nginx import rendered_file
from tests.support.fidelity_prometheus import (
    PROM_DIR,
    alertmanager,
    alertmanager_password,
    app_targets,
    prometheus,
    with_rule,
)
from tests.support.fidelity_report import assert_failed_exactly, check
from tests.support.validation_cli import run_report

pytestmark = pytest.mark.tools

MONITORING = (
    "monitoring.prometheus_targets",
    "monitoring.prometheus_rules",
    "monitoring.alertmanager",
    "monitoring.grafana_datasources",
    "monitoring.grafana_dashboards",
)


@pytest.fixture(scope="module")
def apps() -> Iterator[dict[str, RefApp]]:
    with reference_app(color="blue") as blue, reference_app(color="green") as green:
        yield {"blue": blue, "green": green}


def loopback_targets(apps: dict[str, RefApp], down: frozenset[str] = frozenset()) -> dict[str, str | None]:
    """Every rendered app target -> the reference app of its color (or a closed port if `down`)."""
    mapped: dict[str, str | None] = {}
    for target in app_targets():
        found = re.fullmatch(r"paper-trading-app-(blue|green)-\d+", target)
        assert found, f"unexpected rendered app target {target!r}"
        port = free_port() if target in down else apps[found.group(1)].port
        mapped[target] = f"127.0.0.1:{port}"
    return mapped


#: The rendered Alertmanager credentials (user `prometheus`, the rendered password secret).
AM_CREDENTIALS = {"ALERTMANAGER_USER": "prometheus", "ALERTMANAGER_PASSWORD": alertmanager_password()}


def green_replicas() -> int:
    return sum(1 for t in app_targets() if t.startswith("paper-trading-app-green-"))


@pytest.fixture(scope="module")
def stack(apps: dict[str, RefApp], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The rendered monitoring stack, every replica up: (Prometheus URL, Alertmanager URL)."""
    tmp = tmp_path_factory.mktemp("monitoring")
    with alertmanager(tmp / "am") as am, prometheus(tmp / "prom", loopback_targets(apps), am) as prom:
        yield prom, am


def _validate(
    apps: dict[str, RefApp], tmp: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, dict[str, Any]]:
    result, report = run_report(
        tmp,
        "--base-url",
        apps["green"].url,
        "--color",
        "green",
        *args,
        env={"VALIDATION_CHECK_TIMEOUT": "8", "VALIDATION_EXPECTED_REPLICAS": str(green_replicas()),
             **(env or {})},
    )
    return result.returncode, result.stdout, report


def test_healthy_monitoring_passes(apps: dict[str, RefApp], stack: tuple[str, str], tmp_path: Path) -> None:
    prom, am = stack
    grafana = FakeGrafana()
    with fake_grafana(grafana) as graf:
        code, out, report = _validate(
            apps,
            tmp_path,
            "--prometheus-url",
            prom,
            "--alertmanager-url",
            am,
            "--grafana-url",
            graf,
            env={"GRAFANA_USER": grafana.user, "GRAFANA_PASSWORD": grafana.password, **AM_CREDENTIALS},
        )
    assert code == 0, out
    assert_failed_exactly(report, set())
    for name in MONITORING:
        assert check(report, name)["status"] == "passed", (name, out)
    # Every rendered rule was loaded (the product's, not a stand-in) and none errs.
    rules = rendered_file(f"{PROM_DIR}/alerts.rules.yml") + rendered_file(f"{PROM_DIR}/recording.rules.yml")
    groups = len(re.findall(r"^- name: ", rules, re.M))
    assert f"{groups} groups" in check(report, "monitoring.prometheus_rules")["message"]
    assert check(report, "monitoring.prometheus_targets")["details"]["targets"] == len(app_targets())


def test_replica_down_fails_only_the_targets_check(apps: dict[str, RefApp], tmp_path: Path) -> None:
    down = next(t for t in app_targets() if t.startswith("paper-trading-app-green-"))
    with prometheus(tmp_path / "prom", loopback_targets(apps, frozenset({down}))) as prom:
        code, out, report = _validate(
            apps, tmp_path, "--prometheus-url", prom, env={"VALIDATION_CHECK_TIMEOUT": "4"}
        )
    assert code == 1, out
    assert_failed_exactly(report, {"monitoring.prometheus_targets"})
    (reported,) = check(report, "monitoring.prometheus_targets")["details"]["down"]
    assert reported.startswith(f"app/{down.split(':')[0]}: down"), reported


def test_erroring_rule_fails_only_the_rules_check(apps: dict[str, RefApp], tmp_path: Path) -> None:
    """A rule that collapses `up` onto one label set errs once two targets share a job and color;
    injected beside the product's rules, it must be the only rule reported."""
    broken = with_rule(
        rendered_file(f"{PROM_DIR}/recording.rules.yml"),
        "injected-fault",
        {
            "record": "instance_up:collapsed",
            "expr": 'label_replace(up, "instance", "same", "instance", ".*")',
        },
    )
    overrides = {"recording.rules.yml": broken}
    with prometheus(tmp_path / "prom", loopback_targets(apps), overrides=overrides) as prom:
        code, out, report = _validate(apps, tmp_path, "--prometheus-url", prom)
    assert code == 1, out
    assert_failed_exactly(report, {"monitoring.prometheus_rules"})
    message = check(report, "monitoring.prometheus_rules")["message"]
    assert message.startswith("1 rule(s) failing: instance_up:collapsed:"), message


def test_candidate_without_enough_targets_fails(
    apps: dict[str, RefApp], stack: tuple[str, str], tmp_path: Path
) -> None:
    prom, _ = stack
    wanted = green_replicas() + 1
    code, out, report = _validate(
        apps,
        tmp_path,
        "--prometheus-url",
        prom,
        env={"VALIDATION_EXPECTED_REPLICAS": str(wanted), "VALIDATION_CHECK_TIMEOUT": "4"},
    )
    assert code == 1, out
    assert_failed_exactly(report, {"monitoring.prometheus_targets"})
    message = check(report, "monitoring.prometheus_targets")["message"]
    assert message == f"{green_replicas()} target(s) for green, expected {wanted}"


def test_grafana_unhealthy_datasource_empty_dashboards_and_bad_auth(
    apps: dict[str, RefApp], tmp_path: Path
) -> None:
    grafana = FakeGrafana(datasources={"prometheus": "OK", "loki": "ERROR"}, dashboards=[])
    with fake_grafana(grafana) as graf:
        code, out, report = _validate(
            apps,
            tmp_path,
            "--grafana-url",
            graf,
            env={"GRAFANA_USER": grafana.user, "GRAFANA_PASSWORD": grafana.password},
        )
        assert code == 1, out
        assert_failed_exactly(report, {"monitoring.grafana_datasources", "monitoring.grafana_dashboards"})
        assert "loki" in check(report, "monitoring.grafana_datasources")["message"]
        assert "prometheus" not in check(report, "monitoring.grafana_datasources")["message"]
        # Without credentials both Grafana checks are refused (401), nothing else fails.
        code, out, report = _validate(apps, tmp_path, "--grafana-url", graf)
        assert code == 1, out
        assert_failed_exactly(report, {"monitoring.grafana_datasources", "monitoring.grafana_dashboards"})
        for name in ("monitoring.grafana_datasources", "monitoring.grafana_dashboards"):
            assert "401" in check(report, name)["message"], name


def test_alertmanager_unreachable_fails(apps: dict[str, RefApp], tmp_path: Path) -> None:
    code, out, report = _validate(
        apps,
        tmp_path,
        "--alertmanager-url",
        f"http://127.0.0.1:{free_port()}",
        env={"VALIDATION_RETRIES": "0"},
    )
    assert code == 1, out
    assert_failed_exactly(report, {"monitoring.alertmanager"})


def test_alertmanager_requires_credentials(
    apps: dict[str, RefApp], stack: tuple[str, str], tmp_path: Path
) -> None:
    """The rendered web config: no or wrong credentials fail the check; the rendered ones pass."""
    _, am = stack
    wrong = {"ALERTMANAGER_USER": "prometheus", "ALERTMANAGER_PASSWORD": "wrong"}
    for env, reason in (({}, "requires authentication"), (wrong, "status 401")):
        code, out, report = _validate(apps, tmp_path, "--alertmanager-url", am, env=env)
        assert code == 1, out
        assert_failed_exactly(report, {"monitoring.alertmanager"})
        assert reason in check(report, "monitoring.alertmanager")["message"], out
    code, out, report = _validate(apps, tmp_path, "--alertmanager-url", am, env=AM_CREDENTIALS)
    assert code == 0, out
    assert check(report, "monitoring.alertmanager")["status"] == "passed"


def test_alertmanager_without_auth_fails(apps: dict[str, RefApp], tmp_path: Path) -> None:
    """An Alertmanager that answers anyone (no web config) is a failure even with credentials."""
    with alertmanager(tmp_path / "am", auth=False) as am:
        code, out, report = _validate(apps, tmp_path, "--alertmanager-url", am, env=AM_CREDENTIALS)
    assert code == 1, out
    assert_failed_exactly(report, {"monitoring.alertmanager"})
    assert "without credentials" in check(report, "monitoring.alertmanager")["message"]


def test_silences_need_the_rendered_credentials(stack: tuple[str, str]) -> None:
    """The real Alertmanager with the rendered web config: a silence without credentials is refused,
    with the rendered user and password it is created (delivery from Prometheus with the rendered
    password file: tests/stack/test_monitoring_live.py)."""
    import httpx

    prom, am = stack
    silence = {"matchers": [{"name": "alertname", "value": "PaperTradingModeOff", "isRegex": False}],
               "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2030-01-02T00:00:00Z",
               "createdBy": "test", "comment": "must need auth"}
    refused = httpx.post(f"{am}/api/v2/silences", json=silence, timeout=5)
    assert refused.status_code == 401
    auth = ("prometheus", alertmanager_password())
    created = httpx.post(f"{am}/api/v2/silences", json=silence, auth=auth, timeout=5)
    assert created.status_code == 200, created.text
    active = httpx.get(f"{prom}/api/v1/alertmanagers", timeout=5).json()["data"]["activeAlertmanagers"]
    assert [a["url"] for a in active] == [f"{am}/api/v2/alerts"]
