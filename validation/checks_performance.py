"""Performance smoke: the p95 latency of a short concurrent burst (non-blocking, per the seed)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

from validation.context import CheckFailed, Context, Passed
from validation.models import Category
from validation.registry import check


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = max(0, math.ceil(pct / 100 * len(ordered)) - 1)
    return ordered[index]


@check(
    "performance.p95_latency",
    Category.PERFORMANCE,
    "A burst of GET /health (default 30 requests, 10 at a time) has p95 latency under the threshold "
    "(default 500 ms) and no errors. Non-blocking.",
)
async def p95_latency(ctx: Context) -> Passed:
    o = ctx.options
    gate = asyncio.Semaphore(o.smoke_concurrency)
    latencies: list[float] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        async with gate:
            start = time.perf_counter()
            try:
                response = await ctx.get(o.paths.basic, retry=False)
                ok = response.status_code == 200
            except CheckFailed:
                ok = False
            latencies.append((time.perf_counter() - start) * 1000)
            errors += 0 if ok else 1

    async def warm() -> None:
        with contextlib.suppress(CheckFailed):
            await ctx.get(o.paths.basic, retry=False)

    # Open the pooled connections first so TLS handshakes are not counted as latency.
    await asyncio.gather(*(warm() for _ in range(o.smoke_concurrency)))
    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(o.smoke_requests)))
    elapsed = time.perf_counter() - start
    p95 = percentile(latencies, 95)
    details = {
        "p95Ms": round(p95, 1),
        "throughput": round(len(latencies) / elapsed, 1) if elapsed else None,
        "errorRate": errors / len(latencies),
    }
    if errors:
        raise CheckFailed(f"{errors} of {len(latencies)} requests failed", **details)
    if p95 > o.latency_threshold_ms:
        raise CheckFailed(f"p95 {p95:.0f} ms > {o.latency_threshold_ms:.0f} ms", **details)
    return Passed(f"p95 {p95:.0f} ms over {len(latencies)} requests", details)
