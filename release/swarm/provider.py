"""The Pulumi side of the Swarm switch: the dynamic provider and the `SwarmRouting` component.

Same contract as the single host's `Routing` (release/routing/provider.py): the live color
comes from the gate, create and update switch (here on every edge node, all or nothing), the
switch runs the post-promotion checks and switches back on failure, delete leaves traffic as
it is, and refresh reads what the proxies really serve. It carries the switch's `kind`
marker, and the `promotion-gated` policy knows this provider class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi.dynamic as dyn

from release.audit import Auditor, AuditTarget
from release.dynamic import StateProvider
from release.routing.base import SWITCH_KIND
from release.routing.listener import post_promotion_checker
from release.swarm.nodes import Node, served_on
from release.swarm.switch import EdgeListener, switch_edges
from release.swarm.work import SwarmHandoff
from render.nginx.routing import render_markers
from settings import Color

#: Inputs whose change re-applies the switch (a new proxy service spec: tasks may be new).
SWARM_SWITCH_INPUTS = ("liveColor", "previewColor", "proxyServiceId", "proxySpec", "edgeNodes",
                       "renderedFiles")


def _nodes(props: dict[str, Any]) -> list[Node]:
    return [Node.of(node) for node in props.get("edgeNodes") or ()]


def _listener(props: dict[str, Any]) -> EdgeListener:
    return EdgeListener(scheme=str(props["scheme"]), port=int(props["port"]),
                        host_header=props.get("hostHeader") or None, ca_file=props.get("caFile") or None,
                        insecure=bool(props.get("insecure")))


class SwarmRoutingProvider(StateProvider):
    """Create and update switch every edge node; diff never asks for a replace."""

    WATCHED = SWARM_SWITCH_INPUTS

    def resource_id(self, props: dict[str, Any]) -> str:
        return f"{props['proxyService']}-routing"

    def apply(self, props: dict[str, Any], olds: dict[str, Any] | None) -> dict[str, Any]:
        checks = bool(props.get("postPromotionChecks", True))
        handoff = SwarmHandoff.of(props.get("handoff"))
        result = switch_edges(
            _nodes(props), str(props["proxyService"]), cast(Color, props["liveColor"]),
            cast(Color | None, props.get("previewColor") or None), _listener(props),
            checker=post_promotion_checker(handoff is not None) if checks else None,
            handoff=handoff, audit=Auditor.for_target(AuditTarget.from_props(props.get("audit"))),
        )
        return {**props, "previousLiveColor": result.previous_live, "switchMs": round(result.switch_ms, 1),
                "handoffMs": None if result.handoff_ms is None else round(result.handoff_ms, 1)}

    def read(self, id_: str, props: dict[str, Any]) -> dyn.ReadResult:
        """Refresh reports the color every edge proxy serves (e.g. after an emergency switch).

        A split edge (nodes serving different colors) or an unreadable one keeps the recorded
        color: the release plan pins the live color from it, and guessing would unpin one.
        The gate sees the split itself (`spent`) and checks again before the next switch.
        """
        try:
            served = set(served_on(_nodes(props), str(props["proxyService"])).values())
        except Exception:  # noqa: BLE001 - nothing reachable: keep the recorded state
            return dyn.ReadResult(id_, props)
        if len(served) == 1 and (live := next(iter(served))) in ("blue", "green"):
            props = {**props, "liveColor": live}
        return dyn.ReadResult(id_, props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Leave traffic as it is: deleting the record must not take the site down."""

    def render_outputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {**inputs, "previousLiveColor": None, "switchMs": 0.0, "handoffMs": None}


@dataclass(frozen=True)
class SwarmRoutingArgs:
    proxy_service: str
    #: The proxy service's identity and spec version: new tasks get the choice applied again.
    proxy_service_id: pulumi.Input[str]
    proxy_spec: pulumi.Input[Any]
    edge_nodes: Sequence[Node]
    #: The color the gate approved.
    live_color: pulumi.Input[str]
    preview_color: pulumi.Input[str | None]
    scheme: str
    port: int
    #: The live site as users reach it (the policy requires the switch to probe one).
    public_url: str
    host_header: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    post_promotion_checks: bool = True
    #: Where the background work moves with the traffic (stack/swarm/data.py, `handoff_props`).
    handoff: dict[str, Any] | None = None
    #: Where the switch appends its records (release/audit.py `audit_target`; None: no trail).
    audit: dict[str, Any] | None = None


class SwarmRoutingSwitch(dyn.Resource):
    """The dynamic resource (type `pulumi-python:dynamic:Resource`, as the SDK names it)."""


def _rendered(colors: list[Any]) -> dict[str, str]:
    live, preview = colors
    return render_markers(cast(Color | None, live), cast(Color | None, preview))


class SwarmRouting(pulumi.ComponentResource):
    """Owns the live/preview choice inside every edge proxy."""

    def __init__(self, name: str, args: SwarmRoutingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("paper-trading:swarm:Routing", name, None, opts)
        props: dict[str, Any] = {
            "kind": SWITCH_KIND,
            "proxyService": args.proxy_service,
            "proxyServiceId": args.proxy_service_id,
            "proxySpec": args.proxy_spec,
            "edgeNodes": [node.props() for node in args.edge_nodes],
            "liveColor": args.live_color,
            "previewColor": args.preview_color,
            "scheme": args.scheme,
            "port": args.port,
            "publicUrl": args.public_url,
            "hostHeader": args.host_header,
            "caFile": args.ca_file,
            "insecure": args.insecure,
            "postPromotionChecks": args.post_promotion_checks,
            "handoff": args.handoff,
            "audit": args.audit,
            "renderedFiles": pulumi.Output.all(args.live_color, args.preview_color).apply(_rendered),
        }
        self.switch = SwarmRoutingSwitch(
            SwarmRoutingProvider(), f"{name}-switch", props, opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({})
