"""Live: a real Prometheus (Debian package) with the generated rules pages on paper mode off.

A stand-in app on loopback serves `/metrics` with `paper_trading_mode 1`; after
Prometheus has scraped it (and the alert is silent) the stand-in flips to 0 and the
test polls `/api/v1/alerts` until PaperTradingModeOff is firing. Bar: within two
evaluation intervals plus one scrape interval. The measured seconds are printed.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from components.monitoring_config import rules
from tests.support import require_tool, stop_process
from tests.test_monitoring_tools import stack_settings

SCRAPE_S = 1.0
EVAL_S = 1.0
POLL_S = 0.05


class StandIn:
    """The app's metrics contract, switchable out of paper mode."""

    def __init__(self) -> None:
        self.paper_mode = 1
        self.blocked = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                body = (
                    "# TYPE paper_trading_mode gauge\n"
                    f"paper_trading_mode {stand_in.paper_mode}\n"
                    "# TYPE paper_trading_real_trades_blocked_total counter\n"
                    f"paper_trading_real_trades_blocked_total {stand_in.blocked}\n"
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _firing(client: httpx.Client, base: str, name: str) -> list[dict[str, Any]]:
    alerts = client.get(f"{base}/api/v1/alerts", timeout=2).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"].get("alertname") == name and a["state"] == "firing"]


def _query(client: httpx.Client, base: str, expr: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = client.get(f"{base}/api/v1/query", params={"query": expr},
                                              timeout=2).json()["data"]["result"]
    return result


@pytest.mark.tools
def test_paper_mode_off_fires_within_two_evaluations(tmp_path: Path) -> None:
    binary = require_tool("prometheus")
    settings = stack_settings("prod")
    (tmp_path / "alerts.rules.yml").write_text(rules.alert_rules(settings))
    (tmp_path / "recording.rules.yml").write_text(rules.recording_rules())
    with StandIn() as app:
        config = {
            "global": {"scrape_interval": f"{SCRAPE_S:g}s", "evaluation_interval": f"{EVAL_S:g}s"},
            "rule_files": ["recording.rules.yml", "alerts.rules.yml"],
            "scrape_configs": [{
                "job_name": "app",
                "static_configs": [{"targets": [f"127.0.0.1:{app.port}"],
                                    "labels": {"color": "blue", "instance": "paper-trading-app-blue-1"}}],
            }],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        log = (tmp_path / "prometheus.log").open("w")
        proc = subprocess.Popen(
            [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            with httpx.Client() as client:
                # Ready, scraped paper mode 1, and the alert silent (it must not fire on a healthy app).
                deadline = time.monotonic() + 60
                while True:
                    assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
                    try:
                        values = _query(client, base, 'paper_trading_mode{job="app"}')
                        if values and values[0]["value"][1] == "1":
                            break
                    except (httpx.HTTPError, ValueError, KeyError):  # not ready yet: plain-text 503
                        pass
                    assert time.monotonic() < deadline, "Prometheus never scraped the stand-in"
                    time.sleep(0.2)
                time.sleep(3 * EVAL_S)
                assert _firing(client, base, "PaperTradingModeOff") == []
                assert _query(client, base, rules.PAPER_MODE_MIN)[0]["value"][1] == "1"

                app.paper_mode = 0
                flipped = time.monotonic()
                bar = 2 * EVAL_S + SCRAPE_S
                while not (firing := _firing(client, base, "PaperTradingModeOff")):
                    assert time.monotonic() - flipped < bar + 10, "PaperTradingModeOff never fired"
                    time.sleep(POLL_S)
                latency = time.monotonic() - flipped
                print(f"\nPaperTradingModeOff firing {latency:.2f}s after the flip "
                      f"(bar {bar:g}s = 2 x evaluation {EVAL_S:g}s + scrape {SCRAPE_S:g}s)")
                assert firing[0]["labels"]["severity"] == "critical"
                assert firing[0]["labels"]["color"] == "blue"
                assert firing[0]["labels"]["instance"] == "paper-trading-app-blue-1"
                assert latency <= bar + POLL_S, f"fired after {latency:.2f}s, bar {bar:g}s"
        finally:
            stop_process(proc)
            log.close()
