"""Ask the exchange itself whether a key can trade, withdraw or transfer.

Binance: `GET /sapi/v1/account/apiRestrictions`, query signed with HMAC-SHA256 (hex) in
`signature`, key in `X-MBX-APIKEY`. KuCoin: `GET /api/v1/user/api-key`, `KC-API-SIGN` =
base64(HMAC-SHA256(secret, timestamp + method + path + body)), passphrase signed the same
way, `KC-API-KEY-VERSION: 2`. A key passes only if the exchange reports it read-only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlencode

import httpx

from validation.options import ExchangeCredentials

BINANCE_PATH = "/sapi/v1/account/apiRestrictions"
KUCOIN_PATH = "/api/v1/user/api-key"
#: Binance flags that mean more than reading; every one must be false.
BINANCE_READ_FLAGS = frozenset({"enableReading", "ipRestrict"})
KUCOIN_ALLOWED = frozenset({"General"})


class KeyCheckError(Exception):
    """The key could not be checked or is not read-only; the message says which."""


def binance_signature(secret: str, query: str) -> str:
    return hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()


def binance_query(secret: str, timestamp_ms: int, recv_window: int = 5000) -> str:
    query = urlencode({"recvWindow": recv_window, "timestamp": timestamp_ms})
    return f"{query}&signature={binance_signature(secret, query)}"


def kucoin_sign(secret: str, payload: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()).decode()


def kucoin_headers(
    key: str, secret: str, passphrase: str, timestamp_ms: int, method: str, path: str, body: str = ""
) -> dict[str, str]:
    return {
        "KC-API-KEY": key,
        "KC-API-SIGN": kucoin_sign(secret, f"{timestamp_ms}{method.upper()}{path}{body}"),
        "KC-API-TIMESTAMP": str(timestamp_ms),
        "KC-API-PASSPHRASE": kucoin_sign(secret, passphrase),
        "KC-API-KEY-VERSION": "2",
    }


def binance_problems(body: Any) -> list[str]:
    """Every enabled flag beyond reading; a missing or odd document is itself a problem."""
    if not isinstance(body, dict) or "enableReading" not in body:
        return ["unexpected apiRestrictions response"]
    return sorted(
        name
        for name, value in body.items()
        if name not in BINANCE_READ_FLAGS and (name.startswith(("enable", "permits")) and value is not False)
    )


def kucoin_problems(body: Any) -> list[str]:
    if (
        not isinstance(body, dict)
        or str(body.get("code")) != "200000"
        or not isinstance(body.get("data"), dict)
    ):
        return ["unexpected api-key response"]
    data = body["data"]
    raw = data.get("permission", data.get("permissions"))
    if not isinstance(raw, str):
        return ["api-key response has no permission"]
    granted = {p.strip() for p in raw.split(",") if p.strip()}
    return sorted(granted - KUCOIN_ALLOWED) if granted else ["api-key response has no permission"]


def _now_ms() -> int:
    return int(time.time() * 1000)


async def check_key(client: httpx.AsyncClient, creds: ExchangeCredentials, now_ms: int | None = None) -> str:
    """Return a short description if read-only; raise KeyCheckError otherwise."""
    stamp = now_ms if now_ms is not None else _now_ms()
    key, secret = creds.api_key.get_secret_value(), creds.api_secret.get_secret_value()
    if creds.exchange == "binance":
        url = f"{creds.base_url}{BINANCE_PATH}?{binance_query(secret, stamp)}"
        response = await client.get(url, headers={"X-MBX-APIKEY": key})
        label, parse = "Binance", binance_problems
    else:
        if creds.passphrase is None:
            raise KeyCheckError("KuCoin key check needs the passphrase")
        headers = kucoin_headers(key, secret, creds.passphrase.get_secret_value(), stamp, "GET", KUCOIN_PATH)
        response = await client.get(f"{creds.base_url}{KUCOIN_PATH}", headers=headers)
        label, parse = "KuCoin", kucoin_problems
    if response.status_code != 200:
        raise KeyCheckError(
            f"{label} rejected the key check: HTTP {response.status_code} {response.text[:120]}"
        )
    try:
        body = response.json()
    except ValueError as exc:
        raise KeyCheckError(f"{label} answered non-JSON") from exc
    problems = parse(body)
    if problems:
        raise KeyCheckError(f"{label} key is not read-only: {', '.join(problems)}")
    return f"{label} key is read-only"
