"""The listener side: observe and confirm the served color, run the post-promotion checks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import time
from typing import Any

import httpx

from release.routing.base import (
    COLOR_HEADER,
    CONFIRM_SETTLE_S,
    CONFIRM_STREAK,
    Checker,
    Endpoint,
    RoutingError,
)
from settings import Color
from validation.options import ValidationOptions
from validation.runner import applicable, run_checks


def _fresh_client(endpoint: Endpoint, timeout: float = 2.0) -> Any:
    """An HTTP client that opens a new connection per request (no keep-alive reuse),
    so every probe is accepted by the current generation of nginx workers."""

    headers = {"Host": endpoint.host_header} if endpoint.host_header else {}
    return httpx.Client(
        verify=endpoint.verify(), timeout=timeout, follow_redirects=False, headers=headers,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def observe(endpoint: Endpoint, client: Any = None) -> str | None:
    """`X-Deployment-Color` of one fresh-connection request to the listener (None if no answer)."""

    owned = client is None
    client = client or _fresh_client(endpoint)
    try:
        response = client.get(endpoint.url.rstrip("/") + endpoint.probe_path)
    except httpx.HTTPError:
        return None
    finally:
        if owned:
            client.close()
    color: str | None = response.headers.get(COLOR_HEADER)
    return color


def confirm(endpoint: Endpoint, expected: str, deadline_s: float = 15.0) -> float:
    """Poll until fresh requests carry `expected` without a break for CONFIRM_SETTLE_S; seconds taken.

    Not just the first new-color answer: on a reload nginx starts the new workers and
    only ~100 ms later tells the old ones to stop accepting, so for a moment both answer.
    Any other color inside the window restarts it.
    """
    start = time.monotonic()
    streak, since, seen = 0, 0.0, None
    with _fresh_client(endpoint) as client:
        while time.monotonic() - start < deadline_s:
            seen = observe(endpoint, client)
            now = time.monotonic()
            if seen != expected:
                streak = 0
                time.sleep(0.01)
                continue
            streak, since = streak + 1, since if streak else now
            if streak >= CONFIRM_STREAK and now - since >= CONFIRM_SETTLE_S:
                return now - start
    raise RoutingError(
        f"{endpoint.url} did not report {COLOR_HEADER}: {expected} within {deadline_s:g}s (last seen: {seen})"
    )


#: Blocking categories run after a promotion (the gate already ran the rest on the preview).
POST_PROMOTION_CATEGORIES = ("health", "safety")
#: The public listener answers 404 on the app's /metrics by design (Prometheus scrapes it on
#: the monitoring network), so checks that read /metrics cannot run through it.
PUBLIC_LISTENER_SKIPS = frozenset({"health.metrics", "safety.metrics"})


def validation_checks(endpoint: Endpoint, color: Color, expect_work_role: str | None = None) -> list[str]:
    """The validation module's blocking health and safety checks, through the public listener.

    `expect_work_role` ("active" once the work was handed over) is passed on where the
    validation options know it (`safety.background_work`). Returns one line per failed
    blocking check (empty: all passed).
    """


    probe = ValidationOptions(base_url=endpoint.url)
    skip = {
        item.name for item, _ in applicable(probe)
        if item.category.value not in POST_PROMOTION_CATEGORIES or item.name in PUBLIC_LISTENER_SKIPS
    }
    extra: dict[str, Any] = {}
    if expect_work_role is not None and "expect_work_role" in ValidationOptions.model_fields:
        extra["expect_work_role"] = expect_work_role
    options = ValidationOptions(
        base_url=endpoint.url, color=color, ca_file=endpoint.ca_file, insecure=endpoint.insecure,
        server_name=endpoint.host_header, skip=frozenset(skip), **extra,
    )
    # A fresh event loop in a worker thread: safe whether or not the caller runs one.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        results, _, _ = pool.submit(asyncio.run, run_checks(options)).result()
    return [f"{r.name}: {r.message}" for r in results if r.blocking and r.status == "failed"]


def post_promotion_checker(handoff: bool) -> Checker:
    """The post-promotion checks; after a handoff they also expect the live color to hold the work."""
    if not handoff:
        return validation_checks
    return functools.partial(validation_checks, expect_work_role="active")
