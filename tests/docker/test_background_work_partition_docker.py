"""The commit fence against a frozen (partitioned) old holder, end to end (issue 15, part B3).

`tests/docker/test_background_work_docker.py` proves exactly-once across switches and a kill; there
the broker's own fences (unacked messages belong to one channel, `x-single-active-consumer`)
would keep every id once even without the fence in the contract's `COMMIT` script. This test
makes the one case where only that fence is left: an old holder that was frozen in the middle
of a message, whose message the broker has since given to the new holder, wakes up and
commits with its stale lease token.

On its own `docker_env(work=True)` stack (the rendered Redis, RabbitMQ with its definitions,
blue and green from the reference app image):

1. blue gets a slow simulated order (`WORK_PROCESS_MS`), the work is handed to blue
   (`release.handoff.hand_over`) and a steady stream of uniquely numbered messages is
   published (publisher confirms) from the host for the whole scenario;
2. `docker pause` blue right after one of its commits, i.e. inside its next message's simulated
   order, while it holds unacknowledged messages (the broker says so);
3. hand the work to green: the lease can only move by expiry (frozen blue cannot release it),
   and blue's consumer only goes when the broker misses blue's AMQP heartbeats and closes its
   connection, which requeues what blue held; `hand_over` waits for both (its timeout here
   covers the heartbeat timeout);
4. green commits everything published before the freeze, blue's in-flight message included;
5. `docker unpause` blue: it finishes the message it was in, and its commit must be refused
   (`paper_trading_messages_fenced_total` > 0 on blue), then it stands down;
6. drain and check in Redis: every published id committed exactly once, nothing recorded as a
   duplicate, nothing committed by blue after the freeze, everything after it by green.

The mutation (docs/background-work.md): without the fence line of `COMMIT`, step 5 commits
blue's stale copy as a second commit of an id green already committed: a duplicate.

RabbitMQ's memory (the broker was OOM-killed in this scenario before the absolute watermark)
is sampled all along through the Docker API; the test fails if the kernel killed it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from contract import work as wc
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

#: Blue's simulated order: long against the commit and ack (~1-2 ms) and against the time from
#: seeing a commit to `docker pause` (tens of ms), so the freeze lands inside the next message.
BLUE_PROCESS_MS = 300
#: Faster than blue drains (~3/s): blue always has a full prefetch window unacknowledged.
PUBLISH_PER_S = 40
#: The handoff to green waits for the broker to drop frozen blue: pika's heartbeat is 10 s and the
#: broker closes a connection after missing two of them (measured: ~15-25 s, see the printed line).
FROZEN_HANDOFF_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def env() -> Iterator[Any]:
    yield from work_stack()


# --------------------------------------------------------------------------- observers


def queue_counts(env: Any) -> dict[str, int]:
    [queue] = [q for q in rabbitmqctl(env, "list_queues", "name", "messages", "messages_unacknowledged")
               if q["name"] == QUEUE]
    return {"messages": int(queue["messages"]), "unacked": int(queue["messages_unacknowledged"])}


@dataclass
class MemoryWatch:
    """The broker container's memory (Docker API stats, one shot) every `period` seconds."""

    container: Any
    period: float = 0.5
    samples: list[tuple[float, int]] = field(default_factory=list)
    peak: int = 0
    limit: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        began = time.monotonic()
        while not self.stop.is_set():
            with contextlib.suppress(Exception):  # a sample lost is not a finding
                stats = self.container.stats(stream=False, one_shot=True)["memory_stats"]
                usage = int(stats.get("usage") or 0)
                self.samples.append((round(time.monotonic() - began, 1), usage))
                # cgroup v1 reports the high-water mark itself; v2 only the current usage.
                self.peak = max(self.peak, usage, int(stats.get("max_usage") or 0))
                self.limit = int(stats.get("limit") or 0)
            self.stop.wait(self.period)


# --------------------------------------------------------------------------- the scenario


def test_a_frozen_old_holder_is_fenced_when_it_thaws(env: Any) -> None:
    from release.handoff import HandoffTarget, hand_over

    began = time.monotonic()
    r = env.redis_client()
    broker = env.client.containers.get(env.rabbitmq_name)
    broker_restarts = int(broker.attrs["RestartCount"])
    memory = MemoryWatch(broker)
    watcher = start(memory.run)

    # Blue, as rendered plus a slow simulated order; green as rendered (2 ms).
    env.extra_env["blue"] = {"WORK_PROCESS_MS": str(BLUE_PROCESS_MS)}
    blue_container = env.replace_app("blue")
    wait_for(lambda: httpx.get(f"{env.app_url('blue')}/health/ready", timeout=2).status_code == 200, 30,
             "the slow blue ready")
    wait_for(lambda: all(detailed(env, c)["role"] == wc.ROLE_STANDBY for c in ("blue", "green")), 15,
             "both colors standing by")

    first = hand_over(env.handoff_target(), "blue", None, env.client)
    e1 = first.epoch
    publisher = Publisher(env, f"partition-{env.prefix}", PUBLISH_PER_S)
    publishing = start(publisher.run)
    thawed = False
    try:
        wait_for(lambda: r.hlen(wc.PROCESSED_KEY) >= 10, 30, "blue committing")
        held = queue_counts(env)

        # Freeze blue in the middle of a message: right after one of its commits, blue acks and
        # starts the next message's simulated order (BLUE_PROCESS_MS), so pause it then.
        count = r.hlen(wc.PROCESSED_KEY)
        deadline = time.monotonic() + 10
        while r.hlen(wc.PROCESSED_KEY) == count:
            assert time.monotonic() < deadline, "blue stopped committing"
            time.sleep(0.002)
        blue_container.pause()
        frozen_at = time.monotonic()
        lease_at_freeze = wc.parse_token(r.get(wc.LEASE_KEY))  # blue's until it expires (1.5 s TTL)
        time.sleep(0.2)  # a commit already sent has run; nothing more can come from blue
        committed_before = set(records(r, wc.PROCESSED_KEY))
        published_before = list(publisher.confirmed)
        at_freeze = queue_counts(env)
        assert at_freeze["unacked"] > 0, at_freeze  # blue holds messages the broker has not seen acked
        assert lease_at_freeze is not None and lease_at_freeze[:2] == ("blue", e1), lease_at_freeze

        # Hand the work to green while blue is frozen: lease by expiry, consumer by heartbeat loss.
        target = HandoffTarget(env.redis_name, env.rabbitmq_name, timeout_s=FROZEN_HANDOFF_TIMEOUT_S)
        second = hand_over(target, "green", "blue", env.client)
        e2 = second.epoch
        assert e2 == e1 + 1
        assert wc.parse_token(second.holder)[:2] == ("green", e2)  # type: ignore[index]
        assert second.consumers.get("blue") == 0, second.consumers
        blue_container.reload()
        assert blue_container.attrs["State"]["Paused"] is True  # blue had no part in the handoff

        # Green commits everything published before the freeze, blue's in-flight message included.
        missing_before = set(published_before) - committed_before
        wait_for(lambda: missing_before <= set(records(r, wc.PROCESSED_KEY)), 30,
                 f"green committing the {len(missing_before)} ids blue had not")

        # Thaw blue: it ends the message it was in with a stale token.
        blue_container.unpause()
        thawed = True
        thawed_after_s = time.monotonic() - frozen_at
        wait_for(lambda: (detailed(env, "blue")["role"], detailed(env, "blue")["consumers"])
                 == (wc.ROLE_STANDBY, []), 20, "blue standing down after the thaw")
        time.sleep(0.5)  # let green commit a little more after blue's stand-down
    finally:
        if not thawed:
            with contextlib.suppress(Exception):
                blue_container.unpause()
        publisher.stop.set()
        publishing.join(timeout=30)
    assert publisher.error is None, repr(publisher.error)
    published = publisher.confirmed
    wait_for(lambda: set(published) <= set(records(r, wc.PROCESSED_KEY)), 30, "every published id committed")
    wait_for(lambda: queue_counts(env)["messages"] == 0, 15, "the queue drained (every message acked)")
    memory.stop.set()
    watcher.join(timeout=10)

    # Exactly once: nothing refused as a second commit, every id once (a hash), nothing invented.
    duplicates = r.lrange(wc.DUPLICATES_KEY, 0, -1)
    assert duplicates == [], f"{len(duplicates)} duplicate commits, first {duplicates[:3]}"
    processed = records(r, wc.PROCESSED_KEY)
    assert len(published) == len(set(published))
    assert sorted(set(processed) ^ set(published)) == []
    for color in ("blue", "green"):
        assert app_metric(env, color, "paper_trading_messages_duplicate_total") == 0, color
        assert app_metric(env, color, "paper_trading_scheduler_duplicate_ticks_total") == 0, color

    # The fence did the refusing: blue woke with a stale token and its commit was fenced.
    blue_fenced = app_metric(env, "blue", "paper_trading_messages_fenced_total")
    if blue_fenced == 0:
        logs = blue_container.logs(tail=15).decode(errors="replace")
        metrics = {name: app_metric(env, "blue", f"paper_trading_messages_{name}_total")
                   for name in ("processed", "duplicate", "redelivered", "fenced")}
        raise AssertionError(f"blue committed nothing after the thaw, not even fenced: {metrics}\n{logs}")
    # Blue committed nothing after the freeze; everything after it is green's, at its epoch.
    after = {k: v for k, v in processed.items() if k not in committed_before}
    by_holder = {h: sum(1 for v in after.values() if v == h) for h in sorted(set(after.values()))}
    assert by_holder == {f"green:{e2}": len(after)}, by_holder
    ticks = records(r, wc.TICKS_KEY)
    assert set(ticks.values()) <= {f"blue:{e1}", f"green:{e2}"}

    # The broker survived: not OOM-killed, never restarted.
    broker.reload()
    state = broker.attrs["State"]
    assert (state["Status"], state["OOMKilled"], int(broker.attrs["RestartCount"])) \
        == ("running", False, broker_restarts), state
    mib = 1024 * 1024
    print(f"\npartition: scenario_s={time.monotonic() - began:.1f} published={len(published)} "
          f"held_before_freeze={held} at_freeze={at_freeze} blue_fenced={blue_fenced:g} "
          f"handoff_to_frozen_ms={second.handoff_ms} thawed_after_s={thawed_after_s:.1f} "
          f"after_freeze={by_holder} broker_mem_peak_mib={memory.peak / mib:.0f} "
          f"limit_mib={memory.limit / mib:.0f} samples={len(memory.samples)} "
          f"max_sampled_mib={max((u for _, u in memory.samples), default=0) / mib:.0f}")
