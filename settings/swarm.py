"""`swarm`: the Docker Swarm target's nodes, what each may run, and the live color's replica bounds.

`target: swarm` deploys both colors as Swarm services across these nodes (docs/swarm.md). The
program talks to one manager (`manager`); the release reaches every edge node's own Docker
Engine (`endpoint`) to switch its proxy task, and its listener (`address`) to confirm the switch
there. Labels say what a node may run: `edge` nodes run a proxy each (host-mode ports, so the
client's address reaches nginx), `data` nodes the datastores (Swarm does not move their data).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from .base import IPv4, Model, Networks

#: What the swarm target does not deploy yet, by the key that turns it on (docs/swarm.md, "Not
#: built yet"): a stack must turn each off itself, so nobody believes a protection runs that does not.
SWARM_NOT_YET: tuple[tuple[str, str], ...] = (
    ("server.ssl.enabled", "TLS on the edge nodes"),
    ("backup.enabled", "backups"),
    ("monitoring.prometheus.enabled", "Prometheus"),
    ("monitoring.alertmanager.enabled", "Alertmanager"),
    ("monitoring.grafana.enabled", "Grafana"),
    ("monitoring.logs.enabled", "log aggregation"),
    ("security.firewall.enabled", "the host firewall on each node"),
    ("security.ids.enabled", "intrusion detection on each node"),
)
NodeLabel = Literal["edge", "data"]
#: How the release reaches a node's Docker Engine: a socket, TCP (with TLS from the environment)
#: or SSH, as the docker CLI and SDK accept them.
_ENDPOINT = re.compile(r"^(unix:///\S+|tcp://[A-Za-z0-9.-]+:[0-9]{1,5}|ssh://\S+)$")
#: A node's hostname as Swarm reports it (`docker node ls`).
_NODE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,62})$")


def _endpoint(value: str) -> str:
    if not _ENDPOINT.match(value):
        raise ValueError(
            f"{value!r} is not a Docker endpoint: use unix:///path.sock, tcp://host:port or ssh://user@host"
        )
    return value


def _node_name(value: str) -> str:
    if not _NODE_NAME.match(value):
        raise ValueError(f"{value!r} is not a node hostname (letters, digits, . and -)")
    return value


Endpoint = Annotated[str, AfterValidator(_endpoint)]
NodeName = Annotated[str, AfterValidator(_node_name)]


class SwarmNode(Model):
    """One node of the swarm, as the release reaches it."""

    #: Its hostname in the swarm (`docker node ls`): the placement constraints name it.
    name: NodeName
    #: Its own Docker Engine: the switch renames the markers of the proxy task running there.
    endpoint: Endpoint
    #: The address its published ports answer on (edge nodes: the switch confirms each one).
    address: IPv4
    labels: tuple[NodeLabel, ...] = ()

    @model_validator(mode="after")
    def _labels_once(self) -> SwarmNode:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels: lists a label more than once")
        return self


class AutoscaleConfig(Model):
    """The live color's replicas follow its requests in flight per replica, between bounds.

    Out above `scaleOutAbove`, in below `scaleInBelow` (the gap is the hysteresis), one step per
    decision and at most one decision per `cooldownSeconds` (release/swarm/autoscale.py). The
    signal is the app's `http_requests_in_flight` gauge, averaged over the live color's tasks by
    a Prometheus the program runs on the manager node (`signalPort`); a decision that reaches or
    is held at a bound is posted to `alertmanagerUrl`.
    """

    enabled: bool = False
    #: The operator's Alertmanager (the base URL of its API v2): required when enabled.
    alertmanager_url: str | None = Field(default=None, pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+(/\S*)?$",
                                        json_schema_extra={"requiredWith": "swarm.autoscale.enabled"})
    #: The signal's Prometheus, published on the manager node's own port (host mode).
    signal_port: int = Field(default=29090, ge=1024, le=65535)
    min_replicas: int = Field(default=2, ge=2, le=20)
    max_replicas: int = Field(default=6, ge=2, le=20)
    #: Requests in flight per replica above which one replica is added.
    scale_out_above: float = Field(default=8.0, gt=0, le=10000)
    #: Requests in flight per replica below which one replica is removed.
    scale_in_below: float = Field(default=2.0, ge=0, le=10000)
    cooldown_seconds: float = Field(default=30.0, ge=1, le=3600)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscaleConfig:
        if self.enabled and self.alertmanager_url is None:
            raise ValueError("alertmanagerUrl: is required when swarm.autoscale.enabled is true "
                             "(a decision held at a bound is alerted there)")
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"maxReplicas: must be at least swarm.autoscale.minReplicas ({self.min_replicas})")
        if self.scale_in_below >= self.scale_out_above:
            raise ValueError(
                f"scaleInBelow: must be below swarm.autoscale.scaleOutAbove ({self.scale_out_above:g}): "
                "the gap between them keeps one load level from scaling out and back in turn"
            )
        return self


class SwarmConfig(Model):
    """The nodes (at least one `edge`, one `data` and two without `data`) and the manager the program uses."""

    #: The node whose engine the program deploys through (a manager; `docker:host` of the stack).
    manager: NodeName
    nodes: tuple[SwarmNode, ...] = Field(min_length=2)
    #: Who may reach the preview listener (the candidate color, not yet validated): Swarm publishes a
    #: host-mode port on every address of the edge node, so nginx admits only these sources (the
    #: machine that runs `pulumi up`, whose gate checks the candidate there) and refuses the rest.
    preview_from: Networks = Field(min_length=1)
    autoscale: AutoscaleConfig = AutoscaleConfig()

    @model_validator(mode="after")
    def _nodes(self) -> SwarmConfig:
        for key in ("name", "endpoint", "address"):
            values = [str(getattr(node, key)) for node in self.nodes]
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(
                    f"nodes: {key} {', '.join(map(repr, repeated))} is given to more than one node")
        for label in ("edge", "data"):
            if not any(label in node.labels for node in self.nodes):
                raise ValueError(
                    f"nodes: no node is labelled {label!r}; "
                    + ("the proxies run on edge nodes" if label == "edge"
                       else "the datastores run on a data node")
                )
        apps = [node.name for node in self.nodes if "data" not in node.labels]
        if len(apps) < 2:
            raise ValueError(
                f"nodes: the apps run on nodes without the 'data' label, and each color on at least 2 "
                f"of them; found {len(apps)} ({', '.join(apps) or 'none'})")
        if self.manager not in {node.name for node in self.nodes}:
            raise ValueError(f"manager: {self.manager!r} is not one of swarm.nodes")
        return self

    def labelled(self, label: NodeLabel) -> tuple[SwarmNode, ...]:
        return tuple(node for node in self.nodes if label in node.labels)

    @property
    def manager_node(self) -> SwarmNode:
        return next(node for node in self.nodes if node.name == self.manager)
