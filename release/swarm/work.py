"""Moving background work with the traffic on Swarm: the single host's handoff on the data node.

The contract and its check are release/handoff.py's: publish the live color with a new epoch in
Redis, then wait until a task of that color holds the lease and every consumer on the work queues
is its. Here the Redis and RabbitMQ tasks run on the data node, so their containers are found
there, through that node's own engine, at the moment of the switch (a task replaced since `up`
has a new container name), and the two execs go through the same engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from contract import work as wc
from release.handoff import DEFAULT_TIMEOUT_S, HandoffError, HandoffResult, HandoffTarget, hand_over
from release.routing.base import RoutingError
from release.swarm.nodes import Node, client_for, task_container


@dataclass(frozen=True)
class SwarmHandoff:
    """Where the work's source of truth runs: the data node and its Redis and RabbitMQ services."""

    data_node: Node
    redis_service: str
    rabbitmq_service: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    queues: tuple[str, ...] = ()

    @staticmethod
    def of(props: Mapping[str, Any] | None) -> SwarmHandoff | None:
        """From the switch's `handoff` input (stack/swarm/data.py, `handoff_props`); None: no work."""
        if not props:
            return None
        return SwarmHandoff(Node.of(props["dataNode"]), str(props["redisService"]),
                            str(props["rabbitmqService"]), float(props.get("timeoutS") or DEFAULT_TIMEOUT_S),
                            tuple(str(q) for q in props.get("queues") or ()))

    def move(self, live: str, previous: str | None) -> HandoffResult:
        """Publish `live` (a color, or "none") and wait until the work is its; HandoffError if not."""
        try:
            client = client_for(self.data_node.endpoint)
        except Exception as exc:  # noqa: BLE001 - any failure to reach the node is a failed handoff
            raise HandoffError(f"data node {self.data_node.name}: {exc}", live=live) from None
        try:
            try:
                redis = task_container(client, self.data_node, self.redis_service).name
                rabbitmq = task_container(client, self.data_node, self.rabbitmq_service).name
            except RoutingError as exc:
                raise HandoffError(str(exc), live=live) from None
            queues = self.queues or (wc.DEFAULT_QUEUE,)
            target = HandoffTarget(redis, rabbitmq, self.timeout_s, queues)
            return hand_over(target, live, previous, client=client)
        finally:
            client.close()
