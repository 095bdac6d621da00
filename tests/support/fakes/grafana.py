"""A tiny fake of the Grafana HTTP API parts the monitoring checks read (auth enforced)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FakeGrafana:
    user: str = "admin"
    password: str = "grafana-test"
    datasources: dict[str, str] = field(default_factory=lambda: {"prometheus": "OK"})
    dashboards: list[str] = field(default_factory=lambda: ["Paper trading overview"])


@contextmanager
def fake_grafana(state: FakeGrafana) -> Iterator[str]:
    expected = "Basic " + base64.b64encode(f"{state.user}:{state.password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            if self.headers.get("Authorization") != expected:
                self._reply(401, {"message": "Unauthorized"})
            elif self.path == "/api/datasources":
                self._reply(
                    200, [{"uid": name, "name": name, "type": "prometheus"} for name in state.datasources]
                )
            elif self.path.startswith("/api/datasources/uid/") and self.path.endswith("/health"):
                uid = self.path.split("/")[4]
                ok = state.datasources.get(uid) == "OK"
                self._reply(200 if ok else 400, {"status": "OK" if ok else "ERROR", "message": "checked"})
            elif self.path.startswith("/api/search"):
                self._reply(200, [{"title": t, "type": "dash-db"} for t in state.dashboards])
            else:
                self._reply(404, {"message": "not found"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
