"""Moving background work with the traffic (issue 15): the switch side of the contract.

After traffic has moved, the switch publishes the new live color with a new epoch in
Redis, then confirms within a time limit that an instance of the new color holds the
lease and that no consumer of the old color is left on the broker, as the broker itself
reports it (inside the RabbitMQ container: nothing of it is published).

Two `docker exec` round trips, each one small shell loop:
1. in the Redis container (password from its own config file, as its healthcheck reads it;
   given to redis-cli through REDISCLI_AUTH, never on a command line): the contract's
   PUBLISH_LIVE script, then poll the lease until it is "<live>:<epoch>:...";
2. in the RabbitMQ container: poll the broker's consumers until none has a consumer tag of
   the old color (tags and connection names are "paper-trading-<color>-<host>..."). The
   management API (/api/consumers on 127.0.0.1:15672) answers when the container has
   credentials in its config (`default_user`/`default_pass`) and curl or wget; otherwise
   `rabbitmqctl list_consumers` (the Erlang cookie, no password; about 0.8 s a call).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import work_contract as wc

if TYPE_CHECKING:
    from .config import Settings
    from .datastores import Datastores

DEFAULT_TIMEOUT_S = 15.0
REDIS_CONF = "/run/secrets/redis.conf"
RABBITMQ_CONF_DIR = "/etc/rabbitmq/conf.d"
_MARK = "--consumers--"


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


# $PUBLISH (the Lua script), $COLOR, $NOW_MS, $END (deadline, epoch seconds) come in the exec's environment.
_REDIS_SCRIPT = f"""
set -u
REDISCLI_AUTH="$(sed -n 's/^requirepass //p' {REDIS_CONF} 2>/dev/null)"; export REDISCLI_AUTH
[ -n "$REDISCLI_AUTH" ] || unset REDISCLI_AUTH
epoch="$(redis-cli --no-auth-warning --raw EVAL "$PUBLISH" 2 '{wc.EPOCH_KEY}' '{wc.LIVE_KEY}' \\
    "$COLOR" "$NOW_MS" '{wc.CHANNEL}')" || exit 3
case "$epoch" in ''|*[!0-9]*) echo "publish: $epoch" >&2; exit 3;; esac
echo "epoch=$epoch"
while :; do
  lease="$(redis-cli --no-auth-warning --raw GET '{wc.LEASE_KEY}')"
  case "$COLOR:$lease" in "$COLOR:$COLOR:$epoch:"*|"{wc.NOBODY}:") echo "lease=$lease"; exit 0;; esac
  [ "$(date +%s)" -ge "$END" ] && {{ echo "lease=$lease"; exit 4; }}
  sleep 0.02
done
"""

# $OLD (color whose consumers must be gone, or empty), $END (deadline, epoch seconds) in the environment.
_RABBITMQ_SCRIPT = f"""
set -u
conf="$(cat {RABBITMQ_CONF_DIR}/*.conf 2>/dev/null)"
user="$(printf '%s\\n' "$conf" | sed -n 's/^default_user *= *//p' | tail -n 1)"
pass="$(printf '%s\\n' "$conf" | sed -n 's/^default_pass *= *//p' | tail -n 1)"
api() {{
  [ -n "$user" ] && [ -n "$pass" ] || return 1
  if command -v curl >/dev/null 2>&1; then
    curl -fsS -m 2 -u "$user:$pass" http://127.0.0.1:15672/api/consumers
  else
    wget -q -T 2 -O - --user "$user" --password "$pass" http://127.0.0.1:15672/api/consumers
  fi
}}
query() {{ api || rabbitmqctl -q list_consumers --no-table-headers queue_name consumer_tag; }}
while :; do
  if out="$(query 2>/dev/null)"; then
    if [ -z "$OLD" ] || ! printf '%s' "$out" | grep -q "paper-trading-$OLD-"; then
      echo "{_MARK}"; printf '%s\\n' "$out"; exit 0
    fi
  fi
  [ "$(date +%s)" -ge "$END" ] && {{ echo "{_MARK}"; printf '%s\\n' "$out"; exit 4; }}
  sleep 0.05
done
"""


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
    import docker.errors

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

    `live="none"` (wc.NOBODY): no color may do background work; waits until the lease is
    free and `previous` has no consumers (a first promotion that was switched back).

    Raises HandoffError when the publish fails or the work has not moved within
    `target.timeout_s`; the caller switches traffic back and hands the work back.
    """
    if live not in (*wc.COLORS, wc.NOBODY):
        raise HandoffError(f"live color must be one of {(*wc.COLORS, wc.NOBODY)}, got {live!r}")
    if client is None:
        from .routing.docker_side import docker_client

        client = docker_client()
    start = time.perf_counter()
    deadline = start + target.timeout_s
    code, out, err = _exec(client, target.redis_container, _REDIS_SCRIPT, {
        "PUBLISH": wc.PUBLISH_LIVE, "COLOR": live, "NOW_MS": str(int(time.time() * 1000)),
        "END": str(math.ceil(time.time() + target.timeout_s)),
    })
    fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    if code == 3 or "epoch" not in fields:
        raise HandoffError(f"publishing {live} in {target.redis_container!r} failed "
                           f"(exit {code}): {err or out or 'no output'}")
    epoch, holder = int(fields["epoch"]), fields.get("lease", "")
    old = previous if previous in wc.COLORS and previous != live else ""
    remaining = max(0.0, deadline - time.perf_counter())
    rcode, rout, rerr = _exec(client, target.rabbitmq_container, _RABBITMQ_SCRIPT, {
        "OLD": old or "", "END": str(math.ceil(time.time() + remaining)),
    })
    consumers = parse_consumers(rout.partition(_MARK)[2])
    handoff_ms = (time.perf_counter() - start) * 1000
    problems = []
    if code != 0:
        want = "no holder" if live == wc.NOBODY else f"{live}:{epoch}:<instance>"
        problems.append(f"lease holder {holder or '(none)'}, want {want}")
    if rcode != 0 or _MARK not in rout:
        problems.append(f"{old or 'old'} color still has consumers" if _MARK in rout
                        else f"broker query failed: {rerr or rout or 'no output'}")
    if problems:
        per_color = ", ".join(f"{k}={v}" for k, v in sorted(consumers.items()))
        raise HandoffError(f"background work did not move to {live} (epoch {epoch}) within "
                           f"{target.timeout_s:g}s: {'; '.join(problems)}; consumers per color: {per_color}")
    return HandoffResult(live, epoch, round(handoff_ms, 1), holder, consumers)


def handoff_props(settings: Settings, datastores: Datastores) -> dict[str, Any] | None:
    """The routing switch's `handoff` input for this stack: its Redis and RabbitMQ containers
    and `workers.handoffTimeoutSeconds`; None when the stack runs no background work."""
    if not settings.workers.enabled:
        return None
    return {"redisContainer": datastores.redis.name, "rabbitmqContainer": datastores.rabbitmq.name,
            "timeoutS": settings.workers.handoff_timeout_seconds}
