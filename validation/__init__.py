"""Post-deploy validation: concurrent checks against a deployed color and a JSON report.

from validation import ValidationOptions, validate
report = validate(ValidationOptions(base_url="https://127.0.0.1:8443", color="green"))
report.passed  # every blocking check passed

A plain library (no Pulumi, no `components`): the promotion gate resource
(`components/gate.py`) and the CLI both call it. The models load on first use: the
program imports the gate on every evaluation, and it needs them only when it runs the checks.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from validation.models import CheckResult, ValidationReport
    from validation.options import ExchangeCredentials, ValidationOptions

__all__ = [
    "CheckResult",
    "ExchangeCredentials",
    "ValidationOptions",
    "ValidationReport",
    "avalidate",
    "validate",
]

_LAZY = {
    "CheckResult": "validation.models",
    "ValidationReport": "validation.models",
    "ExchangeCredentials": "validation.options",
    "ValidationOptions": "validation.options",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'validation' has no attribute {name!r}")


async def avalidate(options: ValidationOptions) -> ValidationReport:
    from validation.report import build_report
    from validation.runner import run_checks

    checks, started, seconds = await run_checks(options)
    return build_report(options, checks, started, seconds)


def validate(options: ValidationOptions) -> ValidationReport:
    """Run every applicable check once (blocking call; starts its own event loop)."""
    return asyncio.run(avalidate(options))
