"""Mutated graphs that bypass the promotion gate, and the policy that must refuse each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pulumi.dynamic.dynamic import serialize_provider

from release.gate import GATE_KIND
from release.routing.provider import RoutingProvider
from tools.render import UNKNOWN, Graph, Resource

POLICY = "promotion-gated"

def _mutate(graph: Graph, name: str, *, inputs: dict[str, Any] | None = None,
            options: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> list[Resource]:
    out = []
    for resource in graph.resources:
        if resource.name == name:
            wire = {k: v for k, v in {**resource.wire, **(inputs or {})}.items() if k not in drop}
            resource = replace(resource, wire=wire, inputs=wire,
                               options={**resource.options, **(options or {})})
        out.append(resource)
    return out

def _docker_resource(graph: Graph) -> Resource:
    """A container (single host) or a service (swarm): some resource that is not the gate."""
    return next(r for r in graph.resources if r.type in ("docker:index/container:Container",
                                                         "docker:index/service:Service"))


def _gate_options(graph: Graph, **over: Any) -> dict[str, Any]:
    return {"options": {**graph.by_name("promotion-gate").wire["options"], **over}}

MUTANTS: dict[str, Callable[[Graph], list[Resource]]] = {
    "gate disabled": lambda g: _mutate(g, "promotion-gate", inputs={"enabled": False}),
    "gate enabled unknown": lambda g: _mutate(g, "promotion-gate", inputs={"enabled": UNKNOWN}),
    "gate enabled missing": lambda g: _mutate(g, "promotion-gate", drop=("enabled",)),
    "gate skips a safety check": lambda g: _mutate(
        g, "promotion-gate", inputs=_gate_options(g, skip=["safety.paper_trading_mode"])),
    "gate skips a health check": lambda g: _mutate(
        g, "promotion-gate", inputs=_gate_options(g, skip=["performance.p95_latency", "health.ready"])),
    "gate skip list unknown": lambda g: _mutate(g, "promotion-gate", inputs=_gate_options(g, skip=UNKNOWN)),
    "gate skip is a string": lambda g: _mutate(g, "promotion-gate", inputs=_gate_options(g, skip="safety.x")),
    "gate options unknown": lambda g: _mutate(g, "promotion-gate", inputs={"options": UNKNOWN}),
    "no gate": lambda g: [r for r in g.resources if r.name != "promotion-gate"],
    "two gates": lambda g: [*g.resources, replace(g.by_name("promotion-gate"), name="gate-2",
                                                  urn=g.by_name("promotion-gate").urn + "-2")],
    "gate kind removed": lambda g: _mutate(g, "promotion-gate", drop=("kind",)),
    "gate provider swapped": lambda g: _mutate(
        g, "promotion-gate", inputs={"__provider": serialize_provider(RoutingProvider())}),
    "switch kind removed": lambda g: _mutate(g, "routing-switch", drop=("kind",)),
    "gate provider unreadable": lambda g: _mutate(g, "promotion-gate", inputs={"__provider": "!!"}),
    "gate provider unknown": lambda g: _mutate(g, "promotion-gate", inputs={"__provider": UNKNOWN}),
    "live color from the config": lambda g: _mutate(
        g, "routing-switch", options={"propertyDependencies": {}}),
    "live color from another resource": lambda g: _mutate(
        g, "routing-switch", options={"propertyDependencies": {"liveColor": [_docker_resource(g).urn]}}),
    "post-promotion checks off": lambda g: _mutate(
        g, "routing-switch", inputs={"postPromotionChecks": False}),
    "no routing switch": lambda g: [r for r in g.resources if r.name != "routing-switch"],
    "switch kind says gate": lambda g: _mutate(g, "routing-switch", inputs={"kind": GATE_KIND}),
}
