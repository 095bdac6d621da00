"""The validation CLI against the real reference app on loopback: healthy -> 0, each fault -> 1."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakes.validation_servers import RefApp, free_port, reference_app
from tests.support.fidelity_report import APP_BLOCKING_CHECKS, assert_failed_exactly, check, failed_blocking
from tests.support.validation_cli import run_cli, run_report


@pytest.fixture(scope="module")
def app() -> Iterator[RefApp]:
    with reference_app(color="blue", env={"SLOW_SECONDS": "3"}) as running:
        yield running


@pytest.fixture()
def clean(app: RefApp) -> Iterator[RefApp]:
    app.set_faults()
    yield app
    app.set_faults()




def test_healthy_reference_app_passes_with_report(clean: RefApp, tmp_path: Path) -> None:
    report_file = tmp_path / "out" / "report.json"
    result = run_cli("--base-url", clean.url, "--color", "blue", "--report", str(report_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "VALIDATION PASSED" in result.stdout
    report = json.loads(report_file.read_text())
    assert report["passed"] is True and failed_blocking(report) == set()
    passed = [c["name"] for c in report["checks"] if c["status"] == "passed"]
    assert len(passed) >= 15, passed
    assert report["status"]["phase"] == "complete"
    assert report["status"]["validation"]["paperTradingSafe"] is True
    assert report["status"]["testing"]["safety"]["failedTests"] == 0
    assert report["metrics"]["application"]["responseTime"] > 0
    assert report["metrics"]["paperTrading"]["safetyChecksPass"] is True
    assert report["error"] is None


#: Each fault and exactly the blocking checks it fails. Beyond the targeted check, only what
#: the fault implies: error_5xx answers 500 on every app path (only the headers still pass);
#: paper mode off also shows in /metrics; invalid JSON breaks every reader of detailed health
#: (deployment_color included); a reflecting search endpoint also reflects the SQL probes,
#: which carry quotes (the command probes carry none of `<>"'`); injection_5xx fails all three
#: probe families; a down dependency makes detailed health and readiness fail.
FAULTS = [
    ("error_5xx", APP_BLOCKING_CHECKS - {"security.headers"}),
    ("not_ready", {"health.ready"}),
    ("paper_mode_off", {"safety.paper_trading_mode", "safety.metrics"}),
    ("real_trades_allowed", {"safety.real_trades_blocked"}),
    ("trading_key", {"safety.exchange_permissions"}),
    ("wrong_color", {"safety.deployment_color"}),
    (
        "invalid_json",
        {
            "health.detailed", "safety.paper_trading_mode", "safety.real_trades_blocked",
            "safety.exchange_permissions", "safety.deployment_color", "safety.background_work",
        },
    ),
    ("injection_5xx", {"security.sql_injection", "security.xss", "security.command_injection"}),
    ("injection_reflect", {"security.xss", "security.sql_injection"}),
    ("no_security_headers", {"security.headers"}),
    ("no_rate_limit", {"security.rate_limit"}),
    ("dependency_down", {"health.detailed", "health.ready"}),
]


@pytest.mark.parametrize(("fault", "expected"), FAULTS, ids=[f for f, _ in FAULTS])
def test_each_fault_fails_the_named_check(
    clean: RefApp, tmp_path: Path, fault: str, expected: set[str]
) -> None:
    clean.set_faults(fault)
    result, report = run_report(tmp_path, "--base-url", clean.url, "--color", "blue")
    assert result.returncode == 1, result.stdout + result.stderr
    assert report["passed"] is False
    assert_failed_exactly(report, expected)
    # The error names the same checks as the report.
    assert report["error"]["message"] == "blocking checks failed: " + ", ".join(
        c["name"] for c in report["checks"] if c["blocking"] and c["status"] == "failed"
    )


def test_fault_from_environment_at_start(tmp_path: Path) -> None:
    with reference_app(faults="paper-mode-off,wrong_color", color="green") as app:
        result, report = run_report(tmp_path, "--base-url", app.url, "--color", "green")
    assert result.returncode == 1
    # paper mode off implies safety.metrics (paper_trading_mode 0 in /metrics).
    assert_failed_exactly(
        report, {"safety.paper_trading_mode", "safety.metrics", "safety.deployment_color"}
    )


def test_expected_color_mismatch_fails(clean: RefApp, tmp_path: Path) -> None:
    result, report = run_report(tmp_path, "--base-url", clean.url, "--color", "green")
    assert result.returncode == 1
    assert_failed_exactly(report, {"safety.deployment_color"})


def test_unsafe_environment_is_reported(tmp_path: Path) -> None:
    with reference_app(env={"PAPER_TRADING_MODE": "false", "ALLOW_REAL_TRADES": "true"}) as app:
        result, report = run_report(tmp_path, "--base-url", app.url)
    assert result.returncode == 1
    assert_failed_exactly(
        report, {"safety.paper_trading_mode", "safety.metrics", "safety.real_trades_blocked"}
    )


def test_slow_beyond_timeout_fails_within_the_deadline(clean: RefApp, tmp_path: Path) -> None:
    clean.set_faults("slow")  # every answer takes 3 s: every check that asks the app times out
    start = time.monotonic()
    result, report = run_report(tmp_path, "--base-url", clean.url, env={"VALIDATION_CHECK_TIMEOUT": "1"})
    elapsed = time.monotonic() - start
    assert result.returncode == 1
    assert_failed_exactly(report, APP_BLOCKING_CHECKS)
    assert "timed out" in check(report, "health.basic")["message"]
    assert elapsed < 8, elapsed


def test_overall_deadline_bounds_the_run(clean: RefApp, tmp_path: Path) -> None:
    clean.set_faults("slow")
    start = time.monotonic()
    result, report = run_report(tmp_path, "--base-url", clean.url, "--timeout", "1.5")
    assert result.returncode == 1
    assert_failed_exactly(report, APP_BLOCKING_CHECKS)
    assert "deadline" in check(report, "health.basic")["message"]
    assert time.monotonic() - start < 8


def test_connection_refused_fails(tmp_path: Path) -> None:
    result, report = run_report(
        tmp_path, "--base-url", f"http://127.0.0.1:{free_port()}", env={"VALIDATION_RETRIES": "1"}
    )
    assert result.returncode == 1
    assert_failed_exactly(report, APP_BLOCKING_CHECKS)
    assert "connection failed" in check(report, "health.basic")["message"]


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
    from validation.runner import CHECKS

    result = run_cli("--help")
    assert result.returncode == 0
    assert len(CHECKS) >= 20
    for item in CHECKS:
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
        ["--base-url", "http://127.0.0.1:1", "--expect-work-role", "leader"],
        ["--base-url", "http://127.0.0.1:1", "--work-enabled", "maybe"],
    ],
)
def test_bad_usage_exits_2(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error" in result.stderr


def test_work_flags_reach_the_options() -> None:
    from validation.__main__ import options_from, parser

    base = ["--base-url", "http://127.0.0.1:1"]
    unset = options_from(parser().parse_args(base), {})
    assert (unset.expect_work_role, unset.work_enabled) == (None, None)
    for role, enabled, want in (("standby", "true", True), ("active", "false", False)):
        args = parser().parse_args([*base, "--expect-work-role", role, "--work-enabled", enabled])
        options = options_from(args, {})
        assert (options.expect_work_role, options.work_enabled) == (role, want)
