"""Build the report from check results, and render it as a terminal table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from validation.errors import DeploymentError, DeploymentErrorType
from validation.models import (
    ApplicationMetrics,
    Category,
    CheckResult,
    DeploymentStatus,
    FailedStep,
    PaperTradingMetrics,
    ProductionMetrics,
    Target,
    TestResult,
    ValidationFlags,
    ValidationReport,
)
from validation.options import ValidationOptions


def _category_result(checks: list[CheckResult], start: datetime, end: datetime) -> TestResult:
    ran = [c for c in checks if c.status != "skipped"]
    failed = [c for c in ran if c.status == "failed"]
    return TestResult(
        status="failed" if failed else "passed",
        start_time=start,
        end_time=end,
        passed_tests=len(ran) - len(failed),
        failed_tests=len(failed),
        total_tests=len(ran),
        errors=[f"{c.name}: {c.message}" for c in failed],
    )


def _ok(checks: list[CheckResult], category: Category) -> bool:
    return all(c.status != "failed" for c in checks if c.category == category)


def error_for(failed: list[CheckResult]) -> DeploymentError | None:
    """The typed error for the first failed blocking check (safety first, then security)."""
    if not failed:
        return None
    rank = {Category.SAFETY: 0, Category.SECURITY: 1, Category.HEALTH: 2, Category.MONITORING: 3}
    first = sorted(failed, key=lambda c: rank.get(c.category, 9))[0]
    kind = {
        Category.SECURITY: DeploymentErrorType.SECURITY_ERROR,
        Category.MONITORING: DeploymentErrorType.MONITORING_ERROR,
    }.get(first.category, DeploymentErrorType.VALIDATION_ERROR)
    names = ", ".join(c.name for c in failed)
    return DeploymentError(
        kind,
        "validation",
        first.name,
        f"blocking checks failed: {names}",
        recoverable=first.category != Category.SAFETY,
    )


def build_report(
    options: ValidationOptions, checks: list[CheckResult], started: datetime, seconds: float
) -> ValidationReport:
    finished = started + timedelta(seconds=seconds)
    failed = [c for c in checks if c.failed_blocking]
    by_cat = {cat: [c for c in checks if c.category == cat] for cat in Category}
    perf = next((c for c in checks if c.name == "performance.p95_latency"), None)
    safety_metric = next((c for c in checks if c.name == "safety.metrics"), None)
    monitoring_ran = [c for c in by_cat[Category.MONITORING] if c.status != "skipped"]
    error = error_for(failed)
    status = DeploymentStatus(
        phase="validation" if failed else "complete",
        start_time=started,
        current_step=failed[0].name if failed else "done",
        completed_steps=[c.name for c in checks if c.status == "passed"],
        failed_steps=[
            FailedStep(step=c.name, error=c.message, timestamp=finished)
            for c in checks
            if c.status == "failed"
        ],
        testing={cat.value: _category_result(items, started, finished) for cat, items in by_cat.items()},
        validation=ValidationFlags(
            security_validated=_ok(checks, Category.SECURITY),
            monitoring_active=_ok(checks, Category.MONITORING) if monitoring_ran else None,
            paper_trading_safe=_ok(checks, Category.SAFETY),
            performance_acceptable=_ok(checks, Category.PERFORMANCE),
        ),
    )
    pdet = perf.details if perf else {}
    metrics = ProductionMetrics(
        application=ApplicationMetrics(
            response_time=pdet.get("p95Ms"),
            throughput=pdet.get("throughput"),
            error_rate=pdet.get("errorRate"),
        ),
        paper_trading=PaperTradingMetrics(
            real_trades_blocked=safety_metric.details.get("realTradesBlocked") if safety_metric else None,
            safety_checks_pass=_ok(checks, Category.SAFETY),
        ),
    )
    return ValidationReport(
        target=Target(base_url=options.base_url, color=options.color, server_name=options.server_name),
        started_at=started.astimezone(UTC),
        finished_at=finished.astimezone(UTC),
        duration_seconds=round(seconds, 3),
        passed=not failed,
        checks=checks,
        status=status,
        metrics=metrics,
        error=error.to_dict() if error else None,
    )


def render_table(report: ValidationReport, width: int = 100) -> str:
    """A fixed-width table: one row per check, then a verdict naming the failed checks."""
    rows = [("CHECK", "RESULT", "BLOCK", "MS", "DETAIL")]
    for c in report.checks:
        result = {"passed": "PASS", "failed": "FAIL", "skipped": "skip"}[c.status]
        rows.append((c.name, result, "yes" if c.blocking else "no", f"{c.duration_ms:.0f}", c.message))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for row in rows:
        head = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4]))
        detail = row[4].replace("\n", " ")
        room = max(20, width - len(head) - 2)
        lines.append(f"{head}  {detail if len(detail) <= room else detail[: room - 1] + '…'}")
    counts = {s: sum(1 for c in report.checks if c.status == s) for s in ("passed", "failed", "skipped")}
    target = report.target.base_url + (f" (color {report.target.color})" if report.target.color else "")
    lines.append("")
    lines.append(
        f"{target}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped "
        f"in {report.duration_seconds:.2f}s"
    )
    failed = report.failed_blocking
    if failed:
        lines.append("VALIDATION FAILED - blocking checks failed: " + ", ".join(c.name for c in failed))
        for c in failed:
            lines.append(f"  - {c.name}: {c.message}")
    else:
        lines.append("VALIDATION PASSED - every blocking check passed")
    return "\n".join(lines)


def headline(report: ValidationReport, unreachable: str | None = None) -> str:
    """One line that says what happened, printed before the table.

    `unreachable` is why the target could not be connected to at all (the CLI probes it
    when checks failed): then every failure has that one cause and the line says so.
    """
    target = report.target.base_url + (f" (color {report.target.color})" if report.target.color else "")
    failed = [c for c in report.checks if c.status == "failed"]
    blocking = report.failed_blocking
    if unreachable is not None and failed:
        return f"target {target} unreachable: {unreachable}; {len(failed)} checks failed"
    if blocking:
        names = ", ".join(c.name for c in blocking[:3])
        if len(blocking) > 3:
            names += f" and {len(blocking) - 3} more"
        return f"target {target}: VALIDATION FAILED, {len(blocking)} blocking checks failed ({names})"
    passed = sum(1 for c in report.checks if c.status == "passed")
    extra = f", {len(failed)} non-blocking failed" if failed else ""
    return f"target {target}: VALIDATION PASSED, {passed} checks passed{extra}"


def summary(report: ValidationReport) -> str:
    """The short text the gate raises with."""
    failed = report.failed_blocking
    head = f"promotion gate: validation of {report.target.color or report.target.base_url} failed"
    return head + "".join(f"\n  - {c.name}: {c.message}" for c in failed)
