"""The switch on every edge node: rename the markers in each proxy task, confirm each node, all or nothing.

The single host's protocol (release/routing/switching.py) once per edge node: each proxy task's
switch lock is taken and its markers renamed (one exec), then each node's own listener must
serve the new color; then the background work moves to it (release/swarm/work.py, when the
stack runs workers) and the post-promotion checks run through the first edge node. If any node
cannot be reached, refuses, or does not confirm, or the handoff or the checks fail, every node
already switched gets its previous markers back, so the edge never stays split between colors,
and the work, if it moved or may have, goes back to the color traffic went back to.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from release.audit import Auditor, Operation
from release.routing.base import NONE, Checker, Endpoint, RoutingError
from release.routing.docker_side import LOCK_WAIT_S, Served, drain, lock_owner, release_lock, swap_markers
from release.routing.listener import confirm
from release.routing.switching import apply_locked
from release.swarm.nodes import Node, client_for, task_container
from release.swarm.work import SwarmHandoff
from settings import Color


@dataclass(frozen=True)
class EdgeListener:
    """How each edge node's live listener is reached: `scheme://<node address>:<port>`."""

    scheme: str
    port: int
    host_header: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    probe_path: str = "/health"

    def endpoint(self, node: Node) -> Endpoint:
        return Endpoint(url=f"{self.scheme}://{node.address}:{self.port}", ca_file=self.ca_file,
                        insecure=self.insecure, host_header=self.host_header, probe_path=self.probe_path)


@dataclass(frozen=True)
class EdgeSwitch:
    live: Color
    previous_live: dict[str, str]
    switch_ms: float
    steps: dict[str, float] = field(default_factory=dict)
    #: The work's epoch and how long it took to move (None: the stack runs no background work).
    epoch: int | None = None
    handoff_ms: float | None = None


@dataclass
class _Edge:
    node: Node
    client: Any
    container: Any
    previous: Served | None = None


def switch_edges(
    nodes: Sequence[Node], proxy_service: str, live: Color, preview: Color | None,
    listener: EdgeListener,
    checker: Checker | None = None, lock_wait_s: float = LOCK_WAIT_S, audit: Auditor | None = None,
    confirm_s: float = 15.0, handoff: SwarmHandoff | None = None, operation: Operation = "switch",
) -> EdgeSwitch:
    """Make `live` the live color of the proxy task on every node in `nodes`, or of none of them.

    With `audit`: an intent record first (fail closed: none, no switch), then one `operation`
    record (`switch`, or the CLI's `emergency-switch`); a switch undone adds a `rollback`
    record, `ok` only when every edge node and the work went back.
    """
    for role, value in (("live", live), ("preview", preview)):
        if value not in ("blue", "green") and not (role == "preview" and value is None):
            raise RoutingError(
                f"refused: {role} color must be blue or green, not {value!r}; traffic unchanged")
    if not nodes:
        raise RoutingError("refused: no edge node to switch; traffic unchanged")
    if audit is not None:
        audit.begin(operation, to=live)
    start = time.monotonic()
    steps: dict[str, float] = {}
    owner = lock_owner()
    edges: list[_Edge] = []
    handed: dict[str, Any] = {}

    def lap(name: str) -> None:
        steps[name] = round((time.monotonic() - start) * 1000 - sum(steps.values()), 1)

    try:
        try:
            for node in nodes:  # every proxy found before any marker moves
                client = client_for(node.endpoint)
                edges.append(_Edge(node, client, task_container(client, node, proxy_service)))
            lap("find")
            for edge in edges:
                edge.previous = apply_locked(edge.container, live, preview or NONE, owner, lock_wait_s)
            lap("swap")
            for edge in edges:
                try:
                    confirm(listener.endpoint(edge.node), live, deadline_s=confirm_s)
                except RoutingError as exc:
                    raise RoutingError(f"node {edge.node.name}: {exc}") from None
            lap("confirm")
            if handoff is not None:
                handed["from"] = _first_live(edges)  # from here on a failure hands the work back
                try:
                    work = handoff.move(live, handed["from"])
                except Exception as exc:  # noqa: BLE001 - HandoffError, or the work left unknown
                    raise RoutingError(f"background-work handoff to {live} failed ({exc})") from None
                handed.update(epoch=work.epoch, ms=work.handoff_ms)
                lap("handoff")
            if checker is not None:
                failures = checker(listener.endpoint(edges[0].node), live)
                if failures:
                    raise RoutingError(f"post-promotion checks failed on {live}:\n  " + "\n  ".join(failures))
                lap("checks")
        except Exception as exc:
            moved = [edge for edge in edges if edge.previous is not None]
            began = time.monotonic()
            back, undone = _switch_back(moved, listener, owner)
            if handoff is not None and "from" in handed:
                said, handed_back = _hand_back(handoff, handed["from"], live)
                back, undone = back + said, undone and handed_back
            if audit is not None:
                audit.record(operation, "failed" if moved else "refused", (time.monotonic() - start) * 1000,
                             from_=_first_live(moved), to=live, error=str(exc))
                if moved:
                    audit.record("rollback", "ok" if undone else "failed", (time.monotonic() - began) * 1000,
                                 from_=live, to=_first_live(moved), error=None if undone else back)
            raise RoutingError(f"{exc}; {back}" if moved else f"{exc}; traffic unchanged") from None
        for edge in edges:
            with contextlib.suppress(Exception):  # traffic already moved: recycling is best effort
                drain(edge.container)
    finally:
        for edge in edges:
            release_lock(edge.container, owner)
            edge.client.close()
    previous_live = {edge.node.name: edge.previous.live for edge in edges if edge.previous is not None}
    if audit is not None:
        audit.record(operation, "ok", (time.monotonic() - start) * 1000, from_=_first_live(edges), to=live)
    return EdgeSwitch(live, previous_live, (time.monotonic() - start) * 1000, steps,
                      handed.get("epoch"), handed.get("ms"))


def _hand_back(handoff: SwarmHandoff, previous: str | None, live: str) -> tuple[str, bool]:
    """Give the work back to the color traffic went back to ("none" after a first promotion);
    what happened, and whether it did."""
    back = previous if previous in ("blue", "green") else "none"
    try:
        handoff.move(back, live)
    except Exception as exc:  # noqa: BLE001 - reported: the caller raises with it
        return f"; background work NOT handed back to {back} ({live} may still hold it): {exc}", False
    return f"; background work handed back to {back}", True


def _first_live(edges: Sequence[_Edge]) -> str | None:
    return next((edge.previous.live for edge in edges if edge.previous is not None), None)


def _switch_back(edges: Sequence[_Edge], listener: EdgeListener, owner: str) -> tuple[str, bool]:
    """Every switched node gets its previous markers back; what happened, node by node, and
    whether every node did."""
    failed: list[str] = []
    for edge in edges:
        assert edge.previous is not None
        try:
            swap_markers(edge.container, edge.previous.live, edge.previous.preview, owner)
        except Exception as exc:  # noqa: BLE001 - reported: the caller raises with it
            failed.append(f"{edge.node.name} ({exc})")
            continue
        if edge.previous.live in ("blue", "green"):
            with contextlib.suppress(RoutingError):
                confirm(listener.endpoint(edge.node), edge.previous.live, deadline_s=5.0)
    if failed:
        return f"switching back FAILED on {', '.join(failed)}: the edge may serve two colors", False
    names = ", ".join(edge.node.name for edge in edges)
    return f"switched back on every edge node ({names})", True
