"""The background work on the lab swarm, as the tests read it: the lease, the records, the queue.

Everything is read where it lives, on the data node, through that node's engine: Redis (the
contract's lease and records, tests/support/work.py's keys) by `redis-cli` in its task, the queue
by `rabbitmqctl` in the broker's task. Orders are published from inside the swarm by a one-off
service on the data node (tests/support/swarm_publisher.py), which is never the node cut off.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker.errors
from docker.types import Healthcheck, RestartPolicy, SecretReference

from contract import work as wc
from tests.support.swarm_load import until
from tools.swarm_lab import Lab

PREFIX = "paper-trading-lab"
DATA = "n3"
APP_IMAGE = "paper-trading-reference-app:test"
PUBLISHER = (Path(__file__).resolve().parent / "swarm_publisher.py").read_text()
_SERVICE_LABEL = "com.docker.swarm.service.name"


def _task(swarm_lab: Lab, service: str) -> Any:
    [container] = swarm_lab.node(DATA).client().containers.list(
        filters={"label": f"{_SERVICE_LABEL}={PREFIX}-{service}", "status": "running"})
    return container


def redis(swarm_lab: Lab, *args: str) -> str:
    """`redis-cli --raw <args>` in the Redis task (its password from its own config, never argv)."""
    script = ('REDISCLI_AUTH="$(sed -n \'s/^requirepass //p\' /run/secrets/redis.conf)" '
              'exec redis-cli --no-auth-warning --raw "$@"')
    done = _task(swarm_lab, "redis").exec_run(["sh", "-c", script, "redis-cli", *args], demux=True)
    out, err = done.output
    assert done.exit_code == 0, (err or b"").decode()
    return (out or b"").decode()


def lease(swarm_lab: Lab) -> tuple[str, int, str] | None:
    """The lease as the contract parses it: (color, epoch, instance), None when nobody holds it."""
    return wc.parse_token(redis(swarm_lab, "GET", wc.LEASE_KEY).strip() or None)


def holder_node(swarm_lab: Lab, color: str) -> str | None:
    """The lab node running the task that holds the lease (its hostname is its container id)."""
    held = lease(swarm_lab)
    if held is None or held[0] != color:
        return None
    hostname = held[2].rsplit("-", 1)[0]
    for node in swarm_lab.nodes:
        for container in node.client().containers.list(
                filters={"label": f"{_SERVICE_LABEL}={PREFIX}-app-{color}"}):
            if container.id.startswith(hostname):
                return node.name
    return None


def processed(swarm_lab: Lab, run: str) -> list[str]:
    """The ids of `run` committed (the contract's record: one entry per id, whoever committed it)."""
    keys = redis(swarm_lab, "HKEYS", wc.PROCESSED_KEY).split()
    return sorted(k for k in keys if k.startswith(f"{run}-"))


def duplicates(swarm_lab: Lab) -> list[str]:
    """Every refused second commit that was not a broker redelivery (empty: exactly once)."""
    return [line for line in redis(swarm_lab, "LRANGE", wc.DUPLICATES_KEY, "0", "-1").splitlines() if line]


def queue_depth(swarm_lab: Lab) -> int:
    """Messages ready or unacknowledged on the work queue, as the broker reports them now."""
    done = _task(swarm_lab, "rabbitmq").exec_run(
        ["rabbitmqctl", "-q", "list_queues", "name", "messages", "--formatter", "json"])
    assert done.exit_code == 0, done.output.decode(errors="replace")
    return sum(int(q["messages"]) for q in json.loads(done.output) if q["name"] == wc.DEFAULT_QUEUE)


def queue_consumers(swarm_lab: Lab) -> list[str]:
    """The consumer tags on the work queue (the broker's own, current list)."""
    done = _task(swarm_lab, "rabbitmq").exec_run(
        ["rabbitmqctl", "-q", "list_consumers", "queue_name", "consumer_tag", "--formatter", "json"])
    assert done.exit_code == 0, done.output.decode(errors="replace")
    return [c["consumer_tag"] for c in json.loads(done.output) if c["queue_name"] == wc.DEFAULT_QUEUE]


@contextmanager
def publishing(swarm_lab: Lab, run: str, count: int, per_s: float, mode: str = "publish") -> Iterator[Any]:
    """A one-off publisher service on the data node, on the stack's backend network, with the apps'
    RabbitMQ password secret; yields the service, removed on exit. `mode="consume"`: a consumer
    of another program on the work queue instead (tests/support/swarm_publisher.py)."""
    client = swarm_lab.manager()
    secret = next(s for s in client.secrets.list() if s.name.startswith(f"{PREFIX}-blue-rabbitmq_password-"))
    service = client.services.create(
        APP_IMAGE, name=f"{PREFIX}-publisher-{run}", command=["python3", "-c", PUBLISHER],
        env=[f"RUN={run}", f"COUNT={count}", f"PER_S={per_s}", f"MODE={mode}",
             "PASSWORD_FILE=/run/secrets/rabbitmq_password"],
        networks=[f"{PREFIX}-backend"], constraints=["node.labels.data==true"],
        secrets=[SecretReference(secret.id, secret.name, filename="rabbitmq_password", mode=0o444)],
        restart_policy=RestartPolicy(condition="none"),
        # Not the app: the image's HTTP healthcheck would fail, and Swarm kills an unhealthy task
        # (seen: a 2-minute publisher killed, exit 137, "dockerexec: unhealthy container").
        healthcheck=Healthcheck(test=["NONE"]))
    try:
        yield service
    finally:
        _remove(swarm_lab, service.id)


def _remove(swarm_lab: Lab, service_id: str, within: float = 150) -> None:
    """Remove a service, waiting out a swarm between leaders (a healed node can unseat one)."""
    deadline = time.monotonic() + within
    while True:
        try:
            swarm_lab.manager().api.remove_service(service_id)
            return
        except docker.errors.NotFound:
            return
        except Exception:  # noqa: BLE001 - no leader yet, or no manager answering yet
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def published(swarm_lab: Lab, run: str, timeout: float) -> str:
    """The publisher's last line once it has exited (`published=N` or `error=...`)."""
    deadline = time.monotonic() + timeout
    name = f"{PREFIX}-publisher-{run}"
    while time.monotonic() < deadline:
        found = swarm_lab.node(DATA).client().containers.list(
            all=True, filters={"label": f"{_SERVICE_LABEL}={name}"})
        if found and found[0].status == "exited":
            lines = found[0].logs().decode(errors="replace").strip().splitlines()
            return lines[-1] if lines else _why_gone(swarm_lab, name, found[0].attrs["State"])
        time.sleep(0.5)
    return f"still publishing after {timeout:g}s"


def _why_gone(swarm_lab: Lab, service: str, state: dict[str, Any]) -> str:
    """A publisher that exited without a word: its container's end and its task's, as Swarm says."""
    tasks = swarm_lab.manager().api.tasks(filters={"service": service})
    said = [(t["DesiredState"], t["Status"]["State"], t["Status"].get("Message"), t["Status"].get("Err"))
            for t in tasks]
    return (f"exit {state['ExitCode']}, no output (oom killed: {state.get('OOMKilled')}, "
            f"finished {state.get('FinishedAt')}; tasks: {said})")


def exactly_once(swarm_lab: Lab, run: str, count: int) -> None:
    """Every order of `run` committed once: each id in the record, no refused second commit, the
    queue empty (waits up to 60 s for the last ones)."""
    until(lambda: len(processed(swarm_lab, run)) >= count and queue_depth(swarm_lab) == 0, 60)
    assert processed(swarm_lab, run) == [f"{run}-{i:05d}" for i in range(count)]
    assert duplicates(swarm_lab) == []
    assert queue_depth(swarm_lab) == 0


def restored(swarm_lab: Lab, orphan: tuple[str, int, str] | None) -> bool:
    """Another task of the orphan's color holds the lease at the same epoch, and only its tag consumes."""
    held = lease(swarm_lab)
    if orphan is None or held is None or held[:2] != orphan[:2] or held[2] == orphan[2]:
        return False
    hostname = held[2].rsplit("-", 1)[0]
    return queue_consumers(swarm_lab) == [f"paper-trading-{held[0]}-{hostname}-{wc.DEFAULT_QUEUE}"]


def only_consumer(swarm_lab: Lab, color: str) -> bool:
    """The work queue has consumers, and every one is `color`'s."""
    tags = queue_consumers(swarm_lab)
    return bool(tags) and all(tag.startswith(f"paper-trading-{color}-") for tag in tags)


def leader(swarm_lab: Lab) -> str:
    """The lab node (n1, n2, n3) leading the raft, as a manager reports it."""
    for node in swarm_lab.manager().nodes.list():
        if (node.attrs.get("ManagerStatus") or {}).get("Leader"):
            return str(node.attrs["Description"]["Hostname"]).rsplit("-", 1)[-1]
    raise AssertionError("no raft leader")


def move_work_off(swarm_lab: Lab, color: str, node: str) -> str:
    """Crash `color`'s task holding the work on `node` (its container killed; Swarm starts a new
    task): the other task takes the lease once it expires. Returns the node the work moved to,
    once `color` runs 2 tasks again."""
    held = lease(swarm_lab)
    assert held is not None and held[0] == color, held
    hostname = held[2].rsplit("-", 1)[0]
    service = f"{PREFIX}-app-{color}"
    [holder] = [c for c in swarm_lab.node(node).client().containers.list(
        filters={"label": f"{_SERVICE_LABEL}={service}"}) if c.id.startswith(hostname)]
    holder.kill()
    assert until(lambda: holder_node(swarm_lab, color) not in (None, node), 30) is not None

    def running() -> int:
        tasks = swarm_lab.manager().api.tasks(filters={"service": service, "desired-state": "running"})
        return sum(1 for t in tasks if t["Status"]["State"] == "running")

    assert until(lambda: running() == 2, 60) is not None
    moved = holder_node(swarm_lab, color)
    assert moved is not None
    return moved
