"""The release guard on Swarm: the swarm can take a change, and no edge proxy serves the color to change.

As on the single host (release/guard.py): the plan learns the live color from the stack's
state, which an emergency switch (`python -m release.swarm switch`) can make stale. Every
color's service depends on this resource, whose `check` (at preview and at up, before any
service changes) asks the proxy task on every edge node which color it serves and refuses when
one of them serves a color this run would change. A node without a proxy task serves nothing;
a node whose engine cannot be asked, while a color is about to change, is a refusal (fail closed).
First it asks the manager whether the swarm can take a change at all: without a majority of its
managers there is no raft leader, and the run is refused before anything changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi.dynamic as dyn

from release.dynamic import StateProvider
from release.routing.docker_side import served
from release.swarm.nodes import SERVICE_NAME_LABEL, Node, client_for

SWARM_GUARD_KIND = "paper-trading:swarm-release-guard"


def served_by_edges(nodes: Sequence[Node], service: str) -> dict[str, str | None]:
    """{node: the color its proxy task serves, None without a running task}; raises if a node can't say."""
    found: dict[str, str | None] = {}
    for node in nodes:
        client = client_for(node.endpoint)
        try:
            tasks = client.containers.list(
                filters={"label": f"{SERVICE_NAME_LABEL}={service}", "status": "running"})
            colors = {served(task).live for task in tasks}
        finally:
            client.close()
        if len(colors) > 1:
            raise RuntimeError(f"node {node.name} runs {len(tasks)} proxy tasks serving {sorted(colors)}")
        found[node.name] = next(iter(colors), None)
    return found


def quorum_problem(manager: str) -> str | None:
    """Why the swarm cannot take a change through `manager` now (no raft leader, no answer); None if it can.

    Without a majority of its managers a swarm has no leader: every service update is refused
    (after a leader that lost its majority steps down, about 20 s on the lab). Asked before
    anything changes, so a run refused here changed nothing; the tasks keep serving meanwhile.
    """
    swarm: dict[str, Any] = {}
    try:
        client = client_for(manager)
        try:
            swarm = client.info().get("Swarm") or {}
            if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
                raise RuntimeError(f"not an active swarm manager (state {swarm.get('LocalNodeState')!r})")
            if swarm.get("Error"):
                raise RuntimeError(swarm["Error"])
            client.nodes.list()  # a read only a leader answers
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - whatever the manager says, the run cannot go on
        managers = ", ".join(str(m.get("Addr", "?")) for m in swarm.get("RemoteManagers") or ()) or "unknown"
        return (f"the swarm cannot take changes through its manager {manager}: {exc} (managers: {managers}). "
                "Nothing was changed and the running tasks keep serving; bring a majority of the managers "
                "back, then run `pulumi up` again")
    return None


def problems(props: dict[str, Any]) -> list[tuple[str, str]]:
    """(property, reason) for each reason to refuse; [] when no color about to change is live."""
    changing = [str(color) for color in props.get("changing") or ()]
    if not changing:
        return []
    manager = str(props.get("manager") or "")
    if not manager:
        return [("manager", "the swarm manager's endpoint is missing: whether the swarm can take a change is "
                            "unknown")]
    no_quorum = quorum_problem(manager)
    if no_quorum:
        return [("manager", no_quorum)]
    nodes = [Node.of(node) for node in props.get("edgeNodes") or ()]
    service = str(props.get("proxyService") or "")
    if not nodes or not service:
        return [("edgeNodes",
                 "the edge nodes or the proxy service are missing: which color is live is unknown")]
    try:
        serving = served_by_edges(nodes, service)
    except Exception as exc:  # noqa: BLE001 - any failure to look is a refusal (fail closed)
        return [("changing", (
            f"cannot read which color the edge proxies serve ({type(exc).__name__}: {exc}), and this run "
            f"would change {', '.join(changing)}: refused rather than risk the live color"))]
    live = sorted({f"{node} serves {color}" for node, color in serving.items() if color in changing})
    if live:
        recorded = props.get("recordedLive")
        return [("changing", (
            f"{'; '.join(live)}, but this run would change that color's service: the stack's last release "
            f"made {recorded or 'no color'} live, so traffic was moved outside `pulumi up` (an emergency "
            "switch?). Adopt it first: set deployment.activeColor to the served color with no other change "
            "and `pulumi up`, or switch traffic back; then release to the idle color"))]
    return []


class SwarmReleaseGuardProvider(StateProvider):
    """`check` runs on every preview and up, before any dependent service is touched."""

    WATCHED = ("proxyService",)
    ID_KEY = "proxyService"

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dyn.CheckResult:
        failures = [dyn.CheckFailure(prop, reason) for prop, reason in problems(news)]
        return dyn.CheckResult(news, failures)


class SwarmReleaseGuard(dyn.Resource):
    """Refuses (at check) a run that would change the service of a color an edge proxy serves."""

    def __init__(self, name: str, *, manager: str, proxy_service: str, edge_nodes: Sequence[Node],
                 recorded_live: str | None, changing: Sequence[str],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            "kind": SWARM_GUARD_KIND,
            "manager": manager,
            "proxyService": proxy_service,
            "edgeNodes": [node.props() for node in edge_nodes],
            "recordedLive": recorded_live,
            "changing": sorted(changing),
        }
        super().__init__(SwarmReleaseGuardProvider(), name, props, opts)
