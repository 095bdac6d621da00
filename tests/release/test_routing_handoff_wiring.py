"""The program wires the background-work handoff into the routing switch (issue 20, item 6d).

Offline: tools/render evaluates the real `__main__.py` under the Pulumi mock runtime. With
workers on (every committed stack) the routing switch's `handoff` input must name this
stack's own Redis and RabbitMQ containers (found in the same graph by their service label)
and the configured `workers.handoffTimeoutSeconds`; with workers off it must be absent, so the
switch moves traffic only. Before this test only the slow engine tests noticed a program that
built the switch without `handoff=`.
"""

from __future__ import annotations

import pytest

from tests.support import render_with, rendered
from tools.render import Graph

SWITCH = "routing-switch"
SERVICE = "paper-trading.service"


def _container_named_by_service(graph: Graph, service: str) -> str:
    (name,) = [c.inputs["name"] for c in graph.containers if c.label_map.get(SERVICE) == service]
    return str(name)


def _handoff(graph: Graph) -> object:
    return graph.by_name(SWITCH).inputs.get("handoff")


@pytest.mark.parametrize("stack", ["ci", "prod"])
def test_the_switch_hands_the_work_to_this_stacks_datastores(stack: str) -> None:
    graph = rendered(stack)
    assert _handoff(graph) == {
        "redisContainer": _container_named_by_service(graph, "redis"),
        "rabbitmqContainer": _container_named_by_service(graph, "rabbitmq"),
        "timeoutS": 15.0,  # workers.handoffTimeoutSeconds' default: no committed stack sets it
        "queues": ["paper-trading.orders"],  # workers.queues' default: every consumer on them is checked
    }


def test_the_configured_handoff_timeout_reaches_the_switch() -> None:
    graph = render_with("ci", workers={"handoffTimeoutSeconds": 42})
    handoff = _handoff(graph)
    assert isinstance(handoff, dict)
    assert handoff["timeoutS"] == 42.0
    assert handoff["redisContainer"] == _container_named_by_service(graph, "redis")


def test_the_configured_work_queues_reach_the_switch() -> None:
    """The handoff counts every consumer on exactly these queues (issue 20, item 7)."""
    graph = render_with("ci", workers={"queues": ["paper-trading.orders", "paper-trading.eod"]})
    handoff = _handoff(graph)
    assert isinstance(handoff, dict)
    assert handoff["queues"] == ["paper-trading.orders", "paper-trading.eod"]


@pytest.mark.parametrize("stack", ["ci", "prod"])
def test_without_workers_the_switch_moves_traffic_only(stack: str) -> None:
    graph = render_with(stack, workers={"enabled": False})
    assert _handoff(graph) is None
    assert graph.by_name(SWITCH).inputs["liveColor"] in ("blue", "green")
