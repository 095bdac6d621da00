"""Paper-trading safety: what the running app says about itself must be the safe state."""

from __future__ import annotations

import re

from validation.checks_health import detailed_health, metrics_text
from validation.context import CheckFailed, Context, Passed, expect_status
from validation.models import Category
from validation.registry import check

COLOR_HEADER = "X-Deployment-Color"


@check("safety.paper_trading_mode", Category.SAFETY, "Detailed health reports paperTradingMode: true.")
async def paper_mode(ctx: Context) -> Passed:
    body = await detailed_health(ctx)
    if body.get("paperTradingMode") is not True:
        raise CheckFailed(f"paperTradingMode is {body.get('paperTradingMode')!r}, must be true")
    return Passed("paper trading mode on")


@check("safety.real_trades_blocked", Category.SAFETY, "Detailed health reports allowRealTrades: false.")
async def real_trades(ctx: Context) -> Passed:
    body = await detailed_health(ctx)
    if body.get("allowRealTrades") is not False:
        raise CheckFailed(f"allowRealTrades is {body.get('allowRealTrades')!r}, must be false")
    return Passed("real trades blocked")


@check(
    "safety.exchange_permissions",
    Category.SAFETY,
    "Every exchange in detailed health reports permissions READ_ONLY.",
)
async def exchange_permissions(ctx: Context) -> Passed:
    body = await detailed_health(ctx)
    exchanges = body.get("exchanges")
    if not isinstance(exchanges, dict):
        raise CheckFailed("detailed health: exchanges is not an object")
    bad = {
        name: (info.get("permissions") if isinstance(info, dict) else info)
        for name, info in exchanges.items()
        if not (isinstance(info, dict) and info.get("permissions") == "READ_ONLY")
    }
    if bad:
        listed = ", ".join(f"{name}={perm!r}" for name, perm in sorted(bad.items()))
        raise CheckFailed(f"exchange keys not READ_ONLY: {listed}", exchanges=bad)
    return Passed(f"{len(exchanges)} exchange(s) READ_ONLY" if exchanges else "no exchanges configured")


@check(
    "safety.metrics",
    Category.SAFETY,
    "/metrics reports paper_trading_mode 1 and exposes paper_trading_real_trades_blocked_total.",
)
async def safety_metrics(ctx: Context) -> Passed:
    text = await metrics_text(ctx)
    mode = re.findall(r"^paper_trading_mode(?:\{[^}]*\})?\s+(\S+)", text, re.M)
    if not mode:
        raise CheckFailed("/metrics has no paper_trading_mode")
    if any(float(value) != 1.0 for value in mode):
        raise CheckFailed(f"/metrics paper_trading_mode is {', '.join(mode)}, must be 1")
    blocked = re.findall(r"^paper_trading_real_trades_blocked_total(?:\{[^}]*\})?\s+(\S+)", text, re.M)
    if not blocked:
        raise CheckFailed("/metrics has no paper_trading_real_trades_blocked_total")
    total = sum(float(v) for v in blocked)
    return Passed("paper_trading_mode 1", {"realTradesBlocked": total})


@check(
    "safety.deployment_color",
    Category.SAFETY,
    "Responses carry X-Deployment-Color equal to --color (or, without --color, to the detailed "
    "health's color), and detailed health's color matches.",
)
async def deployment_color(ctx: Context) -> Passed:
    path = ctx.options.paths.detailed
    response = await ctx.get_shared(path)
    expect_status(response, path, 200)
    try:
        reported = response.json().get("color")
    except (ValueError, AttributeError) as exc:
        raise CheckFailed(f"GET {path}: response is not a JSON object") from exc
    raw = response.headers.get(COLOR_HEADER)
    if raw is None:
        raise CheckFailed(f"response has no {COLOR_HEADER} header")
    # Exactly one value: two header lines (joined with ", "), a list or an empty entry mean two
    # layers set it or something rewrote it, so the response does not say one color (fail closed).
    values = [v.strip() for v in raw.split(",")]
    expected = ctx.options.color or reported
    if values != [expected]:
        raise CheckFailed(f"{COLOR_HEADER} is {raw!r}, expected exactly one value {expected!r}")
    if reported != expected:
        raise CheckFailed(f"detailed health color is {reported!r}, expected {expected!r}")
    return Passed(f"serving {expected}")
