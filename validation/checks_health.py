"""Health checks: the app contract's basic, detailed, readiness, liveness and metrics endpoints."""

from __future__ import annotations

import re
from typing import Any

from validation.context import CheckFailed, CheckSkipped, Context, Passed, expect_status
from validation.models import Category
from validation.registry import check

REQUIRED_FIELDS = (
    "status",
    "version",
    "color",
    "paperTradingMode",
    "allowRealTrades",
    "exchanges",
    "dependencies",
)
REQUIRED_DEPENDENCIES = ("database", "redis", "queue")
BAD_STATES = frozenset({"down", "error", "unhealthy", "fail", "failed", "critical"})


def state_of(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("status", "")
    return str(value).lower()


HIDDEN_METRICS = (
    "/metrics is not exposed on this listener (the proxy hides it from the public); "
    "validate through the preview listener to check it"
)


async def metrics_text(ctx: Context) -> str:
    """The /metrics body.

    The live listener hides /metrics (404): without --color (a live-traffic check) that skips
    the metrics checks; with --color (a candidate via the preview listener) a 404 fails.
    """
    path = ctx.options.paths.metrics
    response = await ctx.get_shared(path)
    if response.status_code == 404 and ctx.options.color is None:
        raise CheckSkipped(HIDDEN_METRICS)
    expect_status(response, path, 200)
    return response.text


async def detailed_health(ctx: Context) -> dict[str, Any]:
    """The detailed health document, or CheckFailed if it is not a JSON object."""
    body = await ctx.get_json(ctx.options.paths.detailed)
    if not isinstance(body, dict):
        raise CheckFailed(f"GET {ctx.options.paths.detailed}: JSON is not an object")
    return body


@check("health.basic", Category.HEALTH, "GET /health answers 200.")
async def basic(ctx: Context) -> Passed:
    path = ctx.options.paths.basic
    response = await ctx.get(path)
    expect_status(response, path, 200)
    return Passed(f"200 in {response.elapsed.total_seconds() * 1000:.0f} ms")


@check(
    "health.detailed",
    Category.HEALTH,
    "GET /health/detailed answers 200 JSON with status, version, color, paperTradingMode, "
    "allowRealTrades, exchanges and dependencies {database, redis, queue}, none of them down.",
)
async def detailed(ctx: Context) -> Passed:
    body = await detailed_health(ctx)
    missing = [key for key in REQUIRED_FIELDS if key not in body]
    if missing:
        raise CheckFailed(f"detailed health lacks {', '.join(missing)}")
    if state_of(body["status"]) in BAD_STATES:
        raise CheckFailed(f"detailed health status is {body['status']!r}")
    deps = body["dependencies"]
    if not isinstance(deps, dict):
        raise CheckFailed("detailed health: dependencies is not an object")
    absent = [name for name in REQUIRED_DEPENDENCIES if name not in deps]
    if absent:
        raise CheckFailed(f"detailed health: dependencies lack {', '.join(absent)}")
    down = sorted(name for name, value in deps.items() if state_of(value) in BAD_STATES)
    if down:
        raise CheckFailed(f"dependencies down: {', '.join(down)}", dependencies=deps)
    return Passed(f"status {body['status']}, version {body['version']}", {"version": body["version"]})


@check("health.ready", Category.HEALTH, "GET /health/ready answers 200 (503 = not ready, fails).")
async def ready(ctx: Context) -> Passed:
    path = ctx.options.paths.ready
    response = await ctx.get(path)
    if response.status_code == 503:
        raise CheckFailed(f"GET {path}: 503, the app reports it is not ready")
    expect_status(response, path, 200)
    return Passed("ready")


@check("health.live", Category.HEALTH, "GET /health/live answers 200.")
async def live(ctx: Context) -> Passed:
    path = ctx.options.paths.live
    expect_status(await ctx.get(path), path, 200)
    return Passed("alive")


@check(
    "health.metrics",
    Category.HEALTH,
    "GET /metrics serves Prometheus text with a request counter (*_total) and a latency histogram "
    "(*_bucket).",
)
async def metrics(ctx: Context) -> Passed:
    text = await metrics_text(ctx)
    if not re.search(r"^[a-zA-Z_:][\w:]*_total(\{[^}]*\})? ", text, re.M):
        raise CheckFailed("/metrics has no request counter (*_total)")
    if not re.search(r"^[a-zA-Z_:][\w:]*_bucket\{[^}]*le=", text, re.M):
        raise CheckFailed("/metrics has no latency histogram (*_bucket)")
    return Passed(f"{len(text.splitlines())} lines")
