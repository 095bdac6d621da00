"""The product's rendered nginx.conf on this host's real nginx: the file tree it reads, stand-in
upstreams for both colors, a running instance per test (fixtures shared as a pytest plugin)."""

from __future__ import annotations

import json
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
