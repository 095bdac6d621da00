"""A real blue/green stack on the local Docker Engine, for the routing tests and the benchmark.

Builds (or reuses) the test images with `scripts/build-test-images`, then starts:
a frontend network, one app container per color (aliases `app-blue`/`app-green`,
the reference app when `validation/reference_app.py` exists, else a few-line
stand-in), and the proxy: the base image's nginx running the exact files the
program uploads into the proxy (`components.proxy.proxy_files`: the generated
nginx.conf and the bootstrap routing include), hardened like production
(read-only rootfs, non-root 101:101, cap drop ALL, a volume at the config dir).
Everything is labelled and removed afterwards, also after a crash of an earlier run.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
TEST_LABEL = "paper-trading.test"
APP_IMAGE = "paper-trading-reference-app:test"
APP_PORT = 3000

#: Until validation/reference_app.py exists: answers every path with the color.
STANDIN_APP = r"""
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
COLOR = os.environ["DEPLOYMENT_COLOR"]
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({"status": "healthy", "color": COLOR, "paperTradingMode": True,
                           "allowRealTrades": False, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-App-Color", COLOR)
        self.send_header("X-Deployment-Color", COLOR)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.request_queue_size = 512
ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"""


def build_images() -> tuple[str, str | None]:
    """(base image, app image or None): build or reuse them with the project's script."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "build-test-images")], capture_output=True, text=True, timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"build-test-images failed:\n{proc.stdout}\n{proc.stderr}")
    found = dict(re.findall(r"^(PAPER_TRADING_\w+_IMAGE)=(\S+)$", proc.stdout, re.M))
    base = found["PAPER_TRADING_BASE_IMAGE"]
    has_app = (ROOT / "validation" / "reference_app.py").is_file()
    return base, (APP_IMAGE if has_app else None)


def test_settings(prefix: str) -> Any:
    """Dev-stack-like settings: plain HTTP, one replica per color."""
    from components.config import Settings

    return Settings.model_validate({
        "environment": "development",
        "paperTradingMode": True,
        "allowRealTrades": False,
        "namePrefix": prefix,
        "server": {"port": APP_PORT, "host": "localhost", "ssl": {"enabled": False}},
        "deployment": {
            "activeColor": "blue",
            "blue": {"image": APP_IMAGE, "replicas": 1},
            "green": {"image": APP_IMAGE, "replicas": 1},
        },
        "proxy": {"publicAddress": "127.0.0.1", "httpPort": 18080, "httpsPort": 18443, "previewPort": 18081},
    })


def _tar(files: dict[str, str], under: str) -> bytes:
    """Files below `under` as a tar relative to it (with directory entries)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        dirs: set[str] = set()
        for path in files:
            rel = os.path.relpath(path, under)
            parent = os.path.dirname(rel)
            while parent and parent not in dirs:
                dirs.add(parent)
                parent = os.path.dirname(parent)
        for directory in sorted(dirs):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
            archive.addfile(info)
        for path, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(os.path.relpath(path, under))
            info.size, info.mode, info.mtime = len(data), 0o444, int(time.time())
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class DockerEnv:
    """Handles on the running stack; `live_url`/`preview_url` are published on 127.0.0.1."""

    client: Any
    prefix: str
    base_image: str
    app_image: str | None
    settings: Any
    network: str = ""
    proxy_name: str = ""
    live_url: str = ""
    preview_url: str = ""
    containers: list[Any] = field(default_factory=list)

    # ------------------------------------------------------------------ setup

    def start(self) -> DockerEnv:
        labels = {TEST_LABEL: self.prefix}
        self.network = f"{self.prefix}-frontend"
        self.client.networks.create(self.network, driver="bridge", labels=labels)
        for color in ("blue", "green"):
            self.start_app(color)
        self.start_proxy()
        self.wait_ready()
        return self

    def start_app(self, color: str) -> Any:
        env = {
            "NODE_ENV": "production", "PAPER_TRADING_MODE": "true", "ALLOW_REAL_TRADES": "false",
            "DEPLOYMENT_COLOR": color, "PORT": str(APP_PORT),
        }
        if self.app_image:
            image = self.app_image
            command = ["python3", "/app/reference_app.py", "--port", str(APP_PORT), "--color", color]
        else:
            image, command = self.base_image, ["python3", "-c", STANDIN_APP, str(APP_PORT)]
        container = self.client.containers.create(
            image, command=command, name=f"{self.prefix}-app-{color}-1", environment=env,
            labels={TEST_LABEL: self.prefix, "paper-trading.role": "app", "paper-trading.color": color},
            user="1000:1000", read_only=True, tmpfs={"/tmp": "rw,size=16m"}, cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"], network=self.network,
            networking_config={
                self.network: self.client.api.create_endpoint_config(aliases=[f"app-{color}"]),
            },
        )
        self.containers.append(container)
        container.start()
        return container

    def start_proxy(self) -> Any:
        from components.nginx.conf import CONF_DIR
        from components.proxy import LISTEN, PATHS, PROXY_USER, proxy_files

        files = proxy_files(self.settings)
        self.proxy_name = f"{self.prefix}-proxy"
        container = self.client.containers.create(
            self.base_image,
            command=["nginx", "-e", "stderr", "-c", PATHS.conf, "-g", "daemon off;"],
            name=self.proxy_name, labels={TEST_LABEL: self.prefix, "paper-trading.role": "proxy"},
            user=PROXY_USER, read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
            tmpfs={"/tmp": "rw,size=16m", PATHS.temp_dir: "rw,size=64m", "/var/run": "rw,size=1m"},
            volumes={f"{self.prefix}-proxy-conf": {"bind": CONF_DIR, "mode": "rw"}},
            network=self.network,
            ports={f"{LISTEN.http}/tcp": ("127.0.0.1", None), f"{LISTEN.preview}/tcp": ("127.0.0.1", None)},
        )
        self.containers.append(container)
        # Like the provider's uploads: files go in before the first start, into the
        # volume (Docker refuses to write anywhere else on a read-only rootfs).
        container.put_archive(CONF_DIR, _tar(files, CONF_DIR))
        container.start()
        container.reload()
        ports = container.attrs["NetworkSettings"]["Ports"]
        self.live_url = f"http://127.0.0.1:{ports[f'{LISTEN.http}/tcp'][0]['HostPort']}"
        self.preview_url = f"http://127.0.0.1:{ports[f'{LISTEN.preview}/tcp'][0]['HostPort']}"
        return container

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Both colors answer through the preview listener (X-Preview-Color), like the gate asks."""
        deadline = time.monotonic() + timeout
        pending = {"blue", "green"}
        last: object = None
        while pending and time.monotonic() < deadline:
            for color in sorted(pending):
                try:
                    r = httpx.get(f"{self.preview_url}/health", headers={"X-Preview-Color": color}, timeout=2)
                    last = (r.status_code, r.headers.get("X-Deployment-Color"))
                    if r.status_code == 200 and r.headers.get("X-Deployment-Color") == color:
                        pending.discard(color)
                except httpx.HTTPError as exc:
                    last = exc
            time.sleep(0.1)
        if pending:
            logs = self.logs()
            raise RuntimeError(f"stack not ready ({sorted(pending)} missing; last {last!r}):\n{logs}")

    # ------------------------------------------------------------------ use

    def live(self, path: str = "/health") -> httpx.Response:
        return httpx.get(f"{self.live_url}{path}", timeout=5)

    def live_colors(self, n: int = 10) -> list[str | None]:
        """`X-Deployment-Color` and the app's own color of n fresh live requests."""
        seen: list[str | None] = []
        for _ in range(n):
            r = self.live()
            seen.append(f"{r.status_code}:{r.headers.get('X-Deployment-Color')}:{r.headers.get('X-Upstream-Color')}")
        return seen

    def logs(self) -> str:
        out = []
        for container in self.containers:
            try:
                out.append(f"--- {container.name}\n{container.logs(tail=30).decode(errors='replace')}")
            except Exception as exc:  # noqa: BLE001 - diagnostics only
                out.append(f"--- {container.name}: {exc}")
        return "\n".join(out)

    # ------------------------------------------------------------------ teardown

    def stop(self) -> None:
        cleanup(self.client, self.prefix)


def cleanup(client: Any, prefix: str | None = None) -> None:
    """Remove every container, volume and network of this test label (one prefix, or all)."""
    import docker.errors

    selector = f"{TEST_LABEL}={prefix}" if prefix else TEST_LABEL
    for container in client.containers.list(all=True, filters={"label": selector}):
        with suppress(docker.errors.APIError):
            container.remove(force=True, v=True)
    for network in client.networks.list(filters={"label": selector}):
        with suppress(docker.errors.APIError):
            network.remove()
    if prefix:
        with suppress(docker.errors.APIError):
            client.volumes.get(f"{prefix}-proxy-conf").remove(force=True)


def stale_cleanup(client: Any, older_than_s: float = 3600) -> None:
    """Leftovers of crashed runs (same label, created long ago)."""
    for container in client.containers.list(all=True, filters={"label": TEST_LABEL}):
        created = container.attrs.get("Created", "")
        age = time.time() - _parse_time(created)
        if age > older_than_s:
            cleanup(client, container.labels.get(TEST_LABEL))


def _parse_time(stamp: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(stamp[:26].rstrip("Z") + "+00:00").timestamp()
    except ValueError:
        return time.time()


@contextmanager
def docker_env(prefix: str | None = None) -> Iterator[DockerEnv]:
    """Start the stack, yield it, always tear it down."""
    import docker

    client = docker.from_env(timeout=60)
    base, app = build_images()
    prefix = prefix or f"ptr{os.getpid() % 10000}{secrets.token_hex(2)}"
    stale_cleanup(client)
    env = DockerEnv(
        client=client, prefix=prefix, base_image=base, app_image=app, settings=test_settings(prefix),
    )
    try:
        env.start()
        yield env
    finally:
        env.stop()
        client.close()
