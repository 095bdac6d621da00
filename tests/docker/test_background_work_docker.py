"""Background work moves with the blue/green switch, exactly once (issue 15, item 7), on real parts.

The stack is `tests/support/docker_env.py`'s `docker_env(work=True)`: the proxy, blue and green (the
reference app image), Redis and RabbitMQ, all started as the program renders them (RabbitMQ's
queues come from the rendered definitions: durable, `x-single-active-consumer`). The switches
are the real `release.routing.switch(..., handoff=env.handoff_target())`: traffic moves,
then `release.handoff.hand_over` publishes the new epoch in Redis and waits until the new
color holds the lease and the old one has no consumer on the broker.

The scenario (one test, in this order), with HTTP load on the public listener all along and
10,000 uniquely numbered messages published (publisher confirms) from the host across it:

1. promote blue (work to blue, epoch e1); the candidate green holds nothing;
2. switch to green (e2); blue has 0 consumers on the broker when the switch returns;
3. `docker kill` green, the live and active color, then start it again (as its restart policy
   would): the lease expires, the broker requeues what green had unacked, new green takes over;
4. switch back to blue (e3); green has 0 consumers on the broker when the switch returns;
5. drain, then check in Redis (the contract's records, which survive app restarts): every
   published id processed exactly once, none missing, no duplicate recorded; every record
   made by the holder of its epoch (green only at e2: nothing before its promotion); every
   scheduler slot once, by the holder of its epoch; HTTP failures only while the live color
   was killed.

The mutation test then gives the candidate the reference app's `ignore_lease` fault: it
consumes and schedules before promotion and the duplicate count goes above 0.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from contract import work as wc
from release import routing
from tests.support.work import (
    QUEUE,
    Publisher,
    app_metric,
    detailed,
    rabbitmqctl,
    records,
    start,
    wait_for,
    work_stack,
)

pytestmark = pytest.mark.docker

MESSAGES = 10_000
#: Publishing pace: about as fast as one consumer drains (~2 ms simulated work + a Redis commit per
#: message), so a full prefetch window exists at every switch and at the kill.
PUBLISH_PER_S = 400
DRAIN_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def env() -> Iterator[Any]:
    yield from work_stack()


# --------------------------------------------------------------------------- observers


def broker_consumers(env: Any) -> dict[str, int]:
    """Consumers per color on the broker (consumer tags start with the app's connection name)."""
    counts = {"blue": 0, "green": 0, "other": 0}
    for item in rabbitmqctl(env, "list_consumers", "queue_name", "consumer_tag", "active"):
        tag = str(item.get("consumer_tag") or "")
        color = next((c for c in ("blue", "green") if tag.startswith(f"paper-trading-{c}-")), "other")
        counts[color] += 1
    return counts


def queue_depth(env: Any) -> int:
    """Messages (ready + unacknowledged) in the work queue."""
    [queue] = [q for q in rabbitmqctl(env, "list_queues", "name", "messages") if q["name"] == QUEUE]
    return int(queue["messages"])


@dataclass
class Load:
    """GET /health on the public listener in a loop; every answer with its start and end time.

    A new connection per request, as bench/cutover.py does by default: the switch ends with a
    graceful nginx reload, and a keep-alive connection the old worker closes while a request is
    being sent on it fails on the client side (measured: one RemoteProtocolError at the second
    switch), which clients handle by resending idempotent requests, not the proxy.
    """

    url: str
    results: list[tuple[float, float, bool, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not self.stop.is_set():
                began = time.monotonic()
                try:
                    r = client.get(f"{self.url}/health")
                    self.results.append((began, time.monotonic(), r.status_code == 200, str(r.status_code)))
                except httpx.HTTPError as exc:
                    self.results.append((began, time.monotonic(), False, type(exc).__name__))
                time.sleep(0.01)


def switch(env: Any, live: str, preview: str) -> Any:
    return routing.switch(env.proxy_name, live, preview, routing.Endpoint(env.live_url),  # type: ignore[arg-type]
                          client=env.client, handoff=env.handoff_target())


# --------------------------------------------------------------------------- the scenario


def test_work_moves_with_the_switch_exactly_once(env: Any) -> None:
    scenario_began = time.monotonic()
    r = env.redis_client()
    target = env.handoff_target()
    timeout_ms = target.timeout_s * 1000
    # Nothing is live yet: both colors stand by, nobody consumes, nobody holds the lease.
    wait_for(lambda: all(detailed(env, c)["role"] == wc.ROLE_STANDBY for c in ("blue", "green")), 15,
             "both colors standing by")
    assert r.get(wc.LEASE_KEY) is None
    assert broker_consumers(env) == {"blue": 0, "green": 0, "other": 0}

    s1 = switch(env, "blue", "green")
    assert s1.epoch is not None and s1.handoff_ms is not None and s1.handoff_ms <= timeout_ms
    e1 = s1.epoch
    assert wc.parse_token(r.get(wc.LEASE_KEY))[:2] == ("blue", e1)  # type: ignore[index]

    load = Load(env.live_url)
    publisher = Publisher(env, f"order-{env.prefix}", PUBLISH_PER_S, count=MESSAGES)
    threads = [start(load.run), start(publisher.run)]
    try:
        publisher.wait_published(MESSAGES // 4)
        # The candidate, validated through the preview listener, does no background work.
        green = detailed(env, "green")
        assert (green["role"], green["consumers"], green["schedulers"]) == (wc.ROLE_STANDBY, [], [])
        assert broker_consumers(env)["green"] == 0

        s2 = switch(env, "green", "blue")
        consumers_after_s2 = broker_consumers(env)
        e2 = s2.epoch
        assert e2 == e1 + 1 and s2.handoff_ms is not None and s2.handoff_ms <= timeout_ms
        assert consumers_after_s2["blue"] == 0, consumers_after_s2
        assert detailed(env, "blue")["consumers"] == []

        # Crash the live, active color; bring it back as its restart policy would.
        publisher.wait_published(MESSAGES // 2)
        from stack.app import container_name

        green_container = env.client.containers.get(container_name(env.prefix, "green", 1))
        kill_began = time.monotonic()
        green_container.kill()
        time.sleep(0.5)
        green_container.start()
        wait_for(lambda: httpx.get(f"{env.app_url('green')}/health/ready", timeout=2).status_code == 200, 30,
                 "green ready after the kill")
        wait_for(lambda: httpx.get(f"{env.live_url}/health", timeout=2).status_code == 200, 30,
                 "the live listener answering after the kill")
        kill_ended = time.monotonic()
        lease_back_s = wait_for(lambda: detailed(env, "green")["consumers"] == [QUEUE], 15,
                                "restarted green consuming again")

        # Switch back. (Freezing green with `docker pause` across this switch, to prove the fence
        # against a partitioned old holder, made the broker's cgroup OOM-kill RabbitMQ in most
        # runs: left out until that is understood; see docs/background-work.md.)
        publisher.wait_published(3 * MESSAGES // 4)
        s3 = switch(env, "blue", "green")
        consumers_after_s3 = broker_consumers(env)
        e3 = s3.epoch
        assert e3 == e2 + 1 and s3.handoff_ms is not None and s3.handoff_ms <= timeout_ms
        assert consumers_after_s3["green"] == 0, consumers_after_s3

        publisher.wait_published(MESSAGES, timeout=60)
        wait_for(lambda: r.hlen(wc.PROCESSED_KEY) >= MESSAGES, DRAIN_TIMEOUT_S, f"{MESSAGES} committed")
        wait_for(lambda: queue_depth(env) == 0, 10, "the queue drained (every message acked)")
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert publisher.error is None, repr(publisher.error)

    # Exactly once: every published id, once; nothing else; no refused second commit recorded.
    processed = records(r, wc.PROCESSED_KEY)
    published = publisher.confirmed
    assert len(published) == len(set(published)) == MESSAGES
    assert sorted(set(published) - set(processed)) == []  # none missing
    assert sorted(set(processed) - set(published)) == []  # nothing invented
    assert r.lrange(wc.DUPLICATES_KEY, 0, -1) == []
    assert app_metric(env, "blue", "paper_trading_messages_duplicate_total") == 0
    assert app_metric(env, "green", "paper_trading_messages_duplicate_total") == 0

    # Every record by the holder of its epoch: green only at e2, so nothing before its promotion.
    holders = {f"blue:{e1}", f"green:{e2}", f"blue:{e3}"}
    by_holder = {h: sum(1 for v in processed.values() if v == h) for h in sorted(set(processed.values()))}
    assert set(by_holder) <= holders, by_holder

    # Scheduler slots: each once (a hash), each by the holder of its epoch, no duplicate recorded.
    ticks = records(r, wc.TICKS_KEY)
    tick_holders = {h: sum(1 for v in ticks.values() if v == h) for h in sorted(set(ticks.values()))}
    assert set(tick_holders) <= holders, tick_holders
    assert {h.split(":")[0] for h in tick_holders} == {"blue", "green"}
    assert app_metric(env, "blue", "paper_trading_scheduler_duplicate_ticks_total") == 0
    assert app_metric(env, "green", "paper_trading_scheduler_duplicate_ticks_total") == 0

    # HTTP: no failed request except those in flight while the live color was killed and restarting.
    failures = [(began, ended, what) for began, ended, ok, what in load.results if not ok]
    outside = [(round(began - kill_began, 2), what) for began, ended, what in failures
               if ended < kill_began or began > kill_ended]
    assert len(load.results) > 500
    assert outside == []
    print(f"\nscenario_s={time.monotonic() - scenario_began:.1f} messages={MESSAGES} by_holder={by_holder} "
          f"ticks={tick_holders} "
          f"requests={len(load.results)} failed={len(failures)} (all within the kill window of "
          f"{kill_ended - kill_began:.1f}s) green_lease_back_s={lease_back_s:.1f} "
          f"green_fenced={app_metric(env, 'green', 'paper_trading_messages_fenced_total'):g} "
          f"handoff_ms={s1.handoff_ms},{s2.handoff_ms},{s3.handoff_ms} "
          f"switch_ms={s1.switch_ms:.0f},{s2.switch_ms:.0f},{s3.switch_ms:.0f}")


def test_without_the_lease_check_the_candidate_works_and_duplicates_appear(env: Any) -> None:
    """The mutation: the candidate (green) ignores the lease (the reference app's `ignore_lease`)."""
    r = env.redis_client()
    if detailed(env, "blue")["liveColor"] != "blue":
        switch(env, "blue", "green")
    r.delete(wc.PROCESSED_KEY, wc.TICKS_KEY, wc.DUPLICATES_KEY)
    env.replace_app("green", faults="ignore_lease")
    try:
        try:
            wait_for(lambda: r.llen(wc.DUPLICATES_KEY) > 0, 20, "a duplicate recorded")
            wait_for(lambda: detailed(env, "green")["consumers"] == [QUEUE], 20, "the candidate consuming")
        except AssertionError as exc:
            logs = env.client.containers.get(f"{env.prefix}-app-green-1").logs(tail=20).decode()
            raise AssertionError(f"{exc}; green: {detailed(env, 'green')}\n{logs}") from None
        green = detailed(env, "green")
        # Before any promotion of green: it consumes and schedules anyway, and collides with blue.
        assert green["liveColor"] == "blue"
        assert green["consumers"] == [QUEUE] and green["schedulers"]
        assert broker_consumers(env)["green"] == 1
        duplicates = r.lrange(wc.DUPLICATES_KEY, 0, -1)
        assert len(duplicates) > 0
        assert app_metric(env, "green", "paper_trading_scheduler_duplicate_ticks_total") \
            + app_metric(env, "blue", "paper_trading_scheduler_duplicate_ticks_total") > 0
        print(f"\nignore_lease: duplicates={len(duplicates)} first={duplicates[0]!r}")
    finally:
        env.replace_app("green", faults="")
