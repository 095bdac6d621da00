"""`hand_over`'s verdict on what Redis and the broker answered, with the two execs scripted.

The real scripts run against real Redis and RabbitMQ in tests/docker/test_handoff_docker.py; here
their answers are fixed so each rule of the verdict is driven on purpose: the publish must
yield an epoch, the lease must be the new color's, every configured work queue must be in the
broker's answer, and only the live color's consumers count as its.
"""

from __future__ import annotations

from typing import Any

import pytest

from release.handoff import HandoffError, HandoffTarget, QueueConsumers, hand_over

TARGET = HandoffTarget("pt-redis", "pt-rabbitmq", 1.0, ("orders", "fills"))
GOOD_REDIS = (0, "epoch=7\nlease=green:7:inst-1\n")
GOOD_BROKER = (0, "queue=orders exists=1 total=2 blue=0 green=2 other=0\n"
                  "queue=fills exists=1 total=1 blue=0 green=1 other=0\nresult=ok\n")


class _Result:
    def __init__(self, code: int, out: str) -> None:
        self.exit_code, self.output = code, (out.encode(), b"")


class _Client:
    def __init__(self, redis: tuple[int, str], broker: tuple[int, str]) -> None:
        self.answers = {"pt-redis": redis, "pt-rabbitmq": broker}
        self.containers = self
        self.asked: list[str] = []

    def get(self, name: str) -> Any:
        client = self

        class Container:
            def exec_run(self, *_a: Any, **_kw: Any) -> _Result:
                client.asked.append(name)
                return _Result(*client.answers[name])

        return Container()


def test_the_work_moved_when_the_lease_and_every_queue_are_the_new_colors() -> None:
    moved = hand_over(TARGET, "green", "blue", client=_Client(GOOD_REDIS, GOOD_BROKER))
    assert (moved.live, moved.epoch, moved.holder) == ("green", 7, "green:7:inst-1")
    assert moved.consumers == {"blue": 0, "green": 3, "other": 0}
    assert set(moved.queues) == {"orders", "fills"}


def test_a_publish_without_an_epoch_fails_before_the_broker_is_asked() -> None:
    client = _Client((0, "lease=\n"), GOOD_BROKER)
    with pytest.raises(HandoffError, match="publishing green in 'pt-redis' failed") as caught:
        hand_over(TARGET, "green", "blue", client=client)
    assert caught.value.epoch is None and client.asked == ["pt-redis"]


def test_a_lease_still_held_by_the_old_color_fails_the_handoff() -> None:
    with pytest.raises(HandoffError, match=r"lease holder blue:6:inst-0, want green:7:<instance>") as caught:
        hand_over(TARGET, "green", "blue", client=_Client((4, "epoch=7\nlease=blue:6:inst-0\n"), GOOD_BROKER))
    assert (caught.value.epoch, caught.value.holder, caught.value.lease_moved) == (7, "blue:6:inst-0", False)


def test_a_broker_answer_that_leaves_out_a_work_queue_is_no_proof() -> None:
    partial = (0, "queue=orders exists=1 total=2 blue=0 green=2 other=0\nresult=ok\n")
    with pytest.raises(HandoffError, match="broker query in 'pt-rabbitmq' failed") as caught:
        hand_over(TARGET, "green", "blue", client=_Client(GOOD_REDIS, partial))
    assert caught.value.lease_moved is True and caught.value.broker_error


def test_foreign_consumers_fail_the_handoff_by_queue() -> None:
    late = (4, "queue=orders exists=1 total=3 blue=1 green=1 other=1\n"
               "queue=fills exists=0 total=0 blue=0 green=0 other=0\nresult=timeout\n")
    with pytest.raises(HandoffError) as caught:
        hand_over(TARGET, "green", "blue", client=_Client(GOOD_REDIS, late))
    assert caught.value.foreign == {"orders": 2}
    assert caught.value.missing_queues == ["fills"]
    assert "queue 'orders' has 2 consumer(s) not of green" in str(caught.value)


@pytest.mark.parametrize(("live", "foreign"), [("green", 2), ("blue", 3), ("none", 4)])
def test_every_consumer_that_is_not_the_live_colors_is_foreign(live: str, foreign: int) -> None:
    queue = QueueConsumers("orders", True, 4, {"blue": 1, "green": 2, "other": 1})
    assert queue.foreign(live) == foreign


def test_a_work_queue_that_does_not_exist_fails_the_handoff_on_its_own() -> None:
    """No consumer anywhere is foreign, the lease moved: a missing queue alone is still a failure."""
    missing = (4, "queue=orders exists=1 total=1 blue=0 green=1 other=0\n"
                  "queue=fills exists=0 total=0 blue=0 green=0 other=0\nresult=timeout\n")
    with pytest.raises(HandoffError, match="queue 'fills' does not exist") as caught:
        hand_over(TARGET, "green", "blue", client=_Client(GOOD_REDIS, missing))
    assert caught.value.missing_queues == ["fills"] and caught.value.foreign == {}


def test_a_handoff_target_needs_both_containers_and_keeps_its_queues() -> None:
    assert HandoffTarget.from_props({"redisContainer": "pt-redis"}) is None
    assert HandoffTarget.from_props({"rabbitmqContainer": "pt-rabbitmq"}) is None
    assert HandoffTarget.from_props(None) is None
    assert HandoffTarget.from_props(TARGET.props()) == TARGET
