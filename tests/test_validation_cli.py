"""The validation CLI against the real reference app on loopback: healthy -> 0, each fault -> 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.validation_servers import ROOT, RefApp, free_port, reference_app


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("VALIDATION_", "BINANCE_", "KUCOIN_"))
    }
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "validation", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def app() -> Iterator[RefApp]:
    with reference_app(color="blue", env={"SLOW_SECONDS": "3"}) as running:
        yield running


@pytest.fixture()
def clean(app: RefApp) -> Iterator[RefApp]:
    app.set_faults()
    yield app
    app.set_faults()


def failed_checks(report: dict[str, object]) -> set[str]:
    checks = report["checks"]
    assert isinstance(checks, list)
    return {c["name"] for c in checks if c["status"] == "failed" and c["blocking"]}


def test_healthy_reference_app_passes_with_report(clean: RefApp, tmp_path: Path) -> None:
    report_file = tmp_path / "out" / "report.json"
    result = run_cli("--base-url", clean.url, "--color", "blue", "--report", str(report_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "VALIDATION PASSED" in result.stdout
    report = json.loads(report_file.read_text())
    assert report["passed"] is True
    passed = [c["name"] for c in report["checks"] if c["status"] == "passed"]
    assert len(passed) >= 15, passed
    assert report["status"]["phase"] == "complete"
    assert report["status"]["validation"]["paperTradingSafe"] is True
    assert report["status"]["testing"]["safety"]["failedTests"] == 0
    assert report["metrics"]["application"]["responseTime"] > 0
    assert report["metrics"]["paperTrading"]["safetyChecksPass"] is True
    assert report["error"] is None


FAULTS = [
    ("error_5xx", {"health.basic", "health.detailed", "health.ready", "health.live"}),
    ("not_ready", {"health.ready"}),
    ("paper_mode_off", {"safety.paper_trading_mode", "safety.metrics"}),
    ("real_trades_allowed", {"safety.real_trades_blocked"}),
    ("trading_key", {"safety.exchange_permissions"}),
    ("wrong_color", {"safety.deployment_color"}),
    ("invalid_json", {"health.detailed", "safety.paper_trading_mode"}),
    ("injection_5xx", {"security.sql_injection", "security.xss", "security.command_injection"}),
    ("injection_reflect", {"security.xss"}),
    ("no_security_headers", {"security.headers"}),
    ("no_rate_limit", {"security.rate_limit"}),
    ("dependency_down", {"health.detailed", "health.ready"}),
]


@pytest.mark.parametrize(("fault", "expected"), FAULTS, ids=[f for f, _ in FAULTS])
def test_each_fault_fails_the_named_check(
    clean: RefApp, tmp_path: Path, fault: str, expected: set[str]
) -> None:
    clean.set_faults(fault)
    report_file = tmp_path / "report.json"
    result = run_cli("--base-url", clean.url, "--color", "blue", "--report", str(report_file))
    assert result.returncode == 1, result.stdout + result.stderr
    failed = failed_checks(json.loads(report_file.read_text()))
    assert expected <= failed, (fault, failed)
    verdict = next(line for line in result.stdout.splitlines() if line.startswith("VALIDATION FAILED"))
    for name in expected:
        assert name in verdict


def test_fault_from_environment_at_start() -> None:
    with reference_app(faults="paper-mode-off,wrong_color", color="green") as app:
        result = run_cli("--base-url", app.url, "--color", "green")
    assert result.returncode == 1
    assert "safety.paper_trading_mode" in result.stdout and "safety.deployment_color" in result.stdout


def test_expected_color_mismatch_fails(clean: RefApp) -> None:
    result = run_cli("--base-url", clean.url, "--color", "green")
    assert result.returncode == 1
    assert "safety.deployment_color" in result.stdout.splitlines()[-2]


def test_unsafe_environment_is_reported() -> None:
    with reference_app(env={"PAPER_TRADING_MODE": "false", "ALLOW_REAL_TRADES": "true"}) as app:
        result = run_cli("--base-url", app.url)
    assert result.returncode == 1
    assert "safety.paper_trading_mode" in result.stdout and "safety.real_trades_blocked" in result.stdout


def test_slow_beyond_timeout_fails_within_the_deadline(clean: RefApp) -> None:
    clean.set_faults("slow")  # every answer takes 3 s
    start = time.monotonic()
    result = run_cli("--base-url", clean.url, env={"VALIDATION_CHECK_TIMEOUT": "1"})
    elapsed = time.monotonic() - start
    assert result.returncode == 1
    assert "health.basic" in result.stdout and "timed out" in result.stdout
    assert elapsed < 8, elapsed


def test_overall_deadline_bounds_the_run(clean: RefApp) -> None:
    clean.set_faults("slow")
    start = time.monotonic()
    result = run_cli("--base-url", clean.url, "--timeout", "1.5")
    assert result.returncode == 1
    assert "deadline" in result.stdout or "timed out" in result.stdout
    assert time.monotonic() - start < 8


def test_connection_refused_fails() -> None:
    result = run_cli("--base-url", f"http://127.0.0.1:{free_port()}", env={"VALIDATION_RETRIES": "1"})
    assert result.returncode == 1
    assert "health.basic" in result.stdout and "connection failed" in result.stdout


def test_checks_run_concurrently(tmp_path: Path) -> None:
    """Every answer takes 1 s: the run lasts about one check, not the sum of all of them."""
    report_file = tmp_path / "r.json"
    with reference_app(env={"SLOW_SECONDS": "1", "FAULTS": "slow"}) as slow:
        result = run_cli(
            "--base-url",
            slow.url,
            "--report",
            str(report_file),
            env={"VALIDATION_CHECK_TIMEOUT": "5", "VALIDATION_SKIP": "performance.p95_latency"},
        )
    assert result.returncode == 0, result.stdout
    report = json.loads(report_file.read_text())
    ran = [c for c in report["checks"] if c["status"] == "passed"]
    total_ms = sum(c["durationMs"] for c in ran)
    slowest_ms = max(c["durationMs"] for c in ran)
    assert len(ran) >= 14 and slowest_ms >= 1000
    assert report["durationSeconds"] * 1000 < slowest_ms + 1000, (report["durationSeconds"], slowest_ms)
    assert report["durationSeconds"] * 1000 < total_ms / 5, (report["durationSeconds"], total_ms)


def test_help_documents_every_check() -> None:
    from validation.runner import REGISTRY, _load_checks

    result = run_cli("--help")
    assert result.returncode == 0
    _load_checks()
    assert len(REGISTRY) >= 20
    for item in REGISTRY:
        assert item.name in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--base-url", "ftp://x"],
        ["--base-url", "http://127.0.0.1:1", "--color", "red"],
        ["--base-url", "http://127.0.0.1:1", "--timeout", "soon"],
        ["--base-url", "http://127.0.0.1:1", "--insecure", "--ca-file", "/etc/hostname"],
        ["--base-url", "http://127.0.0.1:1", "--ca-file", "/nonexistent.pem"],
    ],
)
def test_bad_usage_exits_2(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error" in result.stderr
