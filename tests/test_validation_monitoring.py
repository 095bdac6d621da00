"""Monitoring checks against real Prometheus and Alertmanager (Debian packages) and a fake Grafana API."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.fakes.grafana import FakeGrafana, fake_grafana
from tests.fakes.validation_servers import RefApp, free_port, reference_app, wait_port
from tests.support import require_tool, stop_process
from tests.test_validation_cli import failed_checks, run_cli

pytestmark = pytest.mark.tools

RULES = """
groups:
  - name: paper-trading
    interval: 1s
    rules:
      - alert: PaperTradingModeOff
        expr: paper_trading_mode == 0
      - record: instance_up:collapsed
        expr: label_replace(up, "instance", "same", "instance", ".*")
"""


@contextmanager
def prometheus(tmp: Path, targets: list[str]) -> Iterator[str]:
    binary = require_tool("prometheus")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "rules.yml").write_text(RULES)
    (tmp / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{tmp / 'rules.yml'}]\n"
        "scrape_configs:\n"
        "  - job_name: app\n"
        f"    static_configs: [{{targets: {json.dumps(targets)}, labels: {{color: green}}}}]\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, timeout=20)
        url = f"http://127.0.0.1:{port}"
        _wait_rules_evaluated(url, timeout=30)
        yield url
    finally:
        stop_process(proc)


def _wait_rules_evaluated(url: str, timeout: float) -> None:
    """Until every target was scraped and the rules evaluated after that (no race with the checks)."""
    import time

    import httpx

    def ready(path: str, key: str, field: str) -> bool:
        try:
            data = httpx.get(f"{url}{path}", timeout=2).json()["data"]
        except (httpx.HTTPError, KeyError, ValueError):
            return False
        items = data[key] if key != "groups" else [r for g in data["groups"] for r in g["rules"]]
        return bool(items) and all(item.get(field) != "unknown" for item in items)

    deadline = time.monotonic() + timeout
    while not ready("/api/v1/targets", "activeTargets", "health"):
        if time.monotonic() > deadline:
            raise AssertionError(f"Prometheus at {url} did not scrape its targets within {timeout}s")
        time.sleep(0.2)
    time.sleep(2.5)  # two rule evaluations (interval 1s) on the scraped data
    while not ready("/api/v1/rules", "groups", "health"):
        if time.monotonic() > deadline:
            raise AssertionError(f"Prometheus at {url} did not evaluate its rules within {timeout}s")
        time.sleep(0.2)


@contextmanager
def alertmanager(tmp: Path) -> Iterator[str]:
    binary = require_tool("prometheus-alertmanager")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "am.yml").write_text(
        "route: {receiver: null}\nreceivers: [{name: null}]\n".replace("null", "'blackhole'")
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / 'am.yml'}",
            f"--storage.path={tmp / 'am'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, timeout=20)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def app() -> Iterator[RefApp]:
    with reference_app(color="green") as running:
        yield running


def _validate(
    app: RefApp, tmp: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, set[str]]:
    report = tmp / "report.json"
    result = run_cli(
        "--base-url",
        app.url,
        "--color",
        "green",
        "--report",
        str(report),
        *args,
        env={"VALIDATION_CHECK_TIMEOUT": "8", **(env or {})},
    )
    return result.returncode, result.stdout, failed_checks(json.loads(report.read_text()))


def test_healthy_monitoring_passes(app: RefApp, tmp_path: Path) -> None:
    grafana = FakeGrafana()
    with (
        prometheus(tmp_path / "prom", [f"127.0.0.1:{app.port}"]) as prom,
        alertmanager(tmp_path / "am") as am,
        fake_grafana(grafana) as graf,
    ):
        code, out, failed = _validate(
            app,
            tmp_path,
            "--prometheus-url",
            prom,
            "--alertmanager-url",
            am,
            "--grafana-url",
            graf,
            env={"GRAFANA_USER": grafana.user, "GRAFANA_PASSWORD": grafana.password},
        )
    assert code == 0, out
    for name in (
        "monitoring.prometheus_targets",
        "monitoring.prometheus_rules",
        "monitoring.alertmanager",
        "monitoring.grafana_datasources",
        "monitoring.grafana_dashboards",
    ):
        assert f"{name}" in out and "PASS" in next(line for line in out.splitlines() if line.startswith(name))


def test_target_down_and_rule_errors_fail(app: RefApp, tmp_path: Path) -> None:
    with prometheus(tmp_path / "prom", [f"127.0.0.1:{app.port}", f"127.0.0.1:{free_port()}"]) as prom:
        code, out, failed = _validate(app, tmp_path, "--prometheus-url", prom)
    assert code == 1
    assert {"monitoring.prometheus_targets", "monitoring.prometheus_rules"} <= failed, out


def test_candidate_without_targets_fails(app: RefApp, tmp_path: Path) -> None:
    with prometheus(tmp_path / "prom", [f"127.0.0.1:{app.port}"]) as prom:
        code, out, failed = _validate(
            app, tmp_path, "--prometheus-url", prom, env={"VALIDATION_EXPECTED_REPLICAS": "2"}
        )
    assert code == 1 and "monitoring.prometheus_targets" in failed, out
    assert "1 target(s) for green, expected 2" in out


def test_grafana_unhealthy_datasource_empty_dashboards_and_bad_auth(app: RefApp, tmp_path: Path) -> None:
    grafana = FakeGrafana(datasources={"prometheus": "OK", "loki": "ERROR"}, dashboards=[])
    with fake_grafana(grafana) as graf:
        code, out, failed = _validate(
            app,
            tmp_path,
            "--grafana-url",
            graf,
            env={"GRAFANA_USER": grafana.user, "GRAFANA_PASSWORD": grafana.password},
        )
        assert code == 1
        assert {"monitoring.grafana_datasources", "monitoring.grafana_dashboards"} <= failed, out
        assert "loki" in out
        code, out, failed = _validate(app, tmp_path, "--grafana-url", graf)
        assert code == 1 and "401" in out


def test_alertmanager_unreachable_fails(app: RefApp, tmp_path: Path) -> None:
    code, out, failed = _validate(
        app,
        tmp_path,
        "--alertmanager-url",
        f"http://127.0.0.1:{free_port()}",
        env={"VALIDATION_RETRIES": "0"},
    )
    assert code == 1 and failed == {"monitoring.alertmanager"}, out
