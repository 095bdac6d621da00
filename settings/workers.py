"""`workers`: background work (queue consumers, schedulers) that only the live color runs."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from .base import Model, PromDuration, duration_ms

#: A queue name the stack declares: RabbitMQ's limit is 255 bytes; the app reads the list from
#: one comma-separated env (WORK_QUEUES) and Prometheus matches it in a regex, so the characters
#: are limited to ones that need no quoting anywhere. `amq.` names are reserved by the broker.
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")

#: The handoff must leave room for a crashed holder's lease to expire and for the new color
#: to take it on its next attempt: at least this many lease TTLs.
HANDOFF_LEASE_TTLS = 2


class WorkersConfig(Model):
    """Background work (queue consumers, schedulers) that only the live color runs.

    The app gets these as WORK_* envs (stack/app.py); the queues are declared by the
    broker's definitions with single active consumer (stack/datastores.py); the switch
    waits up to `handoffTimeoutSeconds` for the new color to hold the lease and the old one to
    have no consumers; `NoActiveWorkers` pages when no color holds the work for `noActiveWorkersFor`.
    """

    #: Off: the apps run no consumers or schedulers (`role: disabled`); the worker alerts are off.
    enabled: bool = True
    #: Queues the live color consumes (durable, `x-single-active-consumer`).
    queues: tuple[str, ...] = ("paper-trading.orders",)
    #: The work lease's TTL in Redis: a crashed or partitioned holder loses the work this long
    #: after its last renewal.
    lease_ttl_ms: int = Field(default=3000, ge=500, le=60000)
    #: Unacknowledged messages per consumer (AMQP basic.qos); 0 (unlimited) is not allowed.
    prefetch: int = Field(default=10, ge=1, le=10000)
    #: Scheduler tick period.
    tick_ms: int = Field(default=1000, ge=100, le=3_600_000)
    #: How long the switch waits for the new color to hold the lease and the old one to have no
    #: consumers before it switches back.
    handoff_timeout_seconds: float = Field(default=15.0, gt=0, le=600)
    #: `NoActiveWorkers` fires when no color holds the work for this long (Prometheus duration).
    no_active_workers_for: PromDuration = "2m"

    @field_validator("queues")
    @classmethod
    def _queue_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must list at least one queue")
        for name in value:
            if not _QUEUE_NAME.match(name):
                raise ValueError(
                    f"{name!r} is not a queue name this stack accepts: 1-200 characters, letters, "
                    "digits and . _ : - only, starting with a letter or digit"
                )
            if name.startswith("amq."):
                raise ValueError(f"{name!r}: names starting with 'amq.' are reserved by RabbitMQ")
        duplicates = sorted({name for name in value if value.count(name) > 1})
        if duplicates:
            raise ValueError(f"lists {', '.join(map(repr, duplicates))} more than once")
        return value

    @model_validator(mode="after")
    def _handoff_outlasts_a_lease(self) -> WorkersConfig:
        needed_ms = HANDOFF_LEASE_TTLS * self.lease_ttl_ms
        if self.handoff_timeout_seconds * 1000 < needed_ms:
            raise ValueError(
                f"handoffTimeoutSeconds: must be at least {needed_ms / 1000:g} "
                f"({HANDOFF_LEASE_TTLS} x workers.leaseTtlMs = {self.lease_ttl_ms} ms): a crashed "
                "holder's lease must be able to expire, and the new color take it, within the handoff"
            )
        if duration_ms(self.no_active_workers_for) <= self.handoff_timeout_seconds * 1000:
            raise ValueError(
                f"noActiveWorkersFor: must be longer than workers.handoffTimeoutSeconds "
                f"({self.handoff_timeout_seconds:g} s): a handoff in progress is not an outage"
            )
        return self
