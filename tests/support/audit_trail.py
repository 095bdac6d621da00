"""Audit trails written by the product's writer and checked by the product's check."""

from __future__ import annotations

from typing import Any

from release.audit import AuditRecord


def _check(lines: list[str], color: str = "green") -> tuple[list[str], dict[str, Any]]:
    from validation.checks_audit import audit_findings

    problems, details = audit_findings(lines, color)
    return problems, dict(details)

def _line(operation: str, result: str, to: str | None) -> str:
    return AuditRecord(actor="a", stack="prod", operation=operation, result=result,  # type: ignore[arg-type]
                       duration_ms=1, to=to).line()
