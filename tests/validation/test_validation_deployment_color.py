"""`safety.deployment_color` against a real HTTP server on loopback (issue 20, item 6c).

The server answers detailed health with the expected color and `X-Deployment-Color` exactly
as each case crafts it (one header, two headers, a comma list, a wrong or missing one), so
the header comparison alone decides: the detailed health's own color always matches. Only
that check runs (every other one is skipped by the options); the verdict is its structured
result (name, status), not a rendered table.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

import pytest

from tests.support import serve_in_thread
from validation.models import CheckResult
from validation.options import ValidationOptions
from validation.runner import applicable, run_checks

CHECK = "safety.deployment_color"
DETAILED = "/health/detailed"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    #: The `X-Deployment-Color` header lines of every response (one entry per line).
    color_headers: list[str] = []
    health_color = "green"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = json.dumps({"status": "healthy", "color": self.server.health_color}).encode()
        self.send_response(200 if self.path == DETAILED else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for value in self.server.color_headers:
            self.send_header("X-Deployment-Color", value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        return None


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    yield from serve_in_thread(_Server(("127.0.0.1", 0), _Handler))


def _result(server: _Server, headers: list[str],
            color: Literal["blue", "green"] | None = "green") -> CheckResult:
    server.color_headers = headers
    base = f"http://127.0.0.1:{server.server_address[1]}"
    others = {c.name for c, _ in applicable(ValidationOptions(base_url=base))} - {CHECK}
    options = ValidationOptions(base_url=base, color=color, skip=frozenset(others),
                                check_timeout=5, timeout=10, retries=0)
    results, _, _ = asyncio.run(run_checks(options))
    ran = [r for r in results if r.status != "skipped"]
    assert [r.name for r in ran] == [CHECK]
    return ran[0]


def test_one_matching_header_passes(server: _Server) -> None:
    """The server is honest: the expected color, once, passes (with --color and without)."""
    assert _result(server, ["green"]).status == "passed"
    assert _result(server, ["green"], color=None).status == "passed"


@pytest.mark.parametrize("headers", [
    ["blue"],
    ["Green"],
    [],
    [""],
    ["green", "blue"],
    ["blue", "green"],
    ["blue, green"],
    ["green, blue"],
    ["green", "green"],
    ["green, green"],
    ["green,"],
], ids=["other-color", "wrong-case", "missing", "empty", "two-headers", "two-headers-reversed",
        "comma-list", "comma-list-reversed", "two-equal-headers", "equal-comma-list", "trailing-comma"])
def test_a_header_that_is_not_exactly_the_expected_color_fails(server: _Server, headers: list[str]) -> None:
    result = _result(server, headers)
    assert (result.name, result.status, result.blocking) == (CHECK, "failed", True), result.message


@pytest.mark.parametrize("headers", [["blue"], ["green", "blue"], ["green", "green"]],
                         ids=["other-color", "two-headers", "two-equal-headers"])
def test_without_color_the_header_must_match_detailed_health(server: _Server, headers: list[str]) -> None:
    """Without --color the expected color is detailed health's: a disagreeing header still fails."""
    result = _result(server, headers, color=None)
    assert (result.name, result.status) == (CHECK, "failed"), result.message
