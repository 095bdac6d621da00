"""What a check sees and how it reports: the shared HTTP context and the outcomes a check raises.

A check returns `Passed`, or raises `CheckFailed` (with details for the report) or
`CheckSkipped` (it cannot apply here). `Context.request` retries connection errors and
502/503/504 with exponential backoff while the check's budget lasts.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

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
                    raise CheckFailed(f"{method} {path}: {describe(exc)}") from exc
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


def describe(exc: BaseException) -> str:
    """A transport error in words: timeouts and refused connections say so."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed: {text}"
    return text
