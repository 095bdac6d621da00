"""Moving background work with the traffic: the switch side of the contract.

After traffic has moved, the switch publishes the new live color with a new epoch in
Redis, then confirms within a time limit that an instance of the new color holds the
lease and that every consumer on the work queues is the new color's, as the broker itself
reports it (inside the RabbitMQ container: nothing of it is published).

Two `docker exec` round trips, one after the other:
1. in the Redis container (password from its own config file, as its healthcheck reads it;
   given to redis-cli through REDISCLI_AUTH, never on a command line): the contract's
   PUBLISH_LIVE script, then poll the lease until it is "<live>:<epoch>:...";
2. then, in the RabbitMQ container, one small Erlang node (`erl -hidden`, the Erlang cookie
   the broker's own CLI uses: no password) that asks the broker node every 20 ms for every
   consumer of the vhost (`rabbit_amqqueue:consumers_all`, the call behind `rabbitmqctl
   list_consumers`: live, waiting single-active consumers included) until, on each work
   queue, the queue exists and every consumer, whatever its tag, has a consumer tag of the
   new color ("paper-trading-<live>-..."); with `live="none"`, until no queue has a
   consumer. A consumer with any other tag (a rogue, a tool, an old color) keeps the
   handoff waiting and fails it at the deadline (`HandoffError.foreign`: queue -> count).
   The node boots in ~0.2 s; `rabbitmqctl` (an Elixir VM per call) took ~0.8 s a call.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import docker.errors

import programs
from contract import work as wc
from release.routing.docker_side import docker_client

DEFAULT_TIMEOUT_S = 15.0
REDIS_CONF = "/run/secrets/redis.conf"
RABBITMQ_CONF_DIR = "/etc/rabbitmq/conf.d"
#: The vhost of the stack's queues (stack/datastores.py's definitions).
VHOST = "/"


@dataclass(frozen=True)
class QueueConsumers:
    """One work queue as the broker saw it last: every consumer on it, by the color of its tag."""

    queue: str
    exists: bool
    #: Every consumer on the queue, whatever its tag.
    total: int
    #: "blue"/"green" (tag "paper-trading-<color>-...") and "other" (any other tag).
    by_owner: dict[str, int] = field(default_factory=dict)

    def foreign(self, live: str) -> int:
        """Consumers on this queue that are not `live`'s (all of them when `live` is "none")."""
        return self.total - (self.by_owner.get(live, 0) if live in wc.COLORS else 0)


class HandoffError(Exception):
    """The work did not move in time (or could not be published); the message says why.

    The fields say it for machines: `live` (the color the work was moving to), `epoch` (None:
    the publish failed), `holder` (the lease seen last), `lease_moved`, `queues` (each work
    queue as the broker saw it last; empty when it could not be asked) and `broker_error`.
    """

    def __init__(self, message: str, *, live: str | None = None, epoch: int | None = None,
                 holder: str | None = None, lease_moved: bool = False,
                 queues: Mapping[str, QueueConsumers] | None = None, broker_error: str | None = None) -> None:
        super().__init__(message)
        self.live, self.epoch, self.holder, self.lease_moved = live, epoch, holder, lease_moved
        self.queues = dict(queues or {})
        self.broker_error = broker_error

    @property
    def foreign(self) -> dict[str, int]:
        """Work queue -> consumers on it that are not the new color's (every tag counted), where any."""
        live = self.live or ""
        return {name: q.foreign(live) for name, q in self.queues.items() if q.foreign(live)}

    @property
    def missing_queues(self) -> list[str]:
        return [name for name, q in self.queues.items() if not q.exists]

    def __reduce__(self) -> Any:  # keeps the fields across pickling (the dynamic provider's process)
        return (_handoff_error, (str(self), self.__dict__))


def _handoff_error(message: str, state: dict[str, Any]) -> HandoffError:
    error = HandoffError(message)
    error.__dict__.update(state)
    return error


@dataclass(frozen=True)
class HandoffTarget:
    """Where the handoff happens, as plain data (dynamic-provider props, CLI options)."""

    redis_container: str
    rabbitmq_container: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    #: The work queues (`workers.queues`): every consumer on them must be the live color's.
    queues: tuple[str, ...] = (wc.DEFAULT_QUEUE,)

    def props(self) -> dict[str, Any]:
        return {"redisContainer": self.redis_container, "rabbitmqContainer": self.rabbitmq_container,
                "timeoutS": self.timeout_s, "queues": list(self.queues)}

    @staticmethod
    def from_props(props: Mapping[str, Any] | None) -> HandoffTarget | None:
        if not props or not props.get("redisContainer") or not props.get("rabbitmqContainer"):
            return None
        queues = tuple(str(q) for q in props.get("queues") or ()) or (wc.DEFAULT_QUEUE,)
        return HandoffTarget(str(props["redisContainer"]), str(props["rabbitmqContainer"]),
                             float(props.get("timeoutS") or DEFAULT_TIMEOUT_S), queues)


@dataclass(frozen=True)
class HandoffResult:
    live: str
    epoch: int
    #: From the publish until the new color holds the lease and every work-queue consumer is its.
    handoff_ms: float
    #: The lease value seen last ("<color>:<epoch>:<instance>").
    holder: str
    #: Consumers per color ("other": any other tag) on the work queues, as the broker reports them.
    consumers: dict[str, int] = field(default_factory=dict)
    #: Each work queue as the broker saw it when the handoff held.
    queues: dict[str, QueueConsumers] = field(default_factory=dict)


#: The Redis side (programs/handoff/publish.sh): publish, then poll the lease. Its parameters
#: come in the exec's environment (`_redis_env`).
_REDIS_SCRIPT = programs.text("handoff/publish.sh")
#: The broker-side check, an Erlang expression for `erl -eval` (programs/handoff/consumers.erl,
#: see the module docstring), run by programs/handoff/consumers.sh in the RabbitMQ container.
_BROKER_PROBE = programs.text("handoff/consumers.erl")
_RABBITMQ_SCRIPT = programs.text("handoff/consumers.sh")


def _redis_env(live: str, timeout_s: float) -> dict[str, str]:
    """What programs/handoff/publish.sh reads: the contract's names, the color, the clock, the deadline."""
    return {
        "REDIS_CONF": REDIS_CONF, "PUBLISH": wc.PUBLISH_LIVE, "EPOCH_KEY": wc.EPOCH_KEY,
        "LIVE_KEY": wc.LIVE_KEY, "LEASE_KEY": wc.LEASE_KEY, "CHANNEL": wc.CHANNEL, "NOBODY": wc.NOBODY,
        "COLOR": live, "NOW_MS": str(int(time.time() * 1000)),
        "END": str(math.ceil(time.time() + timeout_s)),
    }


def parse_queues(text: str) -> dict[str, QueueConsumers]:
    """The probe's `queue=...` lines, by queue."""
    found: dict[str, QueueConsumers] = {}
    for line in text.splitlines():
        if not line.startswith("queue="):
            continue
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        try:
            owners = {who: int(fields[who]) for who in (*wc.COLORS, "other")}
            found[fields["queue"]] = QueueConsumers(fields["queue"], fields["exists"] == "1",
                                                    int(fields["total"]), owners)
        except (KeyError, ValueError):
            continue
    return found


def parse_consumers(text: str) -> dict[str, int]:
    """Consumers per color from the management API's JSON or rabbitmqctl's lines."""
    tags: list[str] = []
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, list):
        for item in doc:
            if isinstance(item, dict):
                conn = (item.get("channel_details") or {}).get("connection_name") or ""
                tags.append(f"{item.get('consumer_tag') or ''} {conn}")
    else:
        tags = [line for line in text.splitlines() if line.strip()]
    found = {color: 0 for color in wc.COLORS}
    for tag in tags:
        for color in wc.COLORS:
            if f"paper-trading-{color}-" in tag:
                found[color] += 1
                break
        else:
            found["other"] = found.get("other", 0) + 1
    return found


def _exec(client: Any, name: str, script: str, env: dict[str, str]) -> tuple[int, str, str]:

    try:
        container = client.containers.get(name)
        result = container.exec_run(["sh", "-c", script], environment=env, demux=True)
    except docker.errors.DockerException as exc:
        raise HandoffError(f"cannot exec in container {name!r}: {exc}") from None
    out, err = result.output if result.output else (None, None)
    text = (out or b"").decode(errors="replace")
    return int(result.exit_code), text, (err or b"").decode(errors="replace").strip()


def hand_over(target: HandoffTarget, live: str, previous: str | None, client: Any = None) -> HandoffResult:
    """Publish `live` as the color that does background work and wait until it holds it.

    The rule: the lease is "<live>:<epoch>:..." (the epoch this call published), then, seen
    after that, every work queue (`target.queues`) exists and every consumer on it, whatever
    its tag, has a tag of `live`: the broker's total per queue equals `live`'s count. So a
    consumer with a foreign tag, or any consumer of `previous`, keeps the handoff waiting.
    `live="none"` (wc.NOBODY): no color may do background work; waits until the lease is
    free and no work queue has any consumer (a first promotion that was switched back).
    `previous` is only named in the error.

    Raises HandoffError when the publish fails or the work has not moved within
    `target.timeout_s`; the caller switches traffic back and hands the work back.
    """
    if live not in (*wc.COLORS, wc.NOBODY):
        raise HandoffError(f"live color must be one of {(*wc.COLORS, wc.NOBODY)}, got {live!r}", live=live)
    if client is None:

        client = docker_client()
    start = time.perf_counter()
    deadline = start + target.timeout_s
    code, out, err = _exec(client, target.redis_container, _REDIS_SCRIPT, _redis_env(live, target.timeout_s))
    fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    if code == 3 or "epoch" not in fields:
        raise HandoffError(f"publishing {live} in {target.redis_container!r} failed "
                           f"(exit {code}): {err or out or 'no output'}", live=live)
    epoch, holder = int(fields["epoch"]), fields.get("lease", "")
    remaining = max(0.0, deadline - time.perf_counter())
    rcode, rout, rerr = _exec(client, target.rabbitmq_container, _RABBITMQ_SCRIPT, {
        "PROBE": _BROKER_PROBE, "LIVE": live, "QUEUES": " ".join(target.queues), "VHOST": VHOST,
        "END_MS": str(int((time.time() + remaining) * 1000)),
    })
    queues = parse_queues(rout)
    handoff_ms = (time.perf_counter() - start) * 1000
    broker_ok = rcode == 0 and "result=ok" in rout.splitlines() and set(queues) == set(target.queues)
    problems = []
    if code != 0:
        want = "no holder" if live == wc.NOBODY else f"{live}:{epoch}:<instance>"
        problems.append(f"lease holder {holder or '(none)'}, want {want}")
    broker_error = None
    if not broker_ok:
        fields = dict(line.split("=", 1) for line in rout.splitlines() if "=" in line and " " not in line)
        if fields.get("result") in ("ok", "timeout") and set(queues) == set(target.queues):
            for name, q in queues.items():
                if not q.exists:
                    problems.append(f"queue {name!r} does not exist")
                elif q.foreign(live):
                    problems.append(f"queue {name!r} has {q.foreign(live)} consumer(s) not of {live} "
                                    f"({', '.join(f'{k}={v}' for k, v in sorted(q.by_owner.items()))})")
        else:
            broker_error = fields.get("error") or rerr or rout.strip() or f"exit {rcode}, no output"
            problems.append(f"broker query in {target.rabbitmq_container!r} failed: {broker_error}")
    if problems:
        raise HandoffError(
            f"background work did not move to {live} (epoch {epoch}, from {previous or 'none'}) within "
            f"{target.timeout_s:g}s: {'; '.join(problems)}",
            live=live, epoch=epoch, holder=holder, lease_moved=code == 0, queues=queues,
            broker_error=broker_error)
    consumers = {who: sum(q.by_owner.get(who, 0) for q in queues.values()) for who in (*wc.COLORS, "other")}
    return HandoffResult(live, epoch, round(handoff_ms, 1), holder, consumers, queues)
