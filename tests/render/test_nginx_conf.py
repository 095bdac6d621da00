"""The generated nginx config, checked and run by the real nginx (Debian 1.22).

`nginx -t` validates every stack's config with every routing include. Then the
prod config runs as a normal nginx process on loopback high ports, in front of two
tiny Python stand-ins for app-blue/app-green, and httpx checks what clients see.
Only the listen ports, file paths and the upstream addresses differ from production
(`NginxPaths`/`NginxListen`); every other line is the production template.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trustme

from render.nginx import render_nginx_conf, render_routing
from settings import Color
from tests.support.nginx_lab import (
    Running,
    nginx_test,
    stack_settings,
    start_nginx,
    stop,
    write_tree,
)

pytestmark = pytest.mark.tools

ROUTINGS: list[tuple[Color | None, Color | None]] = [
    (live, preview) for live in (None, "blue", "green") for preview in (None, "blue", "green")
]


# --------------------------------------------------------------------------- nginx -t


@pytest.mark.parametrize("stack", ["prod", "dev"])
@pytest.mark.parametrize("routing", ROUTINGS, ids=lambda r: f"live-{r[0]}-preview-{r[1]}")
def test_config_passes_nginx_t(
    nginx: str, ca: trustme.CA, workdir: Path, stack: str, routing: tuple[Color | None, Color | None],
) -> None:
    paths = write_tree(workdir, stack_settings(stack), ca, routing=routing)
    result = nginx_test(nginx, paths)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr, result.stderr


def _status_listens(conf: str) -> list[str]:
    block = conf[conf.index("# status:"):]
    block = block[:block.index("\n    }\n")]
    return re.findall(r"^\s*listen\s+([^;]+);", block, re.M)


def test_production_listeners_and_paths() -> None:
    conf = render_nginx_conf(stack_settings("prod"))
    assert "include /etc/paper-trading/nginx/routing.conf;" in conf
    assert "if (-f /etc/paper-trading/routing/live-blue)" in conf
    assert "include /etc/nginx/mime.types;" in conf
    assert "resolver 127.0.0.11 valid=5s ipv6=off;" in conf
    assert 'blue "app-blue:3000";' in conf and 'green "app-green:3000";' in conf
    for listen in ("listen 8080 default_server;", "listen 8443 ssl default_server;",
                   "listen 9443 ssl default_server;"):
        assert listen in conf
    # The status listener: the metrics-only alias and loopback, never every address (the apps
    # share the frontend network with the proxy), issue 13, items 1 and 6.
    assert _status_listens(conf) == ["proxy-status:8081", "127.0.0.1:8081"]
    assert "pid /tmp/nginx.pid;" in conf
    assert "worker_shutdown_timeout 30s;" in conf
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in conf and "ssl_session_tickets off;" in conf
    assert "server_tokens off;" in conf
    assert "return 301 https://paper.example.com$request_uri;" in conf
    dev = render_nginx_conf(stack_settings("dev"))
    assert "ssl" not in dev.replace("X-Forwarded-Proto", "")
    assert "listen 8080 default_server;" in dev and "listen 9443 default_server;" in dev


def test_nginx_t_rejects_a_broken_routing_file(nginx: str, ca: trustme.CA, workdir: Path) -> None:
    """The check can fail: a routing file with an unknown directive is refused."""
    paths = write_tree(workdir, stack_settings("prod"), ca)
    Path(paths.routing_include).write_text("live_color blue;\n")
    assert nginx_test(nginx, paths).returncode != 0


def test_routing_file_shape() -> None:
    assert render_routing("blue", "green") == (
        "# Routing defaults: apply only while the routing directory holds no marker file\n"
        "# (live-<color>, preview-<color>); the switch renames markers and never rewrites this.\n"
        'map $host $routing_live_default { default "blue"; }\n'
        'map $host $routing_preview_default { default "green"; }\n'
    )
    assert '"none"' in render_routing(None, "blue")
    with pytest.raises(ValueError):
        render_routing("red", None)  # type: ignore[arg-type]


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def test_http_redirects_to_https_but_answers_acme(prod: Running) -> None:
    with prod.client() as client:
        response = client.get(prod.url("http", "/orders?id=7"))
        assert response.status_code == 301
        assert response.headers["location"] == f"https://localhost:{prod.listen.https}/orders?id=7"
        acme = client.get(prod.url("http", "/.well-known/acme-challenge/token"))
        assert acme.status_code == 404


def test_bootstrap_routing_promotes_nothing(prod: Running) -> None:
    with prod.client() as client:
        live = client.get(prod.url("https", "/"))
        assert live.status_code == 503
        assert "no color promoted yet" in live.text
        assert live.headers["content-type"].startswith("text/plain")
        assert live.headers["x-deployment-color"] == "none"
        assert live.headers["strict-transport-security"].startswith("max-age=63072000")
        preview = client.get(prod.url("preview", "/"))
        assert preview.status_code == 503
        # The gate can still validate a candidate before any routing exists.
        candidate = client.get(prod.url("preview", "/"), headers={"X-Preview-Color": "green"})
        assert candidate.status_code == 200
        assert candidate.json()["color"] == "green"


def test_live_and_preview_follow_routing(prod: Running) -> None:
    pairs: list[tuple[Color, Color]] = [("blue", "green"), ("green", "blue")]
    for live, preview in pairs:
        prod.route(live, preview)
        with prod.client() as client:
            response = client.get(prod.url("https", "/health"))
            assert response.status_code == 200
            assert response.json()["color"] == live
            assert response.headers.get_list("x-deployment-color") == [live]
            assert response.headers["x-upstream-color"] == live
            response = client.get(prod.url("preview", "/health"))
            assert response.json()["color"] == preview
            assert response.headers["x-deployment-color"] == preview
            chosen = client.get(prod.url("preview", "/health"), headers={"X-Preview-Color": live})
            assert chosen.json()["color"] == live
            assert chosen.headers["x-deployment-color"] == live
            bad = client.get(prod.url("preview", "/health"), headers={"X-Preview-Color": "red"})
            assert bad.status_code == 400
    prod.route(None, "blue")
    with prod.client() as client:
        assert client.get(prod.url("https", "/")).status_code == 503
        assert client.get(prod.url("preview", "/")).json()["color"] == "blue"


def test_security_headers_and_forwarding(prod: Running) -> None:
    prod.route("blue", "green")
    with prod.client() as client:
        response = client.get(
            prod.url("https", "/echo"),
            headers={"X-Forwarded-For": "6.6.6.6", "X-Preview-Color": "green"},
        )
        assert response.status_code == 200
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "camera=()" in response.headers["permissions-policy"]
        assert "includeSubDomains" in response.headers["strict-transport-security"]
        assert response.headers["server"] == "nginx", "server_tokens off hides the version"
        assert "x-powered-by" not in response.headers
        seen = {k.lower(): v for k, v in response.json()["headers"].items()}
        assert seen["x-forwarded-for"] == "127.0.0.1"
        assert seen["x-forwarded-proto"] == "https"
        assert len(seen["x-request-id"]) == 32
        assert "x-preview-color" not in seen
        assert response.json()["color"] == "blue", "X-Preview-Color must not steer live traffic"
        assert client.get(prod.url("https", "/metrics")).status_code == 404
        assert client.get(prod.url("preview", "/metrics")).status_code == 200


def test_tls_versions(prod: Running) -> None:
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = ssl.create_default_context()
        prod.ca.configure_trust(context)
        context.minimum_version = context.maximum_version = version
        with socket.create_connection(("127.0.0.1", prod.listen.https), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == version.name.replace("v1_", "v1.")


INJECTIONS = [
    "/api/orders?id=1%27%20OR%201=1",
    "/api/orders?id=1' or '1'='1",
    "/search?q=1 UNION SELECT password FROM users",
    "/search?q=<script>alert(1)</script>",
    "/search?q=%3Cimg%20src=x%20onerror=alert(1)%3E",
    "/search?next=javascript:alert(1)",
    "/tools?host=127.0.0.1;cat /etc/passwd",
    "/tools?host=$(whoami)",
    "/static/..%2f..%2fetc/passwd",
    "/api/x?file=report%00.pdf",
]
HARMLESS = [
    "/api/orders?symbol=BTC-USDT&side=buy&type=limit&price=42000.5",
    "/api/search?q=O'Brien",
    "/api/strategies/mean-reversion?window=20&select=all",
    "/api/account/union-bank?or=1",
]


def test_injection_probes_get_400_and_normal_calls_pass(prod: Running) -> None:
    prod.route("blue", "green")
    with prod.client() as client:
        for uri in INJECTIONS:
            for listener in ("https", "preview"):
                response = client.get(prod.url(listener, uri))
                assert response.status_code == 400, (listener, uri, response.status_code)
                assert response.headers["x-content-type-options"] == "nosniff"
        for uri in HARMLESS:
            response = client.get(prod.url("https", uri))
            assert response.status_code == 200, (uri, response.status_code)


def test_api_burst_beyond_rate_limit_gets_429(prod: Running) -> None:
    prod.route("blue", "green")
    limit = prod.settings.proxy.api_rate_limit
    with prod.client() as client:
        urls = [prod.url("https", f"/api/ticker?n={i}") for i in range(limit.burst * 3)]
        codes = [client.get(url).status_code for url in urls]
    assert codes[: limit.burst] == [200] * limit.burst, codes
    assert codes.count(429) >= limit.burst // 2, codes
    assert set(codes) == {200, 429}


def test_auth_burst_beyond_rate_limit_gets_429(prod: Running) -> None:
    prod.route("blue", "green")
    limit = prod.settings.proxy.auth_rate_limit
    with prod.client() as client:
        url = prod.url("https", "/api/auth/login")
        codes = [client.post(url).status_code for _ in range(limit.burst + 5)]
    assert codes[0] == 200 and 429 in codes, codes
    assert codes.count(200) <= limit.burst + 2, codes


def test_access_log_is_json_with_color(prod: Running) -> None:
    prod.route("green", "blue")
    with prod.client() as client:
        client.get(prod.url("https", "/audit-me?token=secret"))
        client.get(prod.url("preview", "/audit-me"))
    deadline = time.monotonic() + 5
    entries: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        entries = [e for e in prod.access_log() if e["uri"] == "/audit-me"]
        if len(entries) == 2:
            break
        time.sleep(0.05)
    assert [e["color"] for e in entries] == ["green", "blue"]
    live = entries[0]
    assert live["status"] == 200 and isinstance(live["request_time"], float)
    assert live["method"] == "GET" and live["upstream_status"] == "200"
    assert live["upstream_addr"].startswith("127.0.0.1:") and len(live["request_id"]) == 32
    assert "secret" not in json.dumps(entries), "query strings (tokens) stay out of the audit log"
    with prod.client() as client:
        client.get(prod.url("http", "/redirected"))
    while not any(e["uri"] == "/redirected" for e in prod.access_log()):
        assert time.monotonic() < deadline + 5, "redirect not logged"
        time.sleep(0.05)
    assert "uninitialized" not in Path(prod.paths.error_log).read_text()


def _websocket(run: Running) -> ssl.SSLSocket:
    context = ssl.create_default_context()
    run.ca.configure_trust(context)
    raw = socket.create_connection(("127.0.0.1", run.listen.https), timeout=10)
    sock = context.wrap_socket(raw, server_hostname="localhost")
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_websocket_upgrade_is_tunnelled(prod: Running) -> None:
    prod.route("blue", "green")
    with _websocket(prod) as sock:
        sock.sendall(b"ping\n")
        assert sock.recv(100) == b"blue:ping\n"


def test_reload_keeps_websocket_until_worker_shutdown_timeout(
    nginx: str, ca: trustme.CA, workdir: Path, stand_ins: dict[str, int],
) -> None:
    """On a switch old workers keep open websockets until worker_shutdown_timeout, then close them."""
    run = start_nginx(nginx, workdir, stack_settings("prod"), ca, stand_ins, worker_shutdown_timeout="2s")
    try:
        run.route("blue", "green")
        with _websocket(run) as sock:
            switched = time.monotonic()
            run.route("green", "blue", recycle=True)
            sock.sendall(b"still-there\n")
            assert sock.recv(100) == b"blue:still-there\n", "the old connection stays on its color"
            sock.settimeout(10)
            try:
                closed = sock.recv(100) == b""
            except (ConnectionError, ssl.SSLError):
                closed = True
            elapsed = time.monotonic() - switched
        assert closed
        assert 1.0 <= elapsed <= 6.0, elapsed
    finally:
        stop(run)


HTTP_FILE_CACHE = "open_file_cache max=1000 inactive=60s; open_file_cache_valid 60s;"


@pytest.mark.parametrize("http_extra", [None, HTTP_FILE_CACHE])
def test_a_switch_is_a_rename_seen_by_the_next_request_without_any_reload(
    nginx: str, ca: trustme.CA, workdir: Path, stand_ins: dict[str, int], http_extra: str | None,
) -> None:
    """Same workers, the next request (fresh or kept-alive connection) already has the new color;
    an open_file_cache someone adds at http level cannot cache the marker test (servers turn it off)."""
    run = start_nginx(nginx, workdir, stack_settings("prod"), ca, stand_ins, http_extra=http_extra)
    try:
        run.route("blue", "green")
        workers = run.workers()
        assert workers
        with run.client() as kept:
            flips: list[tuple[Color, Color]] = [("green", "blue"), ("blue", "green")]
            for live, preview in flips * 3:
                run.route(live, preview)  # asserts the fresh-connection request
                response = kept.get(run.url(run.live, "/health"))
                assert (response.json()["color"], response.headers["x-deployment-color"]) == (live, live)
                chosen = kept.get(run.url("preview", "/health"))
                assert chosen.headers["x-deployment-color"] == preview
        assert run.workers() == workers, "a switch must not reload nginx"
        markers = sorted(p.name for p in Path(run.paths.routing_dir).iterdir() if "-" in p.name)
        assert markers == ["live-blue", "preview-green"]
    finally:
        stop(run)


def test_no_request_between_switches_sees_no_color(
    nginx: str, ca: trustme.CA, workdir: Path, stand_ins: dict[str, int],
) -> None:
    """rename(2) leaves no instant without a marker: requests racing 40 switches all get a color.

    A switch that removed the old marker and then created the new one would leave a gap in
    which nginx falls back to the include's `none` (503).
    """
    run = start_nginx(nginx, workdir, stack_settings("prod"), ca, stand_ins)
    seen: dict[str, int] = {}
    stop_load = threading.Event()

    def load() -> None:
        with run.client() as client:
            while not stop_load.is_set():
                response = client.get(run.url(run.live, "/health"))
                key = f"{response.status_code}:{response.headers.get('x-deployment-color')}"
                seen[key] = seen.get(key, 0) + 1

    try:
        run.route("blue", "green")
        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            flips: list[tuple[Color, Color]] = [("green", "blue"), ("blue", "green")]
            for live, preview in flips * 20:
                run.route(live, preview)
        finally:
            stop_load.set()
            for thread in threads:
                thread.join(timeout=10)
        assert set(seen) <= {"200:blue", "200:green"}, seen
        assert sum(seen.values()) > 100, seen
    finally:
        stop(run)


def test_dev_config_serves_plain_http(
    nginx: str, ca: trustme.CA, workdir: Path, stand_ins: dict[str, int],
) -> None:
    run = start_nginx(nginx, workdir, stack_settings("dev"), ca, stand_ins)
    try:
        run.route("green", "blue")
        with run.client() as client:
            live = client.get(run.url("http", "/health"))
            assert live.status_code == 200 and live.json()["color"] == "green"
            assert "strict-transport-security" not in live.headers
            assert live.headers["x-frame-options"] == "DENY"
            preview = client.get(run.url("preview", "/health"))
            assert preview.url.scheme == "http" and preview.json()["color"] == "blue"
    finally:
        stop(run)

