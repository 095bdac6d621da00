"""Helpers of the Swarm lab's engine tests: client load that counts failures, waiting on a swarm.

`Load` sends requests on fresh connections to every edge node in turn from N clients until
stopped and counts what failed; `until` waits for a condition (an exception counts as not yet:
a manager between leaders does not answer); `steady_leader` waits until every node is ready
through a manager for some seconds in a row (after a partition heals, the returning manager can
unseat the leader for a while: swarmkit has no pre-vote).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx

from tools.swarm_lab import Lab


class Load:
    """Requests on fresh connections to every edge node in turn until stopped; counts failures."""

    def __init__(self, urls: list[str], timeout: float = 5, path: str = "/health", clients: int = 1) -> None:
        self.urls, self.ok, self.failed, self.timeout, self.path = urls, 0, 0, timeout, path
        self.colors: set[str | None] = set()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(clients)]

    def _run(self, first: int) -> None:
        i = first
        while not self._stop.is_set():
            url = self.urls[i % len(self.urls)]
            i += 1
            try:
                response = httpx.get(f"{url}{self.path}", timeout=self.timeout)
                with self._lock:
                    if response.status_code == 200:
                        self.ok += 1
                        self.colors.add(response.headers.get("x-deployment-color"))
                    else:
                        self.failed += 1
                        self.errors.append(f"{url}: {response.status_code}")
            except httpx.HTTPError as exc:
                with self._lock:
                    self.failed += 1
                    self.errors.append(f"{url}: {exc!r}")

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)


def until(what: Callable[[], bool], seconds: float) -> float | None:
    """Seconds until `what()` holds (an exception counts as not yet: a manager between leaders
    does not answer), None if it never did within `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            if what():
                return time.monotonic() - started
        except Exception:  # noqa: BLE001 - not yet
            pass
        time.sleep(0.5)
    return None


def steady_leader(swarm_lab: Lab, seconds: float = 10, within: float = 150) -> bool:
    """Every node ready through a manager, for `seconds` in a row, within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        steady_since = time.monotonic()
        while leader_back(swarm_lab):
            if time.monotonic() - steady_since >= seconds:
                return True
            time.sleep(1)
        time.sleep(1)
    return False


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def no_leader(swarm_lab: Lab) -> bool:
    """n1 reports the swarm has no leader (while its leader steps down, n1's API may not answer)."""
    try:
        error = swarm_lab.node("n1").client(timeout=10).info()["Swarm"].get("Error") or ""
    except Exception:  # noqa: BLE001 - not answering yet
        return False
    return "does not have a leader" in error


def leader_back(swarm_lab: Lab) -> bool:
    try:
        return all(node["state"] == "ready" for node in swarm_lab.status().values())
    except Exception:  # noqa: BLE001 - no leader yet
        return False
