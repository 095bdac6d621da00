"""Real servers on loopback for the validation tests: the reference app (and, via
tests/support/fidelity_nginx.py, the product's own nginx config in front of it)."""

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
from typing import Any

from tests.support import stop_process

ROOT = Path(__file__).resolve().parents[3]
# The app must run on a bare python3 (stdlib only for HTTP; Debian's python3-pika/-redis for the
# background work): prefer the system interpreter, run as `python3 -m reference_app` from ROOT.
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
        [PYTHON3, "-m", "reference_app", "--host", "127.0.0.1", "--port", str(port), "--color", color],
        env=full_env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield RefApp(port, proc)
    finally:
        stop_process(proc, timeout=5)


@dataclass
class Front:
    https_url: str
    http_url: str
    ca_file: str


def nginx_front(*args: Any, **kwargs: Any) -> Any:
    """The product's own proxy config in front of the reference app: see tests/support/fidelity_nginx.py.

    (There is no hand-written nginx config here any more; this name stays for bench/validation.py.)
    """
    from tests.support.fidelity_nginx import nginx_front as product_front

    return product_front(*args, **kwargs)
