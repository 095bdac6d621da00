"""Real servers on loopback for the validation tests: the reference app and an nginx TLS front."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import stop_process

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_APP = ROOT / "validation" / "reference_app.py"
# The app must run on a bare python3 (stdlib only): prefer the system interpreter.
PYTHON3 = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3") or "python3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class RefApp:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_faults(self, *faults: str) -> list[str]:
        request = urllib.request.Request(
            f"{self.url}/admin/faults",
            data=json.dumps({"faults": list(faults)}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback only
            return list(json.loads(response.read())["faults"])


@contextmanager
def reference_app(
    faults: str = "", color: str = "blue", env: dict[str, str] | None = None, port: int | None = None
) -> Iterator[RefApp]:
    port = port or free_port()
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "FAULTS": faults, **(env or {})}
    proc = subprocess.Popen(
        [PYTHON3, str(REFERENCE_APP), "--host", "127.0.0.1", "--port", str(port), "--color", color],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield RefApp(port, proc)
    finally:
        stop_process(proc, timeout=5)


HEADERS = """
    add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;
    add_header X-Content-Type-Options nosniff always;
    add_header X-Frame-Options DENY always;
    add_header Referrer-Policy no-referrer always;
    add_header Content-Security-Policy "default-src 'self'; frame-ancestors 'none'" always;
    add_header Permissions-Policy "geolocation=(), camera=()" always;
"""

NGINX_CONF = """
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server_tokens off;
  limit_req_zone $binary_remote_addr zone=auth:1m rate=1r/s;
  limit_req_status 429;
  upstream app {{ server 127.0.0.1:{upstream}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{https} ssl;
    ssl_certificate {d}/cert.pem;
    ssl_certificate_key {d}/key.pem;
    ssl_protocols {protocols};
    ssl_ciphers {ciphers};
    ssl_session_tickets off;
    {headers}
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    location /api/auth/ {{ {limit} proxy_pass http://app; }}
    location / {{ proxy_pass http://app; }}
  }}
  server {{
    listen 127.0.0.1:{http};
    location / {{ return 301 https://$host:{https}$request_uri; }}
  }}
}}
"""


@dataclass
class Front:
    https_url: str
    http_url: str
    ca_file: str


@contextmanager
def nginx_front(
    workdir: Path,
    upstream: int,
    cert_pem: bytes,
    key_pem: bytes,
    ca_pem: bytes,
    *,
    headers: bool = True,
    rate_limit: bool = True,
    legacy_tls: bool = False,
) -> Iterator[Front]:
    """Real nginx terminating TLS with a test CA's certificate in front of the reference app."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "cert.pem").write_bytes(cert_pem)
    (workdir / "key.pem").write_bytes(key_pem)
    (workdir / "ca.pem").write_bytes(ca_pem)
    https, http = free_port(), free_port()
    conf = NGINX_CONF.format(
        d=workdir,
        upstream=upstream,
        https=https,
        http=http,
        headers=HEADERS if headers else "",
        limit="limit_req zone=auth burst=5 nodelay;" if rate_limit else "",
        # A misconfigured front that still speaks TLS 1.0/1.1 (OpenSSL 3 needs SECLEVEL=0 for them).
        protocols="TLSv1 TLSv1.1 TLSv1.2 TLSv1.3" if legacy_tls else "TLSv1.2 TLSv1.3",
        ciphers="DEFAULT:@SECLEVEL=0" if legacy_tls else "HIGH:!aNULL:!MD5",
    )
    (workdir / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(
        [
            nginx,
            "-p",
            str(workdir),
            "-c",
            str(workdir / "nginx.conf"),
            "-e",
            str(workdir / "error.log"),
            "-g",
            "daemon off;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        try:
            wait_port(https)
            wait_port(http)
        except TimeoutError:
            proc.kill()
            _, err = proc.communicate(timeout=5)
            raise RuntimeError(f"nginx did not start: {err.decode()}") from None
        yield Front(f"https://127.0.0.1:{https}", f"http://127.0.0.1:{http}", str(workdir / "ca.pem"))
    finally:
        stop_process(proc, timeout=5)
