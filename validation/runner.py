"""Run every applicable check concurrently under one deadline.

Each check gets its own budget (`check_timeout`, retries included); HTTP requests
retry connection errors and 502/503/504 with exponential backoff while the budget
lasts. A check fails by raising `CheckFailed`; anything else it raises is a failure too.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from validation.models import BLOCKING, Category, CheckResult
from validation.options import ValidationOptions

RETRY_STATUSES = frozenset({502, 503, 504})


class CheckFailed(Exception):
    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class CheckSkipped(Exception):
    """Raised by a check that finds at run time it cannot apply (the reason is reported)."""


@dataclass(frozen=True)
class Passed:
    message: str = "ok"
    details: Mapping[str, Any] = field(default_factory=dict)


CheckFn = Callable[["Context"], Awaitable[Passed]]
SkipRule = Callable[[ValidationOptions], str | None]


@dataclass(frozen=True)
class Check:
    name: str
    category: Category
    description: str
    fn: CheckFn
    skip_when: SkipRule | None = None

    @property
    def blocking(self) -> bool:
        return BLOCKING[self.category]


REGISTRY: list[Check] = []


def check(
    name: str, category: Category, description: str, skip_when: SkipRule | None = None
) -> Callable[[CheckFn], CheckFn]:
    """Register a check; `skip_when(options)` returns a reason to skip, or None."""

    def register(fn: CheckFn) -> CheckFn:
        REGISTRY.append(Check(name, category, description, fn, skip_when))
        return fn

    return register


def ssl_context(options: ValidationOptions) -> ssl.SSLContext:
    if options.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=options.ca_file)


class Context:
    """What a check may use: the options, one shared HTTP client, and the retry policy."""

    def __init__(
        self,
        options: ValidationOptions,
        client: httpx.AsyncClient,
        shared: dict[str, asyncio.Task[httpx.Response]] | None = None,
    ) -> None:
        self.options = options
        self.client = client
        self.attempts = 0
        self.shared: dict[str, asyncio.Task[httpx.Response]] = {} if shared is None else shared

    def child(self) -> Context:
        return Context(self.options, self.client, self.shared)

    async def get_shared(self, path: str) -> httpx.Response:
        """GET `path` once per run for every check that reads it (detailed health, metrics)."""
        task = self.shared.get(path)
        if task is None:
            task = asyncio.ensure_future(self.get(path))
            self.shared[path] = task
        # Shielded: one check timing out must not cancel the request the others wait for.
        return await asyncio.shield(task)

    def url(self, path: str, base: str | None = None) -> str:
        return f"{base or self.options.base_url}{path}"

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        found = {"User-Agent": "paper-trading-validation/1"}
        if self.options.color:
            found["X-Preview-Color"] = self.options.color
        if self.options.server_name:
            found["Host"] = self.options.server_name
        found.update(extra or {})
        return found

    async def request(
        self,
        method: str,
        path: str,
        *,
        base: str | None = None,
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request to the target (or `base`), retried on transient failures."""
        url = self.url(path, base)
        own_target = base is None
        extensions = (
            {"sni_hostname": self.options.server_name} if own_target and self.options.server_name else {}
        )
        send_headers = self.headers(headers) if own_target else dict(headers or {})
        attempts = 1 + (self.options.retries if retry else 0)
        for attempt in range(attempts):
            self.attempts += 1
            try:
                response = await self.client.request(
                    method, url, headers=send_headers, extensions=extensions, **kwargs
                )
            except httpx.TransportError as exc:
                if attempt + 1 >= attempts:
                    raise CheckFailed(f"{method} {path}: {_describe(exc)}") from exc
            else:
                if response.status_code not in RETRY_STATUSES or attempt + 1 >= attempts:
                    return response
            await asyncio.sleep(self.options.backoff * (2**attempt))
        raise AssertionError("unreachable")

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def get_json(self, path: str, **kwargs: Any) -> Any:
        response = await (self.get_shared(path) if not kwargs else self.get(path, **kwargs))
        expect_status(response, path, 200)
        try:
            return response.json()
        except ValueError as exc:
            raise CheckFailed(f"GET {path}: response is not valid JSON") from exc


def expect_status(response: httpx.Response, path: str, *codes: int) -> None:
    if response.status_code not in codes:
        wanted = " or ".join(str(c) for c in codes)
        raise CheckFailed(f"GET {path}: status {response.status_code}, expected {wanted}")


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed: {text}"
    return text


def applicable(options: ValidationOptions) -> list[tuple[Check, str | None]]:
    """Every registered check with its skip reason (None = it runs)."""
    _load_checks()
    order = list(Category)
    out: list[tuple[Check, str | None]] = []
    for item in sorted(REGISTRY, key=lambda c: order.index(c.category)):
        reason = "skipped by configuration" if item.name in options.skip else None
        if reason is None and item.skip_when is not None:
            reason = item.skip_when(options)
        out.append((item, reason))
    return out


def _load_checks() -> None:
    from validation import (  # noqa: F401  # noqa: F401
        checks_exchange,
        checks_health,
        checks_monitoring,
        checks_performance,
        checks_safety,
        checks_security,
        checks_work,
    )


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
        status, message = "failed", f"{type(exc).__name__}: {_describe(exc)}"
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


def make_client(options: ValidationOptions) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=ssl_context(options),
        timeout=httpx.Timeout(options.check_timeout),
        follow_redirects=False,
        trust_env=False,
        # Few connections, reused: fewer TLS handshakes for the client's CPU.
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
    )


async def run_checks(options: ValidationOptions) -> tuple[list[CheckResult], datetime, float]:
    """Run all applicable checks concurrently; return results in registry order."""
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    plan = applicable(options)
    budget = min(options.check_timeout, options.timeout)
    results: dict[str, CheckResult] = {}
    async with make_client(options) as client:
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
