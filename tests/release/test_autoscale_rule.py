"""The Swarm auto-scaler's decision rule (release/swarm/autoscale.py `decide`) and its signal reader.

The rule is a pure function: each case is (signal, replicas, seconds since the last change) →
(action, target, bound). The reader runs against real HTTP servers on loopback: one that is not
there, and one that answers what a broken Prometheus might; every one is an error, never a value.
The whole loop (Prometheus, Swarm, audit, Alertmanager) runs on the lab:
tests/engine/test_swarm_target.py.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from release.swarm.autoscale import AutoscaleError, Signal, decide, docker_time, read_signal
from settings import AutoscaleConfig

RULE = AutoscaleConfig.model_validate({
    "enabled": True, "alertmanagerUrl": "http://am:9093", "minReplicas": 2, "maxReplicas": 4,
    "scaleOutAbove": 3, "scaleInBelow": 1, "cooldownSeconds": 10})


@pytest.mark.parametrize(("load", "scraped", "current", "since", "action", "target", "bound"), [
    (5.0, 2, 2, None, "out", 3, None),          # above: one more
    (5.0, 3, 3, 60.0, "out", 4, "max"),         # the step that reaches maxReplicas is alerted
    (5.0, 4, 4, 60.0, "hold", 4, "max"),        # wanted past maxReplicas: held there, alerted
    (3.0, 2, 2, 60.0, "hold", 2, None),         # at the threshold, not above it: hold
    (2.0, 3, 3, 60.0, "hold", 3, None),         # inside the band (the hysteresis): hold
    (0.5, 4, 4, 60.0, "in", 3, None),           # below: one fewer
    (0.5, 3, 3, 60.0, "in", 2, "min"),          # the step that reaches minReplicas is alerted
    (0.0, 2, 2, 60.0, "hold", 2, None),         # idle at minReplicas: nothing to do, nothing to alert
    (5.0, 2, 2, 4.0, "hold", 2, None),          # cooling down: no second change within 10 s
    (0.0, 3, 3, 9.9, "hold", 3, None),          # cooling down applies to scaling in too
    (5.0, 2, 3, 60.0, "hold", 3, None),         # the signal covers 2 of 3 tasks: wait
    (0.0, 6, 6, 1.0, "in", 4, "max"),           # above maxReplicas (config changed): back to it at once
    (9.0, 1, 1, 1.0, "out", 2, "min"),          # below minReplicas: up to it at once
])
def test_the_rule(load: float, scraped: int, current: int, since: float | None, action: str, target: int,
                  bound: str | None) -> None:
    decision = decide(Signal(load, scraped), current, RULE, since)
    assert (decision.action, decision.target, decision.bound) == (action, target, bound), decision.why


def test_one_step_at_a_time_whatever_the_load() -> None:
    assert decide(Signal(1000.0, 2), 2, RULE, None).target == 3
    assert decide(Signal(0.0, 4), 4, RULE, None).target == 3


def test_engine_timestamps_with_nanoseconds() -> None:
    stamp = docker_time("2026-12-07T21:13:06.123456789Z")
    assert (stamp.second, stamp.microsecond, stamp.tzinfo) == (6, 123456, UTC)
    assert docker_time("2026-12-07T21:13:06Z").microsecond == 0


class _Prometheus(BaseHTTPRequestHandler):
    """Answers every query with the class's `reply` (status, body)."""

    reply: tuple[int, bytes] = (200, b"")

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        status, body = self.reply
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture
def prometheus() -> Iterator[type[_Prometheus]]:
    handler = type("Reply", (_Prometheus,), {})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        server.shutdown()


def _vector(*values: str) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1.0, v]} for v in values]}}).encode()


def test_a_value_is_read(prometheus: type[_Prometheus]) -> None:
    prometheus.reply = (200, _vector("2.5"))
    assert read_signal(prometheus.url, "green") == Signal(2.5, 2)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("case", "status", "body", "says"), [
    ("server error", 503, b"down", "did not answer"),
    ("not json", 200, b"<html>", "did not answer"),
    ("no series (no task scraped)", 200, _vector(), "no single value"),
    ("two series", 200, _vector("1", "2"), "no single value"),
    ("failed query", 200, json.dumps({"status": "error", "error": "bad"}).encode(), "no single value"),
    ("NaN (no task answers)", 200, _vector("NaN"), "returned nan"),
    ("negative", 200, _vector("-1"), "returned -1.0"),
    ("not a number", 200, _vector("many"), "malformed sample"),
])
def test_an_unreadable_signal_is_an_error(prometheus: type[_Prometheus], case: str, status: int, body: bytes,
                                          says: str) -> None:
    prometheus.reply = (status, body)
    with pytest.raises(AutoscaleError) as caught:
        read_signal(prometheus.url, "green")  # type: ignore[attr-defined]
    assert str(caught.value).startswith("signal: ") and says in str(caught.value), case


def test_a_prometheus_that_is_not_there_is_an_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(AutoscaleError, match="did not answer"):
        read_signal(f"http://127.0.0.1:{port}", "green")
