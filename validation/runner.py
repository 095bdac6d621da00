"""Run every applicable check concurrently under one deadline.

Each check gets its own budget (`check_timeout`, retries included); HTTP requests
retry connection errors and 502/503/504 with exponential backoff while the budget
lasts (`validation.context`). A check fails by raising `CheckFailed`; anything else it
raises is a failure too.

This module imports every `checks_*` module, which registers its checks
(`validation.registry`); no check imports the runner.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from validation import (
    checks_audit,
    checks_exchange,
    checks_health,
    checks_monitoring,
    checks_performance,
    checks_safety,
    checks_security,
    checks_work,
)
from validation.context import CheckFailed, CheckSkipped, Context, describe, ssl_context
from validation.models import Category, CheckResult
from validation.options import ValidationOptions
from validation.registry import REGISTRY, Check

#: The modules whose `@check` functions make up a run (imported for that registration).
CHECK_MODULES = (
    checks_health,
    checks_safety,
    checks_work,
    checks_exchange,
    checks_security,
    checks_audit,
    checks_monitoring,
    checks_performance,
)


def _order(item: Check) -> tuple[int, int, int]:
    """Category first (health ... performance), then CHECK_MODULES, then declaration order:
    the same order whichever module a caller happened to import first."""
    modules = [module.__name__ for module in CHECK_MODULES]
    return (list(Category).index(item.category), modules.index(item.fn.__module__), REGISTRY.index(item))


#: Every registered check, in report order.
CHECKS: tuple[Check, ...] = tuple(sorted(REGISTRY, key=_order))


def applicable(options: ValidationOptions) -> list[tuple[Check, str | None]]:
    """Every registered check with its skip reason (None = it runs)."""
    out: list[tuple[Check, str | None]] = []
    for item in CHECKS:
        reason = "skipped by configuration" if item.name in options.skip else None
        if reason is None and item.skip_when is not None:
            reason = item.skip_when(options)
        out.append((item, reason))
    return out


async def _run_one(item: Check, ctx: Context, budget: float) -> CheckResult:
    start = time.perf_counter()
    status: str = "passed"
    details: dict[str, Any] = {}
    try:
        async with asyncio.timeout(budget):
            outcome = await item.fn(ctx)
        message, details = outcome.message, dict(outcome.details)
    except CheckFailed as exc:
        status, message, details = "failed", exc.message, dict(exc.details)
    except CheckSkipped as exc:
        status, message = "skipped", str(exc)
    except TimeoutError:
        status, message = "failed", f"timed out after {budget:.1f}s"
    except Exception as exc:  # noqa: BLE001 - any error in a check is that check's failure
        status, message = "failed", f"{type(exc).__name__}: {describe(exc)}"
    return CheckResult(
        name=item.name,
        category=item.category,
        blocking=item.blocking,
        status=status,  # type: ignore[arg-type]
        message=message,
        duration_ms=round((time.perf_counter() - start) * 1000, 1),
        attempts=ctx.attempts,
        details=details,
    )


def make_client(
    options: ValidationOptions, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The client every check shares; `transport` replaces the network (the fast tests' answers)."""
    return httpx.AsyncClient(
        transport=transport,
        verify=ssl_context(options),
        timeout=httpx.Timeout(options.check_timeout),
        follow_redirects=False,
        trust_env=False,
        # Few connections, reused: fewer TLS handshakes for the client's CPU.
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
    )


async def run_checks(
    options: ValidationOptions, transport: httpx.AsyncBaseTransport | None = None
) -> tuple[list[CheckResult], datetime, float]:
    """Run all applicable checks concurrently; return results in `CHECKS` order."""
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    plan = applicable(options)
    budget = min(options.check_timeout, options.timeout)
    results: dict[str, CheckResult] = {}
    async with make_client(options, transport) as client:
        root = Context(options, client)
        tasks: dict[str, asyncio.Task[CheckResult]] = {}
        for item, reason in plan:
            if reason is not None:
                results[item.name] = CheckResult(
                    name=item.name,
                    category=item.category,
                    blocking=item.blocking,
                    status="skipped",
                    message=reason,
                )
                continue
            tasks[item.name] = asyncio.create_task(_run_one(item, root.child(), budget))
        if tasks:
            done, pending = await asyncio.wait(tasks.values(), timeout=options.timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for leftover in root.shared.values():
            leftover.cancel()
        await asyncio.gather(*root.shared.values(), return_exceptions=True)
        by_name = {item.name: item for item, _ in plan}
        for name, task in tasks.items():
            if task.done() and not task.cancelled() and task.exception() is None:
                results[name] = task.result()
            else:
                item = by_name[name]
                results[name] = CheckResult(
                    name=name,
                    category=item.category,
                    blocking=item.blocking,
                    status="failed",
                    message=f"overall deadline of {options.timeout:g}s exceeded",
                )
    ordered = [results[item.name] for item, _ in plan]
    return ordered, started, time.perf_counter() - t0
