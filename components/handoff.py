"""Moving background work with the traffic (issue 15): the switch side of the contract.

After traffic has moved, the switch publishes the new live color with a new epoch in
Redis, then confirms within a time limit that an instance of the new color holds the
lease and that no consumer of the old color is left on the broker (RabbitMQ management
API, reached inside the RabbitMQ container: it is never published).

Interface fixed by the lead; implemented by issue 15, part B.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TIMEOUT_S = 15.0


class HandoffError(Exception):
    """The work did not move in time (or could not be published); the message says why."""


@dataclass(frozen=True)
class HandoffTarget:
    """Where the handoff happens, as plain data (dynamic-provider props, CLI options)."""

    redis_container: str
    rabbitmq_container: str
    timeout_s: float = DEFAULT_TIMEOUT_S

    def props(self) -> dict[str, Any]:
        return {"redisContainer": self.redis_container, "rabbitmqContainer": self.rabbitmq_container,
                "timeoutS": self.timeout_s}

    @staticmethod
    def from_props(props: Mapping[str, Any] | None) -> HandoffTarget | None:
        if not props or not props.get("redisContainer") or not props.get("rabbitmqContainer"):
            return None
        return HandoffTarget(str(props["redisContainer"]), str(props["rabbitmqContainer"]),
                             float(props.get("timeoutS") or DEFAULT_TIMEOUT_S))


@dataclass(frozen=True)
class HandoffResult:
    live: str
    epoch: int
    #: From the publish until the new color holds the lease and the old color has no consumer.
    handoff_ms: float
    #: The lease value seen last ("<color>:<epoch>:<instance>").
    holder: str
    #: Consumers per color on the stack's queues, as the broker reports them.
    consumers: dict[str, int] = field(default_factory=dict)


def hand_over(target: HandoffTarget, live: str, previous: str | None, client: Any = None) -> HandoffResult:
    """Publish `live` as the color that does background work and wait until it holds it.

    Raises HandoffError when the publish fails or the work has not moved within
    `target.timeout_s`; the caller switches traffic back and hands the work back.
    """
    raise HandoffError("background-work handoff not implemented yet (issue 15, part B)")
