"""The Pulumi side: the dill-pickled dynamic provider, its arguments and the `Routing` component.

The SDK pickles the provider by reference to its class's module and name,
`release.routing.provider.RoutingProvider`; the `promotion-gated` policy reads that name
from the pickle. Stacks deployed before it moved here name `release.routing.RoutingProvider`,
which the package still exports so their state unpickles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi.dynamic as dyn

from release.audit import Auditor, AuditTarget
from release.dynamic import StateProvider
from release.handoff import HandoffTarget
from release.routing.base import SWITCH_INPUTS, SWITCH_KIND, Endpoint
from release.routing.docker_side import current, live_color_of
from release.routing.listener import post_promotion_checker
from release.routing.switching import switch
from render.nginx.routing import render_markers
from settings import Color


def _endpoint(props: dict[str, Any]) -> Endpoint | None:
    url = props.get("publicUrl")
    if not url:
        return None
    return Endpoint(
        url=str(url), ca_file=props.get("caFile") or None, insecure=bool(props.get("insecure")),
        host_header=props.get("hostHeader") or None, probe_path=str(props.get("probePath") or "/health"),
    )


def _apply_props(props: dict[str, Any]) -> dict[str, Any]:

    live = cast(Color, props["liveColor"])
    preview = cast(Color | None, props.get("previewColor") or None)
    handoff = HandoffTarget.from_props(props.get("handoff"))
    checks = bool(props.get("postPromotionChecks", True))
    result = switch(
        str(props["proxyContainerName"]), live, preview, _endpoint(props),
        checker=post_promotion_checker(handoff is not None) if checks else None,
        audit=Auditor.for_target(AuditTarget.from_props(props.get("audit"))),
        handoff=handoff,
    )
    handoff_ms = None if result.handoff_ms is None else round(result.handoff_ms, 1)
    return {**props, "previousLiveColor": result.previous_live, "switchMs": round(result.switch_ms, 1),
            "handoffMs": handoff_ms}


class RoutingProvider(StateProvider):
    """CRUD for the routing choice: create and update switch; diff never asks for a replace."""

    WATCHED = SWITCH_INPUTS

    def resource_id(self, props: dict[str, Any]) -> str:
        return f"{props['proxyContainerName']}-routing"

    def apply(self, props: dict[str, Any], olds: dict[str, Any] | None) -> dict[str, Any]:
        return _apply_props(props)

    def read(self, id_: str, props: dict[str, Any]) -> dyn.ReadResult:
        """Refresh reports the color the proxy really serves (e.g. after an emergency switch)."""
        try:
            live = live_color_of(current(str(props["proxyContainerName"])))
        except Exception:  # noqa: BLE001 - no engine or no proxy: keep the recorded state
            return dyn.ReadResult(id_, props)
        if live in ("blue", "green"):
            props = {**props, "liveColor": live}
        return dyn.ReadResult(id_, props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Leave traffic as it is: deleting the record must not take the site down."""

    def render_outputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Offline stand-in for create (tools/render.py): what create would report, no engine."""
        return {**inputs, "previousLiveColor": None, "switchMs": 0.0, "handoffMs": None}



@dataclass(frozen=True)
class RoutingArgs:
    proxy_container_name: pulumi.Input[str]
    #: The proxy's identity: a replaced proxy (bootstrap routing) gets the choice applied again.
    proxy_container_id: pulumi.Input[str]
    #: The color the gate approved.
    live_color: pulumi.Input[str]
    preview_color: pulumi.Input[str | None]
    public_url: pulumi.Input[str]
    ca_file: str | None = None
    insecure: bool = False
    host_header: str | None = None
    probe_path: str = "/health"
    post_promotion_checks: bool = True
    #: Where switches are recorded (`AuditTarget.props()`); None: not recorded.
    audit: dict[str, Any] | None = None
    #: Where the background work is handed over (`HandoffTarget.props()`); None: traffic only.
    handoff: dict[str, Any] | None = None


class RoutingSwitch(dyn.Resource):
    """The dynamic resource (type `pulumi-python:dynamic:Resource`, as the SDK names it)."""


def _rendered(colors: list[Any]) -> dict[str, str]:
    live, preview = colors
    return render_markers(cast(Color | None, live), cast(Color | None, preview))


class Routing(pulumi.ComponentResource):
    """Owns the live/preview choice inside the running proxy (one small update per switch)."""

    def __init__(self, name: str, args: RoutingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("paper-trading:routing:Routing", name, None, opts)
        props: dict[str, Any] = {
            "kind": SWITCH_KIND,
            "proxyContainerName": args.proxy_container_name,
            "proxyContainerId": args.proxy_container_id,
            "liveColor": args.live_color,
            "previewColor": args.preview_color,
            "publicUrl": args.public_url,
            "caFile": args.ca_file,
            "insecure": args.insecure,
            "hostHeader": args.host_header,
            "probePath": args.probe_path,
            "postPromotionChecks": args.post_promotion_checks,
            "audit": args.audit,
            "handoff": args.handoff,
            "renderedFiles": pulumi.Output.all(args.live_color, args.preview_color).apply(_rendered),
        }
        self.switch = RoutingSwitch(
            RoutingProvider(), f"{name}-switch", props, opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({})
