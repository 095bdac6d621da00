"""The `safety.*` checks against a loopback server that answers exactly what each case crafts.

The reference app's faults only produce the clean unsafe values (paperTradingMode false,
allowRealTrades true, one trading key). Here detailed health and /metrics say anything: a
missing flag, a string "true", a null, one bad exchange among good ones, paper_trading_mode 0,
no blocked-trades counter, a detailed-health color that disagrees with --color. Every value that
is not exactly the safe one must fail its check (fail closed); the verdict is the check's own
structured result (name, status, blocking), each check run alone (every other one skipped).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import pytest

from tests.support import serve_in_thread
from validation.models import CheckResult
from validation.options import ValidationOptions
from validation.runner import applicable, run_checks

SAFE: dict[str, Any] = {
    "status": "healthy",
    "color": "green",
    "paperTradingMode": True,
    "allowRealTrades": False,
    "exchanges": {"binance": {"permissions": "READ_ONLY"}, "kucoin": {"permissions": "READ_ONLY"}},
}
SAFE_METRICS = "paper_trading_mode 1\npaper_trading_real_trades_blocked_total 3\n"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    body: dict[str, Any] = SAFE
    metrics = SAFE_METRICS
    color_header = "green"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/health/detailed":
            data, kind = json.dumps(self.server.body).encode(), "application/json"
        elif self.path == "/metrics":
            data, kind = self.server.metrics.encode(), "text/plain; version=0.0.4"
        else:
            data, kind = b"{}", "application/json"
        self.send_response(200 if self.path in ("/health/detailed", "/metrics") else 404)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Deployment-Color", self.server.color_header)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args: object) -> None:
        return None


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    yield from serve_in_thread(_Server(("127.0.0.1", 0), _Handler))


def _run(server: _Server, check: str, *, body: dict[str, Any] | None = None, metrics: str | None = None,
         header: str = "green", color: Literal["blue", "green"] | None = "green") -> CheckResult:
    server.body = SAFE if body is None else body
    server.metrics = SAFE_METRICS if metrics is None else metrics
    server.color_header = header
    base = f"http://127.0.0.1:{server.server_address[1]}"
    others = {c.name for c, _ in applicable(ValidationOptions(base_url=base))} - {check}
    options = ValidationOptions(base_url=base, color=color, skip=frozenset(others),
                                check_timeout=5, timeout=10, retries=0)
    results, _, _ = asyncio.run(run_checks(options))
    ran = [r for r in results if r.status != "skipped"]
    assert [r.name for r in ran] == [check]
    return ran[0]


def _with(**changes: Any) -> dict[str, Any]:
    body = dict(SAFE)
    for key, value in changes.items():
        if value is _MISSING:
            body.pop(key)
        else:
            body[key] = value
    return body


_MISSING = object()
SAFETY_CHECKS = ("safety.paper_trading_mode", "safety.real_trades_blocked", "safety.exchange_permissions",
                 "safety.metrics", "safety.deployment_color")


@pytest.mark.parametrize("check", SAFETY_CHECKS)
def test_the_safe_answer_passes(server: _Server, check: str) -> None:
    result = _run(server, check)
    assert (result.status, result.blocking) == ("passed", True), result.message


@pytest.mark.parametrize("value", [_MISSING, None, "true", 1, "yes"],
                         ids=["missing", "null", "string-true", "one", "yes"])
def test_paper_trading_mode_not_exactly_true_fails(server: _Server, value: Any) -> None:
    result = _run(server, "safety.paper_trading_mode", body=_with(paperTradingMode=value))
    assert (result.status, result.blocking) == ("failed", True), result.message


@pytest.mark.parametrize("value", [_MISSING, None, "false", 0, "no"],
                         ids=["missing", "null", "string-false", "zero", "no"])
def test_allow_real_trades_not_exactly_false_fails(server: _Server, value: Any) -> None:
    result = _run(server, "safety.real_trades_blocked", body=_with(allowRealTrades=value))
    assert (result.status, result.blocking) == ("failed", True), result.message


def test_one_trading_key_among_read_only_ones_fails_and_is_named(server: _Server) -> None:
    exchanges = {"binance": {"permissions": "READ_ONLY"}, "kucoin": {"permissions": "TRADE"},
                 "kraken": {"permissions": "READ_ONLY"}}
    result = _run(server, "safety.exchange_permissions", body=_with(exchanges=exchanges))
    assert (result.status, result.details) == ("failed", {"exchanges": {"kucoin": "TRADE"}}), result.message


@pytest.mark.parametrize("info", [{}, {"permissions": "read_only"}, "READ_ONLY", None],
                         ids=["no-permissions", "lower-case", "bare-string", "null"])
def test_an_exchange_without_exactly_read_only_fails(server: _Server, info: Any) -> None:
    exchanges = {"binance": {"permissions": "READ_ONLY"}, "kucoin": info}
    result = _run(server, "safety.exchange_permissions", body=_with(exchanges=exchanges))
    assert result.status == "failed", result.message
    assert list(result.details["exchanges"]) == ["kucoin"]


@pytest.mark.parametrize("exchanges", [_MISSING, None, ["binance"]], ids=["missing", "null", "list"])
def test_exchanges_not_an_object_fails(server: _Server, exchanges: Any) -> None:
    result = _run(server, "safety.exchange_permissions", body=_with(exchanges=exchanges))
    assert result.status == "failed", result.message


@pytest.mark.parametrize("metrics", [
    "paper_trading_mode 0\npaper_trading_real_trades_blocked_total 0\n",
    'paper_trading_mode{color="green"} 1\npaper_trading_mode{color="blue"} 0\n'
    "paper_trading_real_trades_blocked_total 0\n",
    "paper_trading_mode 2\npaper_trading_real_trades_blocked_total 0\n",
    "paper_trading_real_trades_blocked_total 0\n",
    "paper_trading_mode 1\n",
    "paper_trading_mode 1\n# paper_trading_real_trades_blocked_total 0\n",
], ids=["mode-0", "one-series-0", "mode-2", "no-mode", "no-blocked-counter", "blocked-only-in-comment"])
def test_safety_metrics_not_exactly_paper_fail(server: _Server, metrics: str) -> None:
    result = _run(server, "safety.metrics", metrics=metrics)
    assert (result.status, result.blocking) == ("failed", True), result.message


@pytest.mark.parametrize("metrics", [
    "paper_trading_mode one\npaper_trading_real_trades_blocked_total 0\n",
    "paper_trading_mode 1\npaper_trading_real_trades_blocked_total many\n",
], ids=["mode-not-a-number", "blocked-not-a-number"])
def test_an_unparseable_metric_is_a_failure_not_a_skip(server: _Server, metrics: str) -> None:
    """The check raises on the value (not CheckFailed): the runner must still count a failure."""
    result = _run(server, "safety.metrics", metrics=metrics)
    assert (result.status, result.blocking) == ("failed", True), result.message
    assert result.message.startswith("ValueError"), result.message


def test_safety_metrics_sums_the_blocked_counter(server: _Server) -> None:
    metrics = ('paper_trading_mode 1\npaper_trading_real_trades_blocked_total{exchange="a"} 2\n'
               'paper_trading_real_trades_blocked_total{exchange="b"} 5\n')
    result = _run(server, "safety.metrics", metrics=metrics)
    assert (result.status, result.details) == ("passed", {"realTradesBlocked": 7.0})


def test_detailed_health_color_other_than_color_fails_even_when_the_header_matches(server: _Server) -> None:
    """--color green, header green, but the app says it is blue: not the deployment we meant."""
    result = _run(server, "safety.deployment_color", body=_with(color="blue"), header="green", color="green")
    assert (result.status, result.blocking) == ("failed", True), result.message
    assert "detailed health color" in result.message
