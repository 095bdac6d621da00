"""The handoff's broker rule and a failed hand-back, on real parts (issue 20, items 4 and 7).

One `docker_env(work=True)` stack for the module (the proxy, blue and green from the reference
app image, Redis and RabbitMQ from the ci images, as the program renders them). Tests run in
file order; each puts the state it needs in place.

- A consumer with a foreign tag (pika, from the test, as the stack's own user) on the work
  queue keeps `hand_over` from succeeding: HandoffError names the queue and the count; once it
  is gone the same handoff passes. (The broker keeps the queue on the active consumer, so the
  rogue is a waiting single-active consumer: it is counted all the same.)
- A hand-back that fails (Redis paused after the forward handoff, while the post-promotion
  checks run): traffic goes back, the RoutingError carries the hand-back's error, the
  `rollback` audit record is `failed` with that same error, and the work is in fact left with
  the failed candidate (what WorkersOnIdleColor pages for).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contract import work as wc
from release import audit, routing
from release.handoff import HandoffError, HandoffTarget, hand_over
from tests.support.work import QUEUE, detailed, wait_for, work_stack

pytestmark = pytest.mark.docker

#: Short: a rogue consumer never goes away by itself, so the failing handoff waits all of it.
ROGUE_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def env() -> Iterator[Any]:
    yield from work_stack()


def short_target(env: Any) -> HandoffTarget:
    target = env.handoff_target()
    return HandoffTarget(target.redis_container, target.rabbitmq_container, ROGUE_TIMEOUT_S, target.queues)


def test_a_consumer_with_a_foreign_tag_blocks_the_handoff(env: Any) -> None:
    first = hand_over(env.handoff_target(), "blue", None, env.client)
    assert first.queues[QUEUE].by_owner == {"blue": 1, "green": 0, "other": 0}
    rogue = env.amqp_connection()
    try:
        channel = rogue.channel()
        channel.basic_consume(QUEUE, lambda *_: None, consumer_tag="reporting-tool-1")
        with pytest.raises(HandoffError) as blocked:
            hand_over(short_target(env), "green", "blue", env.client)
        error = blocked.value
        assert (error.live, error.epoch, error.lease_moved) == ("green", first.epoch + 1, True)
        assert error.holder is not None and error.holder.startswith(f"green:{first.epoch + 1}:")
        assert error.foreign == {QUEUE: 1}
        seen = error.queues[QUEUE]
        assert (seen.exists, seen.total, seen.by_owner) == (True, 2, {"blue": 0, "green": 1, "other": 1})
        assert error.broker_error is None and error.missing_queues == []
    finally:
        rogue.close()
    # The same handoff without the rogue: every consumer on the queue is green's.
    moved = hand_over(short_target(env), "green", "blue", env.client)
    assert moved.queues[QUEUE].total == moved.queues[QUEUE].by_owner["green"] == 1
    assert moved.consumers == {"blue": 0, "green": 1, "other": 0}


def test_a_work_queue_that_does_not_exist_fails_the_handoff(env: Any) -> None:
    """Fail closed: a queue the broker does not have cannot be said to be consumed by the live color."""
    target = short_target(env)
    queues = (QUEUE, "paper-trading.nope")
    wrong = HandoffTarget(target.redis_container, target.rabbitmq_container, 1.0, queues)
    with pytest.raises(HandoffError) as failed:
        hand_over(wrong, "blue", "green", env.client)
    assert failed.value.missing_queues == ["paper-trading.nope"] and failed.value.foreign == {}
    hand_over(target, "blue", "green", env.client)


def test_a_failed_hand_back_fails_the_switch_loudly(env: Any, tmp_path: Path) -> None:
    redis = env.client.containers.get(env.redis_name)
    r = env.redis_client()
    routing.switch(env.proxy_name, "blue", "green", routing.Endpoint(env.live_url), client=env.client,
                   handoff=env.handoff_target())
    assert r.hget(wc.LIVE_KEY, "color") == "blue"
    path = tmp_path / "audit.jsonl"
    auditor = audit.Auditor("handoff-test", audit.FileSink(str(path)), actor="test")

    def checks_fail_and_redis_stops(_endpoint: routing.Endpoint, color: str) -> list[str]:
        # After the forward handoff (green holds the work), before the rollback hands it back.
        assert r.get(wc.LEASE_KEY).startswith("green:")
        redis.pause()
        return [f"forced failure on {color}"]

    try:
        with pytest.raises(routing.RoutingError) as failed:
            routing.switch(env.proxy_name, "green", "blue", routing.Endpoint(env.live_url), client=env.client,
                           handoff=env.handoff_target(), audit=auditor, checker=checks_fail_and_redis_stops)
    finally:
        redis.unpause()
    error = failed.value
    assert error.hand_back_to == "blue"
    assert error.hand_back_error is not None and env.redis_name in error.hand_back_error
    records = [audit.parse(line) for line in path.read_text().splitlines()]
    [rollback] = [rec for rec in records if rec["operation"] == "rollback"]
    assert (rollback["result"], rollback["from"], rollback["to"]) == ("failed", "green", "blue")
    assert rollback["error"] == error.hand_back_error
    [switched] = [rec for rec in records if rec["operation"] == "switch" and rec["result"] != "started"]
    assert switched["result"] == "failed"
    # Traffic is back on blue, the work is not: green, not live, still holds it.
    assert {str(c) for c in env.live_colors(6)} == {"200:blue:blue"}  # status:header:app color
    assert r.hget(wc.LIVE_KEY, "color") == "green"
    wait_for(lambda: detailed(env, "green")["role"] == wc.ROLE_ACTIVE, 10, "green holding the work")
    # What the operator does next (the runbook): hand it to the live color.
    hand_over(env.handoff_target(), "blue", "green", env.client)
    wait_for(lambda: detailed(env, "green")["role"] == wc.ROLE_STANDBY, 3, "green standing by")


def test_a_handoff_and_hand_back_to_a_missing_redis_are_both_reported(env: Any, tmp_path: Path) -> None:
    """The forward handoff fails (no such Redis container), so does the hand-back: both are said."""
    routing.switch(env.proxy_name, "blue", "green", routing.Endpoint(env.live_url), client=env.client,
                   handoff=env.handoff_target())
    missing = f"{env.prefix}-no-such-redis"
    target = HandoffTarget(missing, env.rabbitmq_name, 1.0, env.handoff_target().queues)
    path = tmp_path / "audit.jsonl"
    auditor = audit.Auditor("handoff-test", audit.FileSink(str(path)), actor="test")
    with pytest.raises(routing.RoutingError) as failed:
        routing.switch(env.proxy_name, "green", "blue", routing.Endpoint(env.live_url), client=env.client,
                       handoff=target, audit=auditor)
    error = failed.value
    assert error.hand_back_to == "blue"
    assert error.hand_back_error is not None and missing in error.hand_back_error
    [rollback] = [audit.parse(line) for line in path.read_text().splitlines() if '"rollback"' in line]
    assert (rollback["operation"], rollback["result"], rollback["to"]) == ("rollback", "failed", "blue")
    assert rollback["error"] == error.hand_back_error
    # Nothing was published (no Redis): the work never left blue.
    assert env.redis_client().hget(wc.LIVE_KEY, "color") == "blue"


def test_a_lease_of_the_new_color_from_an_earlier_epoch_does_not_count(env: Any) -> None:
    """A stale holder of the new color (an instance that missed the publish) is not the handoff:
    only the lease taken at the epoch just published counts. Both apps are paused, so nobody
    takes the new epoch's lease; the stale one stays for the whole wait."""
    r = env.redis_client()
    hand_over(env.handoff_target(), "blue", None, env.client)
    apps = [c for c in env.client.containers.list(filters={"label": "paper-trading.role=app"})
            if c.name.startswith(env.prefix)]
    assert len(apps) == 2
    for app in apps:
        app.pause()
    try:
        current = int(r.get(wc.EPOCH_KEY))
        r.set(wc.LEASE_KEY, f"green:{current}:stale-instance", px=60_000)
        with pytest.raises(HandoffError) as stale:
            hand_over(short_target(env), "green", "blue", env.client)
        assert (stale.value.epoch, stale.value.lease_moved) == (current + 1, False)
        assert stale.value.holder == f"green:{current}:stale-instance"
    finally:
        r.delete(wc.LEASE_KEY)
        for app in apps:
            app.unpause()
    hand_over(env.handoff_target(), "blue", None, env.client)
