"""The background-work contract's scripts (contract/work.py) on a real redis-server.

One redis-server per module, on a free port in a temporary folder; every test starts from an
empty database.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contract import work as wc
from tests.support import require_tool, stop_process
from tests.support.fakes.validation_servers import free_port, wait_port

redis_lib = pytest.importorskip("redis")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    server = require_tool("redis-server")
    folder: Path = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield port
    finally:
        stop_process(proc, timeout=5)


@pytest.fixture
def r(redis_server: int) -> Any:
    client = redis_lib.Redis(port=redis_server, decode_responses=True)
    client.flushall()
    return client


def publish(r: Any, color: str) -> int:
    return int(r.eval(wc.PUBLISH_LIVE, 2, wc.EPOCH_KEY, wc.LIVE_KEY, color, 123, wc.CHANNEL))


def acquire(r: Any, color: str, epoch: int, token: str, ttl_ms: int = 3000) -> int:
    return int(r.eval(wc.ACQUIRE_LEASE, 2, wc.LIVE_KEY, wc.LEASE_KEY, color, epoch, token, ttl_ms))


def commit(r: Any, token: str, item: str, value: str, redelivered: bool = False,
           record: str = wc.PROCESSED_KEY) -> str:
    return str(r.eval(wc.COMMIT, 3, wc.LEASE_KEY, record, wc.DUPLICATES_KEY, token, item, value,
                      "1" if redelivered else "0"))


def test_publish_increments_the_epoch_writes_live_and_announces(r: Any) -> None:
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(wc.CHANNEL)
    assert [publish(r, "blue"), publish(r, "green"), publish(r, "blue")] == [1, 2, 3]
    assert r.hgetall(wc.LIVE_KEY) == {"color": "blue", "epoch": "3", "changed_at_ms": "123"}
    seen: list[Any] = []
    deadline = time.monotonic() + 2
    while len(seen) < 3 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message:
            seen.append(message["data"])
    assert seen == ["blue:1", "green:2", "blue:3"]


def test_lease_only_for_the_live_color_at_the_live_epoch(r: Any) -> None:
    epoch = publish(r, "green")
    assert acquire(r, "blue", epoch, wc.make_token("blue", epoch, "b1")) == 0  # not live
    assert acquire(r, "green", epoch - 1, wc.make_token("green", epoch - 1, "g1")) == 0  # stale epoch
    token = wc.make_token("green", epoch, "g1")
    assert acquire(r, "green", epoch, token) == 1
    assert acquire(r, "green", epoch, wc.make_token("green", epoch, "g2")) == 0  # held by g1
    assert acquire(r, "green", epoch, token, ttl_ms=5000) == 1  # renewal
    assert 4000 < r.pttl(wc.LEASE_KEY) <= 5000
    # A new epoch (even for the same color) does not renew the old token.
    publish(r, "green")
    assert acquire(r, "green", epoch, token) == 0


def test_release_deletes_only_the_callers_lease(r: Any) -> None:
    epoch = publish(r, "blue")
    token = wc.make_token("blue", epoch, "b1")
    assert acquire(r, "blue", epoch, token) == 1
    assert r.eval(wc.RELEASE_LEASE, 1, wc.LEASE_KEY, wc.make_token("blue", epoch, "b2")) == 0
    assert r.get(wc.LEASE_KEY) == token
    assert r.eval(wc.RELEASE_LEASE, 1, wc.LEASE_KEY, token) == 1
    assert r.get(wc.LEASE_KEY) is None


def test_lease_expires_and_the_next_holder_takes_it(r: Any) -> None:
    epoch = publish(r, "blue")
    assert acquire(r, "blue", epoch, wc.make_token("blue", epoch, "b1"), ttl_ms=100) == 1
    assert acquire(r, "blue", epoch, wc.make_token("blue", epoch, "b2")) == 0
    time.sleep(0.15)
    assert acquire(r, "blue", epoch, wc.make_token("blue", epoch, "b2")) == 1


def test_commit_fences_then_dedupes(r: Any) -> None:
    epoch = publish(r, "blue")
    token = wc.make_token("blue", epoch, "b1")
    value = wc.record_value("blue", epoch)
    assert commit(r, token, "m1", value) == wc.COMMIT_FENCED  # no lease yet: nothing written
    assert r.hlen(wc.PROCESSED_KEY) == 0
    assert acquire(r, "blue", epoch, token) == 1
    assert commit(r, token, "m1", value) == wc.COMMIT_OK
    assert commit(r, token, "m1", value, redelivered=True) == wc.COMMIT_DUPLICATE
    assert r.llen(wc.DUPLICATES_KEY) == 0  # a redelivery is not a duplicate
    assert commit(r, token, "m1", value) == wc.COMMIT_DUPLICATE
    assert r.lrange(wc.DUPLICATES_KEY, 0, -1) == [f"m1|{value}|{value}"]
    # The old holder after a switch: fenced, the new holder commits.
    epoch2 = publish(r, "green")
    assert commit(r, token, "m2", value) == wc.COMMIT_OK  # lease still blue's until released
    r.eval(wc.RELEASE_LEASE, 1, wc.LEASE_KEY, token)
    green = wc.make_token("green", epoch2, "g1")
    assert acquire(r, "green", epoch2, green) == 1
    assert commit(r, token, "m3", value) == wc.COMMIT_FENCED
    assert commit(r, green, "t:1", wc.record_value("green", epoch2), record=wc.TICKS_KEY) == wc.COMMIT_OK
    assert r.hgetall(wc.PROCESSED_KEY) == {"m1": value, "m2": value}
    assert r.hgetall(wc.TICKS_KEY) == {"t:1": "green:2"}


def test_tokens_round_trip_and_bad_ones_are_refused() -> None:
    assert wc.parse_token(wc.make_token("green", 7, "host-1")) == ("green", 7, "host-1")
    for bad in (None, "", "red:1:x", "blue:x:y", "blue:1:", b"green"):
        assert wc.parse_token(bad) is None
    with pytest.raises(ValueError, match="'red'"):
        wc.make_token("red", 1, "x")
    with pytest.raises(ValueError, match="'a:b'"):
        wc.make_token("blue", 1, "a:b")
    assert wc.tick_slot("strategy-tick", 12_345, 1000) == "strategy-tick:12"
