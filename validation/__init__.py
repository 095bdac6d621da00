"""Post-deploy validation: concurrent checks against a deployed color and a JSON report.

from validation import ValidationOptions, validate
report = validate(ValidationOptions(base_url="https://127.0.0.1:8443", color="green"))
report.passed  # every blocking check passed

A plain library (no Pulumi, no `components`): the promotion gate resource
(`release/gate.py`) and the CLI both call it.
"""

from __future__ import annotations

import asyncio

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


async def avalidate(options: ValidationOptions) -> ValidationReport:
    # The one deferred import in this package. settings/ imports
    # validation.options on every Pulumi program evaluation, which runs this file first;
    # the runner brings httpx and every check (+0.15 G instructions, +3.4 % of an
    # evaluation, bench/evaluate.py --instructions) that only a gate run or the CLI uses.
    from validation.report import build_report
    from validation.runner import run_checks

    checks, started, seconds = await run_checks(options)
    return build_report(options, checks, started, seconds)


def validate(options: ValidationOptions) -> ValidationReport:
    """Run every applicable check once (blocking call; starts its own event loop)."""
    return asyncio.run(avalidate(options))
