"""Exchange-side key check against fake exchanges that verify signatures like the real ones."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.fakes.exchanges import FakeExchange, fake_exchange
from tests.support.fakes.validation_servers import RefApp, reference_app
from tests.support.fidelity_report import assert_failed_exactly
from tests.support.fidelity_report import check as check_result
from tests.support.validation_cli import run_report
from validation.exchange import KeyCheckError, binance_signature, check_key, kucoin_sign
from validation.options import ExchangeCredentials


def test_binance_signature_matches_the_documented_example() -> None:
    # The worked example of Binance's "SIGNED endpoint" documentation.
    secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
    query = (
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
        "&recvWindow=5000&timestamp=1499827319559"
    )
    assert (
        binance_signature(secret, query) == "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    )


def test_kucoin_signature_is_base64_hmac_sha256() -> None:
    import base64
    import hashlib
    import hmac

    want = base64.b64encode(hmac.new(b"s", b"1GET/api/v1/user/api-key", hashlib.sha256).digest()).decode()
    assert kucoin_sign("s", "1GET/api/v1/user/api-key") == want


def creds(kind: str, ex: FakeExchange, url: str, **over: str) -> ExchangeCredentials:
    values = {
        "exchange": kind,
        "api_key": ex.api_key,
        "api_secret": ex.api_secret,
        "base_url": url,
        "passphrase": ex.passphrase if kind == "kucoin" else None,
    }
    values.update(over)
    return ExchangeCredentials.model_validate(values)


def check(c: ExchangeCredentials) -> str:
    async def go() -> str:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            return await check_key(client, c)

    return asyncio.run(go())


def test_binance_read_only_key_passes() -> None:
    ex = FakeExchange()
    with fake_exchange("binance", ex) as url:
        assert "read-only" in check(creds("binance", ex, url))
    assert ex.accepted == 1 and not ex.rejected


@pytest.mark.parametrize(
    "flag",
    [
        "enableSpotAndMarginTrading",
        "enableWithdrawals",
        "enableFutures",
        "permitsUniversalTransfer",
        "enableInternalTransfer",
    ],
)
def test_binance_key_that_can_trade_fails(flag: str) -> None:
    ex = FakeExchange()
    ex.binance_flags[flag] = True
    with fake_exchange("binance", ex) as url, pytest.raises(KeyCheckError, match=flag):
        check(creds("binance", ex, url))


def test_binance_bad_signature_is_rejected_by_the_exchange() -> None:
    ex = FakeExchange()
    with fake_exchange("binance", ex) as url, pytest.raises(KeyCheckError, match="HTTP 400"):
        check(creds("binance", ex, url, api_secret="wrong"))
    assert ex.accepted == 0 and "Signature" in ex.rejected[0]


def test_kucoin_general_only_passes_and_trade_fails() -> None:
    ex = FakeExchange()
    with fake_exchange("kucoin", ex) as url:
        assert "read-only" in check(creds("kucoin", ex, url))
        ex.kucoin_permission = "General,Spot"
        with pytest.raises(KeyCheckError, match="Spot"):
            check(creds("kucoin", ex, url))
    assert ex.accepted == 2


@pytest.mark.parametrize(
    ("field", "error"),
    [("api_secret", "KC-API-PASSPHRASE"), ("passphrase", "PASSPHRASE"), ("api_key", "KC-API-KEY")],
)
def test_kucoin_bad_credentials_are_rejected(field: str, error: str) -> None:
    ex = FakeExchange()
    with fake_exchange("kucoin", ex) as url, pytest.raises(KeyCheckError, match="HTTP 401"):
        check(creds("kucoin", ex, url, **{field: "wrong"}))
    assert ex.accepted == 0 and error in ex.rejected[0]


def test_exchange_base_url_must_be_https_off_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        ExchangeCredentials.model_validate(
            {"exchange": "binance", "api_key": "k", "api_secret": "s", "base_url": "http://api.binance.com"}
        )


@pytest.fixture(scope="module")
def app() -> Iterator[RefApp]:
    with reference_app() as running:
        yield running


def test_cli_fails_on_a_key_that_can_trade(app: RefApp, tmp_path: Path) -> None:
    good, bad = FakeExchange(), FakeExchange(kucoin_permission="General,Spot")
    with fake_exchange("binance", good) as burl, fake_exchange("kucoin", bad) as kurl:
        env = {
            "BINANCE_API_KEY": good.api_key,
            "BINANCE_API_SECRET": good.api_secret,
            "BINANCE_BASE_URL": burl,
            "KUCOIN_API_KEY": bad.api_key,
            "KUCOIN_API_SECRET": bad.api_secret,
            "KUCOIN_API_PASSPHRASE": bad.passphrase,
            "KUCOIN_BASE_URL": kurl,
        }
        result, report = run_report(tmp_path, "--base-url", app.url, env=env)
        assert result.returncode == 1, result.stdout
        assert_failed_exactly(report, {"safety.exchange_keys"})
        assert "KuCoin key is not read-only: Spot" in check_result(report, "safety.exchange_keys")["message"]
        bad.kucoin_permission = "General"
        result, report = run_report(tmp_path, "--base-url", app.url, env=env)
        assert result.returncode == 0, result.stdout
    assert_failed_exactly(report, set())
    assert check_result(report, "safety.exchange_keys")["status"] == "passed"
    assert good.api_secret not in json.dumps(report)
    assert bad.api_secret not in json.dumps(report)
