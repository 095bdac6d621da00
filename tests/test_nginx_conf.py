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
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from render.nginx import NginxListen, NginxPaths, render_nginx_conf, render_routing
from settings import Color, Settings, parse_settings
from tests.support import require_tool
from tools.render import stack_config

pytestmark = pytest.mark.tools

ROUTINGS: list[tuple[Color | None, Color | None]] = [
    (live, preview) for live in (None, "blue", "green") for preview in (None, "blue", "green")
]


def stack_settings(stack: str) -> Settings:
    config, secrets = stack_config(stack)
    raw = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("paper-trading:")}
    return parse_settings(raw, frozenset(k.split(":", 1)[1] for k in secrets))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_paths(root: Path) -> NginxPaths:
    return NginxPaths(
        conf_dir=str(root), routing_include=str(root / "routing" / "routing.conf"),
        markers_dir=str(root / "routing"),
        tls_cert=str(root / "tls" / "fullchain.pem"), tls_key=str(root / "tls" / "privkey.pem"),
        pid=str(root / "nginx.pid"), temp_dir=str(root / "cache"),
        access_log=str(root / "access.log"), error_log=str(root / "error.log"), acme_root=str(root / "acme"),
    )


HOST_STATUS_ADDRESS = "127.0.0.2"


def write_tree(
    root: Path, settings: Settings, ca: trustme.CA, listen: NginxListen | None = None,
    routing: tuple[Color | None, Color | None] = (None, None),
) -> NginxPaths:
    """The container's files under `root`: config, routing include, a test certificate."""
    paths = local_paths(root)
    for folder in ("routing", "tls", "cache", "acme"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(paths.tls_cert)
    cert.private_key_pem.write_to_path(paths.tls_key)
    # The status listener's metrics-only alias exists only inside the proxy container (Docker
    # DNS); here it is a second loopback address, so the rendered two-listener form is checked.
    listen = listen or NginxListen(status_host=HOST_STATUS_ADDRESS)
    Path(paths.conf).write_text(render_nginx_conf(settings, paths, listen))
    Path(paths.routing_include).write_text(render_routing(*routing))
    return paths


@pytest.fixture(scope="module")
def nginx() -> str:
    return require_tool("nginx")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not under pytest's 0700 tmp: nginx workers may run as another user.
    path = Path(tempfile.mkdtemp(prefix="nginx-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def nginx_test(nginx: str, paths: NginxPaths) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [nginx, "-t", "-e", "stderr", "-c", paths.conf, "-p", paths.conf_dir],
        capture_output=True, text=True, timeout=30,
    )


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


# --------------------------------------------------------------------------- running nginx


class StandIn(BaseHTTPRequestHandler):
    """An app color: echoes what it received, claims its color, tunnels /ws."""

    color = "?"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.path.startswith("/ws") and self.headers.get("Upgrade", "").lower() == "websocket":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            for _ in range(10):
                line = self.rfile.readline()
                if not line:
                    break
                self.wfile.write(f"{self.color}:".encode() + line)
                self.wfile.flush()
            self.close_connection = True
            return
        body = json.dumps({"color": self.color, "path": self.path, "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Deployment-Color", self.color)
        self.send_header("X-Powered-By", "stand-in")
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    paths: NginxPaths
    listen: NginxListen
    ca: trustme.CA
    settings: Settings

    def url(self, listener: str, path: str = "/") -> str:
        port = getattr(self.listen, listener)
        tls = self.settings.server.ssl.enabled and listener in ("https", "preview")
        return f"{'https' if tls else 'http'}://localhost:{port}{path}"

    def client(self) -> httpx.Client:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return httpx.Client(verify=context, timeout=5, follow_redirects=False)

    def workers(self) -> set[int]:
        found = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:
                found.add(int(stat.parent.name))
        return found

    def route(self, live: Color | None, preview: Color | None, recycle: bool = False) -> None:
        """What the routing switch does: its own script renames the markers; no reload.

        The very next request must carry the new color (no polling: nothing is in between).
        With `recycle`, also the switch's last step: a graceful reload (SIGHUP), which makes
        old workers close connections opened before (websockets) after worker_shutdown_timeout.
        """
        from release.routing import docker_side

        env = {**docker_side.swap_env(live or "none", preview or "none", "test/1/0", self.paths.routing_dir),
               "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        for script in (docker_side.SWAP_SCRIPT, docker_side.RELEASE_SCRIPT):
            done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=10)
            assert done.returncode == 0, done.stdout + done.stderr
        if recycle:
            self.process.send_signal(signal.SIGHUP)
        with self.client() as client:
            served = client.get(self.url(self.live)).headers.get("x-deployment-color")
        assert served == (live or "none"), f"the next request after the rename got {served}"

    @property
    def live(self) -> str:
        return "https" if self.settings.server.ssl.enabled else "http"

    def access_log(self) -> list[dict[str, Any]]:
        lines = Path(self.paths.access_log).read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def stand_ins() -> Iterator[dict[str, int]]:
    servers = {}
    for color in ("blue", "green"):
        handler = type(f"StandIn{color}", (StandIn,), {"color": color})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[color] = server
    yield {color: int(server.server_address[1]) for color, server in servers.items()}
    for server in servers.values():
        server.shutdown()
        server.server_close()


def start_nginx(
    nginx: str, root: Path, base: Settings, ca: trustme.CA, stand_ins: dict[str, int],
    worker_shutdown_timeout: str | None = None, http_extra: str | None = None,
) -> Running:
    listen = NginxListen(
        address="127.0.0.1", http=free_port(), https=free_port(), preview=free_port(), status=free_port(),
        upstreams=tuple((color, f"127.0.0.1:{port}") for color, port in stand_ins.items()),
    )
    proxy_update: dict[str, Any] = {"http_port": listen.http, "https_port": listen.https}
    if worker_shutdown_timeout:
        proxy_update["worker_shutdown_timeout"] = worker_shutdown_timeout
    settings = base.model_copy(update={
        "server": base.server.model_copy(update={"host": "localhost"}),
        "proxy": base.proxy.model_copy(update=proxy_update),
    })
    paths = write_tree(root, settings, ca, listen)
    if http_extra:
        conf = Path(paths.conf).read_text()
        assert conf.count("\nhttp {\n") == 1
        Path(paths.conf).write_text(conf.replace("\nhttp {\n", f"\nhttp {{\n    {http_extra}\n"))
    assert nginx_test(nginx, paths).returncode == 0
    process = subprocess.Popen(
        [nginx, "-e", paths.error_log, "-c", paths.conf, "-p", paths.conf_dir, "-g", "daemon off;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    running = Running(process, paths, listen, ca, settings)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{listen.status}/nginx-health", timeout=1).status_code == 200:
                return running
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.05)
    stop(running)
    raise AssertionError(f"nginx did not start: {Path(paths.error_log).read_text()}")


def stop(running: Running) -> None:
    if running.process.poll() is None:
        running.process.send_signal(signal.SIGQUIT)
        try:
            running.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait(timeout=10)


@pytest.fixture
def prod(nginx: str, ca: trustme.CA, workdir: Path, stand_ins: dict[str, int]) -> Iterator[Running]:
    running = start_nginx(nginx, workdir, stack_settings("prod"), ca, stand_ins)
    yield running
    stop(running)


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

