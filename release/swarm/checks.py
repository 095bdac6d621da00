"""The gate's Swarm checks: the candidate's rollout completed, its tasks healthy, on 2+ nodes.

Read from the managers' view of the service and from each node's engine (a task's health is
its container's, which only the node running it knows). Each check is reported by name, so a
refused release says which one failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import docker.errors

from release.swarm.nodes import Node, client_for

#: The checks every Swarm candidate must pass, in order.
SWARM_CHECKS = ("swarm.rollout", "swarm.replicas", "swarm.spread")
#: Update states that mean the candidate runs the spec it was given (none: never updated).
_SETTLED = (None, "completed")
#: Update states Swarm is still moving through: the gate waits them out (bounded), never judges them.
MOVING = ("updating", "rollback_started")
#: How long the gate waits for a rollout that is still moving before it judges it as it is.
SETTLE_S = 90.0


@dataclass(frozen=True)
class SwarmCheck:
    name: str
    passed: bool
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)


def run_swarm_checks(manager: str, service: str, replicas: int, nodes: Sequence[Node]) -> list[SwarmCheck]:
    """Every Swarm check of `service` (through the manager at `manager`); one result per name."""
    try:
        client = client_for(manager)
    except docker.errors.DockerException as exc:
        problem = f"the manager ({manager}) cannot tell: {exc}"
        return [SwarmCheck(name, False, problem) for name in SWARM_CHECKS]
    try:
        spec = client.services.get(service).attrs
        tasks = client.services.get(service).tasks(filters={"desired-state": "running"})
        names = {n.id: n.attrs["Description"]["Hostname"] for n in client.nodes.list()}
    except docker.errors.DockerException as exc:
        problem = f"the manager ({manager}) cannot tell: {exc}"
        return [SwarmCheck(name, False, problem) for name in SWARM_CHECKS]
    finally:
        client.close()
    results = [_rollout(spec)]
    healthy = _healthy_tasks(tasks, names, nodes)
    results.append(SwarmCheck(
        "swarm.replicas", len(healthy) == replicas,
        f"{len(healthy)} healthy running tasks, {replicas} wanted",
        {"healthy": sorted(healthy.values()), "wanted": replicas},
    ))
    spread = sorted(set(healthy.values()))
    results.append(SwarmCheck(
        "swarm.spread", len(spread) >= 2,
        f"healthy tasks on {len(spread)} node(s): {', '.join(spread) or 'none'}",
        {"nodes": spread},
    ))
    return results


def settled_checks(manager: str, service: str, replicas: int, nodes: Sequence[Node],
                   wait_s: float = SETTLE_S, poll_s: float = 1.0,
                   sleep: Callable[[float], None] = time.sleep) -> list[SwarmCheck]:
    """`run_swarm_checks` once the candidate's rollout has stopped moving (at most `wait_s`).

    `converge_config` lets `up` go on once every task runs the new spec, but Swarm reports the
    update as `updating` until its monitor window after the last task has passed: a release
    and a flip in one `up` met the gate inside that window (found on the lab) and was refused
    for a rollout that was about to complete. A rollout still moving at the deadline fails.
    """
    deadline = time.monotonic() + wait_s
    while True:
        results = run_swarm_checks(manager, service, replicas, nodes)
        if results[0].details.get("state") not in MOVING or time.monotonic() >= deadline:
            return results
        sleep(poll_s)


def _rollout(spec: Mapping[str, Any]) -> SwarmCheck:
    status = spec.get("UpdateStatus") or {}
    state = status.get("State")
    message = status.get("Message", "")
    if state in _SETTLED:
        return SwarmCheck("swarm.rollout", True, f"update {state or 'none'}", {"state": state})
    return SwarmCheck("swarm.rollout", False, f"update {state}: {message}".rstrip(": "), {"state": state})


def _healthy_tasks(tasks: Sequence[Mapping[str, Any]], names: Mapping[str, str],
                   nodes: Sequence[Node]) -> dict[str, str]:
    """{container id: node name} of running tasks whose container reports `healthy` on its node."""
    by_name = {node.name: node for node in nodes}
    running: dict[str, str] = {}
    for task in tasks:
        status = task.get("Status") or {}
        container = (status.get("ContainerStatus") or {}).get("ContainerID")
        if status.get("State") == "running" and container:
            running[container] = names.get(task.get("NodeID", ""), "?")
    healthy: dict[str, str] = {}
    for node_name in sorted(set(running.values())):
        node = by_name.get(node_name)
        if node is None:
            continue  # a node the stack does not list: its tasks cannot be proven healthy
        try:
            client = client_for(node.endpoint)
        except docker.errors.DockerException:
            continue  # its engine cannot say: its tasks are not proven healthy
        try:
            for container, where in running.items():
                if where != node_name:
                    continue
                try:
                    state = client.api.inspect_container(container)["State"]
                except docker.errors.DockerException:
                    continue
                if (state.get("Health") or {}).get("Status") == "healthy":
                    healthy[container] = node_name
        finally:
            client.close()
    return healthy
