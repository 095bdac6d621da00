"""Exchange-side key check: the exchange, not our config, says whether the key can trade."""

from __future__ import annotations

import asyncio

import httpx

from validation.context import CheckFailed, Context, Passed
from validation.exchange import KeyCheckError, check_key
from validation.models import Category
from validation.registry import check


@check(
    "safety.exchange_keys",
    Category.SAFETY,
    "When API secrets are configured (env BINANCE_API_KEY/BINANCE_API_SECRET, KUCOIN_API_KEY/"
    "KUCOIN_API_SECRET/KUCOIN_API_PASSPHRASE, base URLs *_BASE_URL), the exchange itself reports the key "
    "read-only: Binance apiRestrictions all trade/withdraw/transfer flags false, KuCoin permission "
    "General only.",
    skip_when=lambda o: None if o.exchanges else "no exchange API secrets configured",
)
async def exchange_keys(ctx: Context) -> Passed:
    # Its own client: system CAs (not the target's --ca-file) and the environment's proxy.
    async with httpx.AsyncClient(timeout=ctx.options.check_timeout) as client:

        async def one(index: int) -> str:
            try:
                return await check_key(client, ctx.options.exchanges[index])
            except KeyCheckError as exc:
                raise CheckFailed(str(exc)) from exc
            except httpx.HTTPError as exc:
                raise CheckFailed(f"{ctx.options.exchanges[index].exchange}: {exc}") from exc

        found = await asyncio.gather(
            *(one(i) for i in range(len(ctx.options.exchanges))), return_exceptions=True
        )
    failures = [f for f in found if isinstance(f, BaseException)]
    if failures:
        raise CheckFailed("; ".join(str(f) for f in failures))
    return Passed("; ".join(str(f) for f in found))
