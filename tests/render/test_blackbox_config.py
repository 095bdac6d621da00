"""The rendered blackbox.yml under the real blackbox_exporter (issue 13, item 6).

- `blackbox_exporter --config.check` on the rendered file of every stack: exit 0 and not a
  single warning or error in its (logfmt) log, so a deprecated key such as
  `no_follow_redirects` (which 0.23 accepts with a `level=warn` line) fails the test;
- the real exporter serving the rendered file does not follow a redirect: `http_ready`
  against a listener that answers 301 to a healthy page fails the probe.

Needs Debian's `prometheus-blackbox-exporter` (0.23) on the host (.ci/install-system-packages).
"""

from __future__ import annotations

import http.server
import re
import shlex
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from render.monitoring import blackbox
from tests.support import require_tool, stop_process
from tests.support.monitoring import stack_settings

STACKS = ["prod", "dev", "ci"]


def _logfmt(line: str) -> dict[str, str]:
    """One logfmt line (`key=value key="quoted value"`) as a dict."""
    return {k: v for k, v in ((k, shlex.split(v)[0] if v.startswith('"') else v)
                              for k, v in re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line))}


def _write(stack: str, tmp_path: Path) -> Path:
    path = tmp_path / f"blackbox-{stack}.yml"
    path.write_text(blackbox.blackbox_config(stack_settings(stack)))
    return path


def _check(path: Path) -> tuple[int, list[dict[str, str]]]:
    binary = require_tool("prometheus-blackbox-exporter")
    proc = subprocess.run([binary, "--config.check", f"--config.file={path}"],
                          capture_output=True, text=True, timeout=30)
    lines = [_logfmt(line) for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    return proc.returncode, lines


@pytest.mark.parametrize("stack", STACKS)
def test_config_check_passes_without_warnings(stack: str, tmp_path: Path) -> None:
    rc, lines = _check(_write(stack, tmp_path))
    noisy = [(line.get("level"), line.get("module"), line.get("msg") or line.get("err")) for line in lines
             if line.get("level") in ("warn", "error")]
    assert rc == 0 and not noisy, f"blackbox_exporter --config.check: rc={rc}, {noisy}"
    assert any(line.get("msg") == "Config file is ok exiting..." for line in lines)


def test_config_check_reports_the_deprecated_key(tmp_path: Path) -> None:
    """The check above can fail: the deprecated spelling yields one warning per http module."""
    path = _write("prod", tmp_path)
    path.write_text(path.read_text().replace("follow_redirects: false", "no_follow_redirects: true"))
    rc, lines = _check(path)
    warned = sorted(line["module"] for line in lines if line.get("level") == "warn")
    assert rc == 0 and warned == ["http_ready", "live_is_blue", "live_is_green"]


def test_every_http_module_refuses_redirects() -> None:
    modules = yaml.safe_load(blackbox.blackbox_config(stack_settings("prod")))["modules"]
    http = {name: m["http"] for name, m in modules.items() if m["prober"] == "http"}
    assert set(http) == {"http_ready", "live_is_blue", "live_is_green"}
    assert {name: m.get("follow_redirects") for name, m in http.items()} == dict.fromkeys(http, False)
    assert not [name for name, m in http.items() if "no_follow_redirects" in m]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Redirecting(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/health/ready":
            self.send_response(301)
            self.send_header("Location", "/elsewhere")
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def redirecting() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirecting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _probe(port: int, module: str, target: str) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/probe?module={module}&target={target}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(probe_[a-z_]+) (\S+)$", body, re.M)}


def test_real_exporter_does_not_follow_a_redirect(tmp_path: Path, redirecting: int) -> None:
    binary = require_tool("prometheus-blackbox-exporter")
    port = _free_port()
    proc = subprocess.Popen([binary, f"--config.file={_write('prod', tmp_path)}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/healthy", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "blackbox_exporter did not start"
                time.sleep(0.2)
        target = f"http://127.0.0.1:{redirecting}"
        followed = _probe(port, "http_ready", f"{target}/health/ready")
        # Followed, the probe would end on /elsewhere with 200 and succeed.
        assert (followed["probe_success"], followed["probe_http_status_code"]) == (0, 301)
        direct = _probe(port, "http_ready", f"{target}/elsewhere")
        assert (direct["probe_success"], direct["probe_http_status_code"]) == (1, 200)
    finally:
        stop_process(proc)
