"""Reference implementation of the paper-trading app contract, with switchable faults.

The HTTP side is Python 3's standard library only; it runs as the blue/green app in
Docker tests and the dev stack.

    python3 -m reference_app --port 3000 --color blue

Environment: PORT, DEPLOYMENT_COLOR, PAPER_TRADING_MODE, ALLOW_REAL_TRADES (reported as
read; anything but PAPER_TRADING_MODE=true / ALLOW_REAL_TRADES=false is reported unsafe),
APP_VERSION, EXCHANGES (default "binance,kucoin"), DATABASE_ADDR / REDIS_ADDR / QUEUE_ADDR
(host:port probed over TCP for readiness), AUTH_RATE_LIMIT ("rate:burst", default "1:5"),
FAULTS (comma list, below), SLOW_SECONDS (default 10), ADMIN_TOKEN, ACCESS_LOG=1; background
work (reference_app/work.py, docs/background-work.md): WORK_ENABLED, WORK_QUEUES,
WORK_LEASE_TTL_MS, WORK_PREFETCH, WORK_TICK_MS, REDIS_HOST/PORT/PASSWORD_FILE,
RABBITMQ_HOST/PORT/USER/PASSWORD_FILE.

Faults: slow, error_5xx, not_ready, paper_mode_off, real_trades_allowed, trading_key,
wrong_color, invalid_json, injection_5xx, injection_reflect, no_security_headers,
no_rate_limit, dependency_down, ignore_lease (background work without the lease: the
mutation the exactly-once tests prove the fence against). Flip them at run time with
`POST /admin/faults {"faults": ["slow"]}` from loopback, or from anywhere with header
`X-Admin-Token: $ADMIN_TOKEN` (no token configured = loopback only).
"""

from __future__ import annotations

import argparse
import hmac
import html
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

FAULTS = frozenset(
    {
        "slow",
        "error_5xx",
        "not_ready",
        "paper_mode_off",
        "real_trades_allowed",
        "trading_key",
        "wrong_color",
        "invalid_json",
        "injection_5xx",
        "injection_reflect",
        "no_security_headers",
        "no_rate_limit",
        "dependency_down",
        "ignore_lease",
    }
)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROUTES = (
    "/health",
    "/health/detailed",
    "/health/ready",
    "/health/live",
    "/metrics",
    "/api/status",
    "/api/search",
    "/api/orders",
    "/api/backtest",
    "/api/auth/login",
    "/admin/faults",
)
#: `/api/backtest?ms=N` works N ms (at most this): load that holds requests in flight.
MAX_BACKTEST_MS = 5000
#: Routes not counted in `http_requests_in_flight` (the probes and scrapes, not the app's load).
NOT_LOAD = ("/metrics", "/health")
SAFE_QUERY = re.compile(r"^[A-Za-z0-9 ._-]{0,64}$")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Permissions-Policy": "geolocation=(), camera=(), microphone=(), payment=()",
    "Cache-Control": "no-store",
}


def parse_faults(raw: str) -> set[str]:
    names = {p.strip().lower().replace("-", "_") for p in raw.split(",") if p.strip()}
    names = {"error_5xx" if n in ("5xx", "error") else n for n in names}
    unknown = names - FAULTS
    if unknown:
        raise ValueError(
            f"unknown fault(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(FAULTS))}"
        )
    return names


def truthy(raw: str | None, default: bool) -> bool:
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


class State:
    """Everything mutable, behind one lock: faults, counters, histogram, rate buckets."""

    def __init__(self, color: str, faults: set[str]) -> None:
        self.lock = threading.Lock()
        self.color = color
        self.faults = set(faults)
        self.version = os.environ.get("APP_VERSION", "1.0.0-reference")
        self.paper_mode = truthy(os.environ.get("PAPER_TRADING_MODE"), True)
        self.allow_real = truthy(os.environ.get("ALLOW_REAL_TRADES"), False)
        self.exchanges = [
            e.strip() for e in os.environ.get("EXCHANGES", "binance,kucoin").split(",") if e.strip()
        ]
        self.slow_seconds = float(os.environ.get("SLOW_SECONDS", "10"))
        self.admin_token = os.environ.get("ADMIN_TOKEN", "")
        rate, _, burst = os.environ.get("AUTH_RATE_LIMIT", "1:5").partition(":")
        self.auth_rate, self.auth_burst = float(rate), float(burst or 5)
        self.buckets: dict[str, tuple[float, float]] = {}
        self.requests: dict[tuple[str, str, int], int] = {}
        self.hist: dict[str, list[int]] = {}
        self.hist_sum: dict[str, float] = {}
        self.trades_executed = 0
        self.real_blocked = 0
        #: Requests being served now, probes and scrapes aside (the auto-scaler's signal).
        self.in_flight = 0
        self.balance = 100000.0
        self.started = time.time()
        self.worker: Any = None  # reference_app.work.Worker when WORK_ENABLED

    def has(self, fault: str) -> bool:
        with self.lock:
            return fault in self.faults

    def allow(self, client: str) -> bool:
        """Token bucket per client address for the auth paths."""
        now = time.monotonic()
        with self.lock:
            tokens, last = self.buckets.get(client, (self.auth_burst, now))
            tokens = min(self.auth_burst, tokens + (now - last) * self.auth_rate)
            ok = tokens >= 1
            self.buckets[client] = (tokens - 1 if ok else tokens, now)
            return ok

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self.lock:
            key = (method, route, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            counts = self.hist.setdefault(route, [0] * (len(BUCKETS) + 1))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self.hist_sum[route] = self.hist_sum.get(route, 0.0) + seconds


def probe(addr: str) -> str:
    host, _, port = addr.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return "ok"
    except (OSError, ValueError):
        return "down"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "paper-trading-reference"
    sys_version = ""
    state: State

    # ------------------------------------------------------------------ plumbing

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def _route(self, path: str) -> str:
        return path if path in ROUTES else "other"

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Deployment-Color", self._color())
        if not self.state.has("no_security_headers"):
            for name, value in SECURITY_HEADERS.items():
                self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._status = status

    def _json(self, status: int, doc: Any) -> None:
        text = json.dumps(doc).replace("<", "\\u003c").replace(">", "\\u003e")
        self._send(status, text.encode())

    def _color(self) -> str:
        if self.state.has("wrong_color"):
            return "green" if self.state.color == "blue" else "blue"
        return self.state.color

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(min(length, 65536)) if length > 0 else b""

    def _handle(self) -> None:
        start = time.perf_counter()
        self._status = 0
        url = urlsplit(self.path)
        route = self._route(url.path)
        load = not url.path.startswith(NOT_LOAD)
        if load:
            with self.state.lock:
                self.state.in_flight += 1
        try:
            if url.path == "/admin/faults":
                self._admin()
            else:
                self._app(url.path, parse_qs(url.query))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            if load:
                with self.state.lock:
                    self.state.in_flight -= 1
            elapsed = time.perf_counter() - start
            self.state.observe(self.command, route, self._status, elapsed)
            if os.environ.get("ACCESS_LOG") == "1":
                print(
                    json.dumps(
                        {
                            "method": self.command,
                            "path": route,
                            "status": self._status,
                            "ms": round(elapsed * 1000, 1),
                            "color": self.state.color,
                        }
                    ),
                    flush=True,
                )

    do_GET = do_POST = do_HEAD = do_PUT = _handle  # noqa: N815 - stdlib dispatch names

    # ------------------------------------------------------------------ admin

    def _admin(self) -> None:
        client = self.client_address[0]
        token = self.headers.get("X-Admin-Token", "")
        local = client in ("127.0.0.1", "::1") or client.startswith("::ffff:127.")
        authorised = bool(self.state.admin_token) and hmac.compare_digest(token, self.state.admin_token)
        if not (local or authorised):
            self._json(403, {"error": "admin endpoint: loopback or X-Admin-Token only"})
            return
        if self.command in ("POST", "PUT"):
            try:
                doc = json.loads(self._body() or b"{}")
                wanted = doc.get("faults", [])
                faults = parse_faults(",".join(wanted) if isinstance(wanted, list) else str(wanted))
            except (ValueError, AttributeError) as exc:
                self._json(400, {"error": html.escape(str(exc))})
                return
            with self.state.lock:
                self.state.faults = faults
        with self.state.lock:
            current = sorted(self.state.faults)
        self._json(200, {"faults": current})

    # ------------------------------------------------------------------ the app contract

    def _app(self, path: str, query: dict[str, list[str]]) -> None:
        state = self.state
        if state.has("slow"):
            time.sleep(state.slow_seconds)
        if state.has("error_5xx"):
            self._json(500, {"error": "internal error (fault error_5xx)"})
            return
        if path == "/health":
            self._json(200, {"status": "ok"})
        elif path == "/health/live":
            self._json(200, {"status": "alive"})
        elif path == "/health/ready":
            deps = self._dependencies()
            ready = not state.has("not_ready") and all(v != "down" for v in deps.values())
            self._json(
                200 if ready else 503, {"status": "ready" if ready else "not ready", "dependencies": deps}
            )
        elif path == "/health/detailed":
            if state.has("invalid_json"):
                self._send(200, b'{"status": "ok", "paperTradingMode": tru', "application/json")
            else:
                self._json(200, self._detailed())
        elif path == "/metrics":
            self._send(200, self._metrics().encode(), "text/plain; version=0.0.4")
        elif path == "/api/status":
            self._json(
                200, {"color": self._color(), "paperTradingMode": self._paper(), "version": state.version}
            )
        elif path == "/api/search":
            self._search(query.get("q", [""])[0])
        elif path == "/api/orders":
            self._order()
        elif path == "/api/backtest":
            self._backtest(query.get("ms", ["100"])[0])
        elif path in ("/api/auth/login", "/auth/login"):
            if not state.has("no_rate_limit") and not state.allow(self.client_address[0]):
                self._json(429, {"error": "too many requests"})
            else:
                self._json(401, {"error": "invalid credentials"})
        else:
            self._json(404, {"error": "not found"})

    def _paper(self) -> bool:
        return self.state.paper_mode and not self.state.has("paper_mode_off")

    def _real(self) -> bool:
        return self.state.allow_real or self.state.has("real_trades_allowed")

    def _dependencies(self) -> dict[str, str]:
        found = {}
        for name, env in (("database", "DATABASE_ADDR"), ("redis", "REDIS_ADDR"), ("queue", "QUEUE_ADDR")):
            addr = os.environ.get(env)
            found[name] = probe(addr) if addr else "not configured"
        if self.state.has("dependency_down"):
            found["database"] = "down"
        return found

    def _detailed(self) -> dict[str, Any]:
        perms = {name: {"permissions": "READ_ONLY", "sandbox": True} for name in self.state.exchanges}
        if self.state.has("trading_key") and perms:
            perms[next(iter(perms))]["permissions"] = "TRADE"
        deps = self._dependencies()
        return {
            "status": "degraded" if "down" in deps.values() else "ok",
            "version": self.state.version,
            "color": self._color(),
            "paperTradingMode": self._paper(),
            "allowRealTrades": self._real(),
            "exchanges": perms,
            "dependencies": deps,
            "uptimeSeconds": round(time.time() - self.state.started, 1),
            **self._work(),
        }

    def _work(self) -> dict[str, Any]:
        worker = self.state.worker
        if worker is None:
            return {"role": "disabled", "epoch": None, "liveColor": None, "consumers": [], "schedulers": []}
        return {"role": worker.role(), **worker.detailed()}

    def _search(self, q: str) -> None:
        if SAFE_QUERY.match(q):
            self._json(200, {"query": q, "results": []})
        elif self.state.has("injection_5xx"):
            self._json(500, {"error": "database error"})
        elif self.state.has("injection_reflect"):
            self._send(200, f"<html><body>Results for {q}</body></html>".encode(), "text/html; charset=utf-8")
        else:
            self._json(400, {"error": "invalid query", "query": html.escape(q, quote=True)})

    def _backtest(self, raw: str) -> None:
        if not raw.isdigit() or int(raw) > MAX_BACKTEST_MS:
            self._json(400, {"error": f"ms: a whole number of milliseconds up to {MAX_BACKTEST_MS}"})
            return
        time.sleep(int(raw) / 1000)
        self._json(200, {"status": "done", "ms": int(raw), "mode": "paper"})

    def _order(self) -> None:
        """Paper orders only: a request for a real order is refused and counted."""
        if self.command != "POST":
            self._json(405, {"error": "POST only"})
            return
        try:
            doc = json.loads(self._body() or b"{}")
        except ValueError:
            self._json(400, {"error": "invalid JSON"})
            return
        if not isinstance(doc, dict):
            self._json(400, {"error": "invalid order"})
            return
        with self.state.lock:
            if doc.get("mode", "paper") != "paper" or not self.state.paper_mode:
                self.state.real_blocked += 1
                blocked = True
            else:
                self.state.trades_executed += 1
                blocked = False
        if blocked:
            self._json(403, {"error": "real trading is disabled", "paperTradingMode": True})
        else:
            self._json(201, {"status": "filled", "mode": "paper"})

    def _metrics(self) -> str:
        s = self.state
        with s.lock:
            requests = dict(s.requests)
            hist = {k: list(v) for k, v in s.hist.items()}
            sums = dict(s.hist_sum)
            executed, blocked, balance = s.trades_executed, s.real_blocked, s.balance
            in_flight = s.in_flight
        lines = [
            "# HELP paper_trading_mode 1 when the app runs in paper-trading mode.",
            "# TYPE paper_trading_mode gauge",
            f"paper_trading_mode {1 if self._paper() else 0}",
            "# HELP paper_trading_allow_real_trades 1 when real trades are allowed (must be 0).",
            "# TYPE paper_trading_allow_real_trades gauge",
            f"paper_trading_allow_real_trades {1 if self._real() else 0}",
            "# HELP paper_trading_real_trades_blocked_total Real-trade attempts refused.",
            "# TYPE paper_trading_real_trades_blocked_total counter",
            f"paper_trading_real_trades_blocked_total {blocked}",
            "# TYPE paper_trading_trades_executed_total counter",
            f"paper_trading_trades_executed_total {executed}",
            "# TYPE paper_trading_virtual_balance gauge",
            f"paper_trading_virtual_balance {balance}",
            "# HELP http_requests_in_flight Requests being served (probes and scrapes aside).",
            "# TYPE http_requests_in_flight gauge",
            f"http_requests_in_flight {in_flight}",
            "# HELP http_requests_total HTTP requests by method, route and status.",
            "# TYPE http_requests_total counter",
        ]
        for (method, route, status), count in sorted(requests.items()):
            lines.append(
                f'http_requests_total{{method="{method}",route="{route}",status="{status}",'
                f'color="{s.color}"}} {count}'
            )
        lines += [
            "# HELP http_request_duration_seconds Request latency.",
            "# TYPE http_request_duration_seconds histogram",
        ]
        for route, counts in sorted(hist.items()):
            for bound, count in zip(BUCKETS, counts, strict=False):
                lines.append(f'http_request_duration_seconds_bucket{{route="{route}",le="{bound}"}} {count}')
            lines.append(f'http_request_duration_seconds_bucket{{route="{route}",le="+Inf"}} {counts[-1]}')
            lines.append(f'http_request_duration_seconds_sum{{route="{route}"}} {sums[route]:.6f}')
            lines.append(f'http_request_duration_seconds_count{{route="{route}"}} {counts[-1]}')
        if not hist:
            lines.append('http_request_duration_seconds_bucket{route="/metrics",le="+Inf"} 0')
        if s.worker is not None:
            lines += s.worker.metrics()
        else:
            lines += [
                "# TYPE paper_trading_worker_active gauge",
                f'paper_trading_worker_active{{color="{s.color}"}} 0',
            ]
        return "\n".join(lines) + "\n"


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Reference paper-trading app (app contract + faults).")
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    parser.add_argument(
        "--color", default=os.environ.get("DEPLOYMENT_COLOR", "blue"), choices=("blue", "green")
    )
    parser.add_argument("--faults", default=os.environ.get("FAULTS", ""), help="comma-separated faults")
    args = parser.parse_args(argv)
    try:
        faults = parse_faults(args.faults)
    except ValueError as exc:
        parser.error(str(exc))
    state = State(args.color, faults)
    handler = type("BoundHandler", (Handler,), {"state": state})
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    server_class = type("BoundServer", (Server,), {"address_family": family})
    server = server_class((args.host, args.port), handler)

    def stop(_signum: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    from reference_app.work import WorkSettings

    work = WorkSettings()
    if work.enabled:
        from reference_app.work import Worker

        state.worker = Worker(args.color, work, state.has)
        state.worker.start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"reference app ({args.color}) on {args.host}:{server.server_address[1]} faults={sorted(faults)}",
        file=sys.stderr,
        flush=True,
    )
    server.serve_forever(poll_interval=0.2)
    if state.worker is not None:
        state.worker.shutdown()  # stand down in order and release the lease
    server.server_close()
    return 0
