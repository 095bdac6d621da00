"""Shared parts of the background-work Docker tests (issue 15): the stack, observers, a publisher.

Both `test_background_work_docker.py` (exactly once across switches and a kill) and
`test_background_work_partition_docker.py` (the fence against a frozen old holder) run on
`docker_env(work=True)` and read the same sources: each app's own `/health/detailed` and
`/metrics`, the broker's current state through `rabbitmqctl` (not the management API, whose
consumer and queue lists come from the statistics database and lag by seconds), and the
contract's records in Redis.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from contract import work as wc
from tests.support import require_docker, require_tool

QUEUE = wc.DEFAULT_QUEUE


def work_stack() -> Iterator[Any]:
    """`docker_env(work=True)`, for a module-scoped fixture; fails under CI if a part is missing."""
    require_docker()
    require_tool("debootstrap")
    pytest.importorskip("pika")
    pytest.importorskip("redis")
    from tests.support.docker_env import docker_env

    with docker_env(work=True) as stack:
        yield stack


def detailed(env: Any, color: str) -> dict[str, Any]:
    """The app's own view (role, epoch, consumers, schedulers), straight from the replica."""
    r = httpx.get(f"{env.app_url(color)}/health/detailed", timeout=5)
    r.raise_for_status()
    return dict(r.json())


def app_metric(env: Any, color: str, name: str) -> float:
    """The sum of a metric's labelled series on one color's `/metrics`."""
    text = httpx.get(f"{env.app_url(color)}/metrics", timeout=5).text
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(name + "{"))


def rabbitmqctl(env: Any, *args: str) -> Any:
    """`rabbitmqctl -q <args> --formatter json` in the broker: the broker's own, current state.

    Not the management API: its /api/consumers and /api/queues come from the statistics
    database, refreshed every few seconds (measured: [] right after a consumer attached).
    """
    container = env.client.containers.get(env.rabbitmq_name)
    code, out = container.exec_run(["rabbitmqctl", "-q", *args, "--formatter", "json"])
    assert code == 0, out.decode(errors="replace")
    return json.loads(out)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> float:
    """Seconds until `predicate()` is true (HTTP errors count as not yet); AssertionError after `timeout`."""
    start = time.monotonic()
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if predicate():
                return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def records(r: Any, key: str) -> dict[str, str]:
    """A record hash (id or slot -> "<color>:<epoch>"), read in pages (10k+ entries)."""
    return dict(r.hscan_iter(key, count=2000))


def start(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


@dataclass
class Publisher:
    """Publishes JSON orders with unique ids at `per_s`, with publisher confirms (`basic_publish`
    raises unless the broker confirms), until `count` are out (None: until `stop` is set)."""

    env: Any
    run_id: str
    per_s: float
    count: int | None = None
    confirmed: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def run(self) -> None:
        import pika

        try:
            connection = self.env.amqp_connection()
            channel = connection.channel()
            channel.confirm_delivery()
            began = time.monotonic()
            i = 0
            while not self.stop.is_set() and (self.count is None or i < self.count):
                item = f"{self.run_id}-{i:05d}"
                channel.basic_publish("", QUEUE, json.dumps({"id": item, "side": "buy", "qty": 1}).encode(),
                                      pika.BasicProperties(delivery_mode=2), mandatory=True)
                self.confirmed.append(item)
                i += 1
                ahead = i / self.per_s - (time.monotonic() - began)
                if ahead > 0:
                    self.stop.wait(ahead)
            connection.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def wait_published(self, n: int, timeout: float = 60) -> None:
        wait_for(lambda: len(self.confirmed) >= n or self.error is not None, timeout, f"{n} published")
        assert self.error is None, f"publishing failed: {self.error!r}"
