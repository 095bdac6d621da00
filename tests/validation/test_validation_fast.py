"""The fast tier: each HTTP check alone, its answers from `httpx.MockTransport`, no socket.

The real-server tests (reference app, nginx, Prometheus) prove the checks against what the
deployment runs; these prove each check's rule in milliseconds. Every case runs one check
through the real runner (every other check skipped) and asserts on its structured result:
the check's name, its status, and the detail or message that names the rule.

Not here, because they never speak HTTP through the shared client: `security.tls_protocol`
and `security.certificate` (raw TLS handshakes, tests/validation/test_validation_tls.py),
`security.firewall` (TCP connects, tests/validation/test_validation_firewall_findings.py) and
`security.audit_log` on a file (tests/programs/test_audit_chain.py).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from validation.models import CheckResult
from validation.options import ExchangeCredentials, ValidationOptions
from validation.runner import CHECKS, run_checks

Handler = Callable[[httpx.Request], httpx.Response]

BASE = "http://app.test"
HEALTHY: dict[str, Any] = {
    "status": "ok", "version": "1.4.2", "color": "green", "paperTradingMode": True,
    "allowRealTrades": False, "exchanges": {"binance": {"permissions": "READ_ONLY"}},
    "dependencies": {"database": "ok", "redis": "ok", "queue": "ok"},
    "role": "standby", "epoch": 7, "liveColor": "blue", "consumers": [], "schedulers": [],
}
METRICS = (
    "http_requests_total{code=\"200\"} 12\n"
    "http_request_duration_seconds_bucket{le=\"0.1\"} 12\n"
    "paper_trading_mode 1\n"
    "paper_trading_real_trades_blocked_total 3\n"
)
SECURE_HEADERS = {
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'", "Permissions-Policy": "camera=()",
}


def answer(status: int = 200, body: Any = None, headers: Mapping[str, str] | None = None) -> httpx.Response:
    if isinstance(body, str):
        return httpx.Response(status, text=body, headers=headers)
    return httpx.Response(status, json=body if body is not None else {}, headers=headers)


def site(routes: Mapping[str, Callable[[httpx.Request], httpx.Response] | httpx.Response],
         color: str = "green") -> Handler:
    """Answers by `host + path` (or by path on the target); anything else 404.

    Every answer carries X-Deployment-Color, as the proxy adds it."""

    def handle(request: httpx.Request) -> httpx.Response:
        host, full, path = request.url.host, request.url.raw_path.decode(), request.url.path
        keys = (f"{host}{full}", f"{host}{path}", full, path)
        found = next((routes[k] for k in keys if k in routes), answer(404))
        canned = found(request) if callable(found) else found
        # A fresh, streamed response per request, as from a socket: the client reads (and times)
        # each one, which it does not for a response built with its content.
        response = httpx.Response(canned.status_code, headers=canned.headers,
                                  stream=httpx.ByteStream(canned.content))
        response.headers.setdefault("X-Deployment-Color", color)
        return response

    return handle


def target(detailed: Any = None, metrics: Any = METRICS, **extra: Any) -> dict[str, Any]:
    """The target's answers: a healthy app unless told otherwise."""
    return {
        "/health": answer(200, {"status": "ok"}, SECURE_HEADERS),
        "/health/detailed": answer(200, HEALTHY if detailed is None else detailed),
        "/health/ready": answer(200),
        "/health/live": answer(200),
        "/metrics": answer(200, metrics),
        **extra,
    }


def run_alone(check: str, handler: Handler, **options: Any) -> CheckResult:
    """`check` through the real runner, every other check skipped, answers from `handler`."""
    others = frozenset(c.name for c in CHECKS) - {check}
    settings: dict[str, Any] = {"base_url": BASE, "color": "green", "retries": 0, "check_timeout": 2,
                                "timeout": 5, **options}
    opts = ValidationOptions.model_validate({**settings, "skip": others})
    results, _, _ = asyncio.run(run_checks(opts, transport=httpx.MockTransport(handler)))
    ran = [r for r in results if r.status != "skipped"]
    assert [r.name for r in ran] == [check], [(r.name, r.status, r.message) for r in results]
    return ran[0]


def passes(check: str, handler: Handler, **options: Any) -> CheckResult:
    result = run_alone(check, handler, **options)
    assert result.status == "passed", result.message
    return result


def fails(check: str, handler: Handler, **options: Any) -> CheckResult:
    result = run_alone(check, handler, **options)
    assert result.status == "failed", result.message
    return result


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def test_every_http_check_has_a_fast_case() -> None:
    not_http = {"security.tls_protocol", "security.certificate", "security.firewall", "security.audit_log"}
    names = {c.name for c in CHECKS} - not_http
    source = Path(__file__).read_text(encoding="utf-8")
    assert not [name for name in sorted(names) if f'"{name}"' not in source]


# --------------------------------------------------------------------------- checks_health


def test_health_basic() -> None:
    assert passes("health.basic", site(target())).message.startswith("200 in")
    result = fails("health.basic", site(target(**{"/health": answer(500)})))
    assert result.message == "GET /health: status 500, expected 200"


@pytest.mark.parametrize("state", ["down", "error", "unhealthy", {"status": "Failed"}])
def test_health_detailed(state: Any) -> None:
    assert passes("health.detailed", site(target())).details == {"version": "1.4.2"}
    missing = {k: v for k, v in HEALTHY.items() if k != "allowRealTrades"}
    assert fails("health.detailed", site(target(missing))).message == "detailed health lacks allowRealTrades"
    down = with_(HEALTHY, dependencies={"database": "ok", "redis": state, "queue": "ok"})
    result = fails("health.detailed", site(target(down)))
    assert result.message == "dependencies down: redis"
    assert result.details["dependencies"]["redis"] == state
    absent = with_(HEALTHY, dependencies={"database": "ok", "redis": "ok"})
    result = fails("health.detailed", site(target(absent)))
    assert result.message == "detailed health: dependencies lack queue"


def test_health_ready_and_live() -> None:
    passes("health.ready", site(target()))
    result = fails("health.ready", site(target(**{"/health/ready": answer(503)})))
    assert "503, the app reports it is not ready" in result.message
    passes("health.live", site(target()))
    assert fails("health.live", site(target(**{"/health/live": answer(404)}))).message.endswith("status 404, "
                                                                                               "expected 200")


def test_health_metrics() -> None:
    passes("health.metrics", site(target()))
    no_histogram = "\n".join(line for line in METRICS.splitlines() if "_bucket" not in line)
    result = fails("health.metrics", site(target(metrics=no_histogram)))
    assert result.message == "/metrics has no latency histogram (*_bucket)"
    no_counter = "\n".join(line for line in METRICS.splitlines() if "_total" not in line)
    assert fails("health.metrics", site(target(metrics=no_counter))).message == (
        "/metrics has no request counter (*_total)"
    )


# --------------------------------------------------------------------------- checks_safety


@pytest.mark.parametrize("value", [False, "true", None, 1])
def test_safety_paper_trading_mode(value: Any) -> None:
    passes("safety.paper_trading_mode", site(target()))
    result = fails("safety.paper_trading_mode", site(target(with_(HEALTHY, paperTradingMode=value))))
    assert result.message == f"paperTradingMode is {value!r}, must be true"


@pytest.mark.parametrize("value", [True, "false", None, 0])
def test_safety_real_trades_blocked(value: Any) -> None:
    passes("safety.real_trades_blocked", site(target()))
    result = fails("safety.real_trades_blocked", site(target(with_(HEALTHY, allowRealTrades=value))))
    assert result.message == f"allowRealTrades is {value!r}, must be false"


def test_safety_exchange_permissions() -> None:
    passes("safety.exchange_permissions", site(target()))
    mixed = with_(HEALTHY, exchanges={"binance": {"permissions": "READ_ONLY"},
                                      "kucoin": {"permissions": "TRADE"}})
    result = fails("safety.exchange_permissions", site(target(mixed)))
    assert result.details == {"exchanges": {"kucoin": "TRADE"}}


def test_safety_metrics() -> None:
    assert passes("safety.metrics", site(target())).details == {"realTradesBlocked": 3.0}
    live = METRICS.replace("paper_trading_mode 1", "paper_trading_mode 0")
    assert fails("safety.metrics", site(target(metrics=live))).message == (
        "/metrics paper_trading_mode is 0, must be 1"
    )
    uncounted = METRICS.replace("paper_trading_real_trades_blocked_total 3\n", "")
    assert fails("safety.metrics", site(target(metrics=uncounted))).message == (
        "/metrics has no paper_trading_real_trades_blocked_total"
    )


def test_safety_deployment_color() -> None:
    assert passes("safety.deployment_color", site(target())).message == "serving green"
    result = fails("safety.deployment_color", site(target(), color="green, green"))
    assert result.message == "X-Deployment-Color is 'green, green', expected exactly one value 'green'"
    wrong = fails("safety.deployment_color", site(target(with_(HEALTHY, color="blue"))))
    assert wrong.message == "detailed health color is 'blue', expected 'green'"


# --------------------------------------------------------------------------- checks_work


def test_safety_background_work() -> None:
    result = passes("safety.background_work", site(target()), expect_work_role="standby")
    assert (result.details["role"], result.details["expected"]) == ("standby", "standby")
    busy = with_(HEALTHY, schedulers=["strategy-tick"])
    failed = fails("safety.background_work", site(target(busy)), expect_work_role="standby")
    assert failed.details["schedulers"] == ["strategy-tick"]
    assert failed.message == "green is standby but runs schedulers strategy-tick"
    holder = with_(HEALTHY, role="active", liveColor="green", consumers=["orders"])
    assert passes("safety.background_work", site(target(holder)), expect_work_role="active").details[
        "consumers"] == ["orders"]
    unaware = {k: v for k, v in HEALTHY.items() if k != "epoch"}
    assert fails("safety.background_work", site(target(unaware))).details["missing"] == ["epoch"]


# --------------------------------------------------------------------------- checks_exchange

BINANCE = ExchangeCredentials.model_validate(
    {"exchange": "binance", "api_key": "k", "api_secret": "s", "base_url": "https://binance.test"}
)


@pytest.fixture
def exchange_answers(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The exchange check opens its own client (system CAs, not the target's): route it here too."""
    answers: dict[str, Any] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "binance.test":
            assert request.headers["X-MBX-APIKEY"] == "k" and "signature=" in str(request.url)
            return answer(200, answers["binance"])
        return answer(404)

    monkeypatch.setattr(httpx, "AsyncClient",
                        functools.partial(httpx.AsyncClient, transport=httpx.MockTransport(handle)))
    yield answers


def test_safety_exchange_keys(exchange_answers: dict[str, Any]) -> None:
    handler = site(target())
    exchange_answers["binance"] = {"enableReading": True, "enableSpotAndMarginTrading": False,
                                   "enableWithdrawals": False}
    assert passes("safety.exchange_keys", handler, exchanges=(BINANCE,)).message == "Binance key is read-only"
    exchange_answers["binance"] = {"enableReading": True, "enableWithdrawals": True}
    result = fails("safety.exchange_keys", handler, exchanges=(BINANCE,))
    assert result.message == "Binance key is not read-only: enableWithdrawals"


# --------------------------------------------------------------------------- checks_security


def test_security_headers() -> None:
    passes("security.headers", site(target()))
    weak = {k: v for k, v in SECURE_HEADERS.items() if k != "Content-Security-Policy"}
    result = fails("security.headers", site(target(**{"/health": answer(200, {}, weak)})))
    assert result.details == {"missing": ["Content-Security-Policy"]}
    framed = with_(SECURE_HEADERS, **{"X-Frame-Options": "ALLOWALL"})
    assert fails("security.headers", site(target(**{"/health": answer(200, {}, framed)}))).details == {
        "missing": ["X-Frame-Options"]}


def test_security_https_redirect() -> None:
    to_https = answer(308, {}, {"Location": "https://app.test/health"})
    result = passes("security.https_redirect", site(target(**{"plain.test/health": to_https})),
                    http_url="http://plain.test")
    assert result.message == "308 -> https://app.test/health"
    stays = answer(200, {})
    assert fails("security.https_redirect", site(target(**{"plain.test/health": stays})),
                 http_url="http://plain.test").message.startswith("http answered 200")


def test_security_rate_limit() -> None:
    seen: list[int] = []

    def limited(request: httpx.Request) -> httpx.Response:
        seen.append(1)
        return answer(429 if len(seen) > 5 else 401)

    passes("security.rate_limit", site(target(**{"/api/auth/login": limited})))
    result = fails("security.rate_limit", site(target(**{"/api/auth/login": answer(401)})))
    assert result.details == {"statuses": [401]}


def echo(request: httpx.Request) -> httpx.Response:
    return answer(200, f"results for {request.url.params['q']}")


def test_security_injection_probes() -> None:
    safe = site(target(**{"/api/search": answer(400, {"error": "bad query"})}))
    for name in ("security.sql_injection", "security.xss", "security.command_injection"):
        statuses = passes(name, safe).details["statuses"]
        assert statuses and set(statuses) == {400}
    crash = fails("security.sql_injection", site(target(**{"/api/search": answer(500)})))
    assert crash.details == {"statuses": [500, 500, 500]}
    assert "-> 500" in crash.message
    reflected = fails("security.xss", site(target(**{"/api/search": echo})))
    assert "reflected unescaped" in reflected.message
    leak = fails("security.command_injection",
                 site(target(**{"/api/search": answer(200, "root:x:0:0:root:/root:/bin/sh")})))
    assert "leaked system output" in leak.message


# --------------------------------------------------------------------------- checks_monitoring

PROM = "http://prom.test"


def targets(*health: str) -> httpx.Response:
    return answer(200, {"data": {"activeTargets": [
        {"scrapePool": "app", "labels": {"instance": f"app-green-{i}:8080", "color": "green"}, "health": h,
         "lastError": "" if h == "up" else "connection refused"}
        for i, h in enumerate(health)
    ]}})


def test_monitoring_prometheus_targets() -> None:
    up = site({"prom.test/api/v1/targets?state=active": targets("up", "up")})
    assert passes("monitoring.prometheus_targets", up, prometheus_url=PROM).details == {"targets": 2}
    down = site({"prom.test/api/v1/targets?state=active": targets("up", "down")})
    result = fails("monitoring.prometheus_targets", down, prometheus_url=PROM, check_timeout=0.5)
    assert result.details == {"down": ["app/app-green-1:8080: down connection refused"]}
    short = site({"prom.test/api/v1/targets?state=active": targets("up")})
    assert fails("monitoring.prometheus_targets", short, prometheus_url=PROM, check_timeout=0.5,
                 expected_replicas=2).message == "1 target(s) for green, expected 2"


def test_monitoring_prometheus_rules() -> None:
    def rules(*rule: dict[str, Any]) -> Handler:
        return site({"prom.test/api/v1/rules": answer(200, {"data": {"groups": [{"rules": list(rule)}]}})})

    passes("monitoring.prometheus_rules",
           rules({"name": "A", "health": "ok"}, {"name": "B", "health": "unknown"}), prometheus_url=PROM)
    result = fails("monitoring.prometheus_rules", rules({"name": "A", "health": "err", "lastError": "bad"}),
                   prometheus_url=PROM)
    assert result.message == "1 rule(s) failing: A: bad"


def test_monitoring_alertmanager() -> None:
    def guarded(request: httpx.Request) -> httpx.Response:
        return answer(200 if "Authorization" in request.headers else 401)

    auth = {"alertmanager_url": "http://am.test", "alertmanager_user": "prometheus",
            "alertmanager_password": "pw"}
    passes("monitoring.alertmanager", site({"am.test/-/ready": guarded}), **auth)
    result = fails("monitoring.alertmanager", site({"am.test/-/ready": answer(200)}), **auth)
    assert result.message.startswith("Alertmanager answers without credentials (status 200")


def test_monitoring_grafana() -> None:
    def grafana(health: str) -> Handler:
        return site({
            "grafana.test/api/datasources": answer(200, [{"uid": "p1", "name": "Prometheus"}]),
            "grafana.test/api/datasources/uid/p1/health": answer(200, {"status": health}),
            "grafana.test/api/search?type=dash-db": answer(200, [{"title": "Trading"}] if health == "OK"
                                                           else []),
        })

    url = {"grafana_url": "http://grafana.test", "grafana_token": "t"}
    passes("monitoring.grafana_datasources", grafana("OK"), **url)
    result = fails("monitoring.grafana_datasources", grafana("ERROR"), **url)
    assert result.message == "datasource(s) unhealthy: Prometheus: 200 error"
    dashboards = passes("monitoring.grafana_dashboards", grafana("OK"), **url)
    assert dashboards.details == {"dashboards": ["Trading"]}
    empty = fails("monitoring.grafana_dashboards", grafana("ERROR"), **url)
    assert empty.message == "Grafana has no dashboards"


# --------------------------------------------------------------------------- checks_performance


def test_performance_p95_latency() -> None:
    result = passes("performance.p95_latency", site(target()), smoke_requests=20)
    assert result.details["errorRate"] == 0 and not result.blocking
    flaky = iter(range(1000))

    def sometimes(request: httpx.Request) -> httpx.Response:
        return answer(500 if next(flaky) % 4 == 0 else 200)

    failed = fails("performance.p95_latency", site(target(**{"/health": sometimes})), smoke_requests=20)
    assert 0 < failed.details["errorRate"] < 1
    slow = fails("performance.p95_latency", site(target()), smoke_requests=20, latency_threshold_ms=1e-6)
    assert slow.message.startswith("p95 ") and slow.details["errorRate"] == 0

