"""What the exchange answers decides the key check: every answer that is not plainly read-only fails.

tests/validation/test_validation_exchange.py drives the signed requests against fake exchanges with
clean booleans. Here the answer documents themselves vary: a flag that is truthy without
being `true` (a string, a number, null), a KuCoin permission list that is empty or only
separators, an unexpected envelope. The verdict is the list of problems the parser returns
(empty = read-only), and `check_key`'s outcome through a mock transport for the HTTP status.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import httpx
import pytest
from pydantic import SecretStr

from tests.support.fakes.exchanges import READ_ONLY_BINANCE as FAKE_READ_ONLY_BINANCE
from validation.exchange import KeyCheckError, binance_problems, check_key, kucoin_problems
from validation.options import ExchangeCredentials

#: The fake exchange's read-only Binance key document (tests/support/fakes/exchanges.py): one spelling of it.
READ_ONLY_BINANCE: dict[str, Any] = dict(FAKE_READ_ONLY_BINANCE)


def test_a_read_only_binance_key_has_no_problem() -> None:
    assert binance_problems(READ_ONLY_BINANCE) == []


@pytest.mark.parametrize("value", [True, "true", 1, None, "false", 0], ids=repr)
@pytest.mark.parametrize("flag", ["enableWithdrawals", "permitsUniversalTransfer", "enableFutures",
                                  "enableSomethingNew"])
def test_a_binance_flag_that_is_not_literally_false_is_a_problem(flag: str, value: Any) -> None:
    assert binance_problems({**READ_ONLY_BINANCE, flag: value}) == [flag]


@pytest.mark.parametrize("body", [{}, [], None, "ok", {"enableWithdrawals": False}],
                         ids=["empty", "list", "null", "string", "no-enableReading"])
def test_an_unexpected_binance_document_is_a_problem(body: Any) -> None:
    assert binance_problems(body) == ["unexpected apiRestrictions response"]


def _kucoin(permission: Any, code: Any = "200000") -> dict[str, Any]:
    return {"code": code, "data": {"apiKey": "k", "permission": permission}}


def test_a_general_only_kucoin_key_has_no_problem() -> None:
    assert kucoin_problems(_kucoin("General")) == []
    assert kucoin_problems({"code": 200000, "data": {"permissions": " General "}}) == []


@pytest.mark.parametrize(("permission", "problems"), [
    ("General,Spot", ["Spot"]),
    ("Spot", ["Spot"]),
    ("General,Withdrawal,Futures", ["Futures", "Withdrawal"]),
    ("general", ["general"]),
    ("", ["api-key response has no permission"]),
    (" , ", ["api-key response has no permission"]),
    (None, ["api-key response has no permission"]),
    (["General"], ["api-key response has no permission"]),
])
def test_a_kucoin_key_beyond_general_or_without_permission_is_a_problem(
    permission: Any, problems: list[str]
) -> None:
    assert kucoin_problems(_kucoin(permission)) == problems


@pytest.mark.parametrize("body", [_kucoin("General", code="400001"), {"code": "200000", "data": "General"},
                                  {"code": "200000"}, None, []],
                         ids=["error-code", "data-string", "no-data", "null", "list"])
def test_an_unexpected_kucoin_document_is_a_problem(body: Any) -> None:
    assert kucoin_problems(body) == ["unexpected api-key response"]


Exchange = Literal["binance", "kucoin"]


def _check(exchange: Exchange, status: int, body: Any) -> str:
    creds = ExchangeCredentials(
        exchange=exchange, api_key=SecretStr("k"), api_secret=SecretStr("s"),
        passphrase=SecretStr("p") if exchange == "kucoin" else None,
        base_url="https://testnet.binance.vision" if exchange == "binance" else "https://openapi-sandbox.kucoin.com",
    )

    async def go() -> str:
        transport = httpx.MockTransport(lambda _request: httpx.Response(status, json=body))
        async with httpx.AsyncClient(transport=transport) as client:
            return await check_key(client, creds, now_ms=1)

    return asyncio.run(go())


READ_ONLY_ANSWERS = [("binance", READ_ONLY_BINANCE), ("kucoin", _kucoin("General"))]


@pytest.mark.parametrize("status", [201, 204, 301, 400, 401, 403, 404, 418, 500])
@pytest.mark.parametrize(("exchange", "body"), READ_ONLY_ANSWERS)
def test_any_status_but_200_fails_even_with_a_read_only_body(
        exchange: Exchange, body: Any, status: int) -> None:
    with pytest.raises(KeyCheckError, match=f"HTTP {status}"):
        _check(exchange, status, body)


@pytest.mark.parametrize(("exchange", "body"), READ_ONLY_ANSWERS)
def test_status_200_with_a_read_only_body_passes(exchange: Exchange, body: Any) -> None:
    assert _check(exchange, 200, body).endswith("key is read-only")
