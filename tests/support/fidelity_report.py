"""Assertions on the structured validation result: which blocking checks failed, by name.

Fault-mode tests assert on the JSON report (`python -m validation --report FILE`), on a
`ValidationReport`, or on `DeploymentError.failed_checks`, never on the rendered table
(which lists passed checks too). The expected set is exact: the check the fault targets,
plus only the checks the fault implies (written out in the test).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from validation.errors import DeploymentError
from validation.models import ValidationReport

#: Every blocking check that runs against the app over plain HTTP without monitoring URLs or
#: exchange keys: what an unreachable/unresponsive app must fail, all of it.
APP_BLOCKING_CHECKS = frozenset({
    "health.basic", "health.detailed", "health.ready", "health.live", "health.metrics",
    "safety.paper_trading_mode", "safety.real_trades_blocked", "safety.exchange_permissions",
    "safety.metrics", "safety.deployment_color", "safety.background_work",
    "security.headers", "security.rate_limit", "security.sql_injection", "security.xss",
    "security.command_injection",
})


def _checks(report: ValidationReport | Mapping[str, Any]) -> list[dict[str, Any]]:
    if isinstance(report, ValidationReport):
        return [c.model_dump() for c in report.checks]
    checks = report["checks"]
    assert isinstance(checks, list), report
    return checks


def failed_blocking(report: ValidationReport | Mapping[str, Any]) -> set[str]:
    """Names of the blocking checks that failed (report model or its JSON document)."""
    return {c["name"] for c in _checks(report) if c["blocking"] and c["status"] == "failed"}


def check(report: ValidationReport | Mapping[str, Any], name: str) -> dict[str, Any]:
    """One check's result by name; a check missing from the report fails the test."""
    found = [c for c in _checks(report) if c["name"] == name]
    assert len(found) == 1, f"{name} appears {len(found)} times in the report"
    return found[0]


def describe(report: ValidationReport | Mapping[str, Any]) -> str:
    """The failed checks with their messages, for assertion messages."""
    return "; ".join(
        f"{c['name']}: {c['message']}" for c in _checks(report) if c["status"] == "failed"
    ) or "no check failed"


def assert_failed_exactly(report: ValidationReport | Mapping[str, Any], expected: Iterable[str]) -> None:
    """The blocking checks that failed are exactly `expected` (no more, no fewer)."""
    want = set(expected)
    got = failed_blocking(report)
    assert got == want, (
        f"failed blocking checks {sorted(got)}, expected {sorted(want)}: "
        f"missing {sorted(want - got)}, unexpected {sorted(got - want)} ({describe(report)})"
    )


def assert_failed_checks(error: DeploymentError, expected: Iterable[str]) -> None:
    """The gate's error names exactly `expected` in `failed_checks` (each once)."""
    want = set(expected)
    got = error.failed_checks
    assert len(got) == len(set(got)), f"failed_checks repeats a name: {got}"
    assert set(got) == want, (
        f"failed_checks {sorted(got)}, expected {sorted(want)}: missing {sorted(want - set(got))}, "
        f"unexpected {sorted(set(got) - want)}"
    )
