"""Reaching the swarm: one Docker client per node, the proxy task running on an edge node."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from release.routing.base import RoutingError
from release.routing.docker_side import served

#: The label Swarm puts on every task's container: the service it belongs to.
SERVICE_NAME_LABEL = "com.docker.swarm.service.name"


@dataclass(frozen=True)
class Node:
    """A node as the release reaches it (settings `swarm.nodes`, without the labels it does not need)."""

    name: str
    endpoint: str
    address: str

    @staticmethod
    def of(value: Mapping[str, Any]) -> Node:
        return Node(str(value["name"]), str(value["endpoint"]), str(value["address"]))

    def props(self) -> dict[str, str]:
        return {"name": self.name, "endpoint": self.endpoint, "address": self.address}


def client_for(endpoint: str) -> Any:
    """A Docker client for one node's engine (TLS settings, if any, from the environment)."""
    return docker.DockerClient(base_url=endpoint, timeout=30)


def task_container(client: Any, node: Node, service: str) -> Any:
    """The running container of `service`'s task on `node`, or a RoutingError saying what is wrong."""
    try:
        found = client.containers.list(
            filters={"label": f"{SERVICE_NAME_LABEL}={service}", "status": "running"})
    except docker.errors.DockerException as exc:
        raise RoutingError(
            f"node {node.name}: its Docker Engine ({node.endpoint}) does not answer: {exc}") from None
    if len(found) != 1:
        raise RoutingError(f"node {node.name}: expected one running {service} task, found {len(found)}")
    return found[0]


def served_on(nodes: Sequence[Node], service: str) -> dict[str, str]:
    """{node name: the live color its proxy task serves}; `unreadable` where it cannot be read."""
    found: dict[str, str] = {}
    for node in nodes:
        try:
            client = client_for(node.endpoint)
            try:
                found[node.name] = served(task_container(client, node, service)).live
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - unreadable counts as not serving anything known
            found[node.name] = "unreadable"
    return found
