"""Swarm services are judged by the container rules: each mutant of the swarm stack's real graph is refused.

The graph is the swarm lab stack rendered offline from the real program (tools/render.py); each
mutant changes one thing in one service, the way a hand-written or patched program could, and
the pack must refuse it under the rule that owns that thing (and only mandatory ones named).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from pulumi.dynamic.dynamic import serialize_provider

from policies.check import check_graph
from policies.rules import POLICIES
from policies.services import SERVICE, SERVICE_RULES
from release.swarm.provider import SwarmRoutingProvider
from tests.support.gate_mutants import MUTANTS as GATE_MUTANTS
from tests.support.gate_mutants import POLICY as GATE_POLICY
from tools.render import UNKNOWN, Graph, evaluate

STACK = "swarmlab"


@pytest.fixture(scope="module")
def graph() -> Graph:
    return evaluate(STACK)


def _spec(resource_inputs: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = resource_inputs["taskSpec"]["containerSpec"]
    return spec


def _set_env(key: str, value: str) -> Callable[[dict[str, Any]], None]:
    def mutate(inputs: dict[str, Any]) -> None:
        _spec(inputs)["env"][key] = value
    return mutate


def _spec_set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(inputs: dict[str, Any]) -> None:
        _spec(inputs)[key] = value
    return mutate


def _drop_label(label: str) -> Callable[[dict[str, Any]], None]:
    def mutate(inputs: dict[str, Any]) -> None:
        _spec(inputs)["labels"] = [e for e in _spec(inputs)["labels"] if e["label"] != label]
    return mutate


def _ingress(inputs: dict[str, Any]) -> None:
    for port in inputs["endpointSpec"]["ports"]:
        port["publishMode"] = "ingress"


def _app_publishes(inputs: dict[str, Any]) -> None:
    inputs["endpointSpec"]["ports"] = [{"targetPort": 3000, "publishedPort": 3000, "publishMode": "host"}]


def _one_more_port(inputs: dict[str, Any]) -> None:
    ports = inputs["endpointSpec"]["ports"]
    ports.append({"targetPort": 9091, "publishedPort": 29091, "publishMode": "host"})


def _docker_socket(inputs: dict[str, Any]) -> None:
    _spec(inputs)["mounts"].append({"type": "bind", "source": "/var/run/docker.sock",
                                    "target": "/var/run/docker.sock"})


def _no_memory(inputs: dict[str, Any]) -> None:
    inputs["taskSpec"]["resources"] = {}


def _restart_forever(inputs: dict[str, Any]) -> None:
    inputs["taskSpec"]["restartPolicy"] = {"condition": "any"}


# (mutant, the service it changes, the rules that must refuse it: `|`-separated)
MUTANTS: list[tuple[str, str, Callable[[dict[str, Any]], None], str]] = [
    ("paper-mode-off", "blue", _set_env("PAPER_TRADING_MODE", "false"), "paper-trading-mode"),
    ("real-trades-on", "green", _set_env("ALLOW_REAL_TRADES", "true"), "paper-trading-mode"),
    ("mode-respelt", "blue", _set_env("paper_trading_mode", "false"), "paper-trading-mode"),
    ("trade-key", "green", _set_env("BINANCE_PERMISSIONS", "TRADE"), "read-only-exchange-keys"),
    ("color-label-gone", "blue", _drop_label("paper-trading.color"),
     "paper-trading-mode|app-containers-labelled"),
    ("caps-kept", "blue", _spec_set("capDrops", None), "container-capabilities-dropped"),
    ("cap-added", "green", _spec_set("capAdds", ["SYS_ADMIN"]), "container-capabilities-dropped"),
    ("writable-root", "blue", _spec_set("readOnly", False), "container-read-only-rootfs"),
    ("latest-image", "green", _spec_set("image", "paper-trading-reference-app:latest"),
     "container-image-pinned"),
    ("docker-socket", "proxy", _docker_socket, "container-no-sensitive-mounts"),
    ("no-memory-limit", "proxy", _no_memory, "container-memory-limit"),
    ("old-nginx", "proxy", _spec_set("image", "nginx:1.18.0"), "proxy-image-current"),
    ("ingress-mesh", "proxy", _ingress, "service-ports-host-mode"),
    ("app-publishes", "blue", _app_publishes, "service-ports-host-mode"),
    ("signal-publishes-two", "signal", _one_more_port, "service-ports-host-mode"),
    ("signal-on-the-mesh", "signal", _ingress, "service-ports-host-mode"),
    ("signal-writable-root", "signal", _spec_set("readOnly", False), "container-read-only-rootfs"),
    ("signal-cap-added", "signal", _spec_set("capAdds", ["NET_ADMIN"]), "container-capabilities-dropped"),
]


def _mutated(graph: Graph, name: str, mutate: Callable[[dict[str, Any]], None]) -> Graph:
    resources = copy.deepcopy(graph.resources)
    target = next(r for r in resources if r.type == SERVICE and r.name == name)
    mutate(target.inputs)
    return Graph(graph.stack, resources, graph.outputs)


def test_the_swarm_stack_passes_as_built(graph: Graph) -> None:
    assert graph.of_type(SERVICE), "the swarm stack renders no service"
    assert [v.line() for v in check_graph(graph) if v.mandatory] == []


@pytest.mark.parametrize(("mutant", "service", "mutate", "policy"), MUTANTS, ids=[m[0] for m in MUTANTS])
def test_each_mutant_is_refused_by_its_rule(graph: Graph, mutant: str, service: str,
                                            mutate: Callable[[dict[str, Any]], None], policy: str) -> None:
    violations = [v for v in check_graph(_mutated(graph, service, mutate)) if v.mandatory]
    assert {v.policy for v in violations} == set(policy.split("|")), [v.line() for v in violations]
    assert {v.name for v in violations} == {service}


def test_restart_forever_is_advised_against(graph: Graph) -> None:
    advisories = {(v.policy, v.name) for v in check_graph(_mutated(graph, "green", _restart_forever))}
    assert ("container-restart-bounded", "green") in advisories


def test_an_unknown_env_value_fails_closed(graph: Graph) -> None:
    violations = [v for v in check_graph(_mutated(graph, "blue", _set_env("PAPER_TRADING_MODE", UNKNOWN)))
                  if v.mandatory]
    assert "paper-trading-mode" in {v.policy for v in violations}


def test_every_service_rule_names_a_policy() -> None:
    assert {p.name for p in POLICIES} >= SERVICE_RULES


@pytest.mark.parametrize("mutant", sorted(GATE_MUTANTS))
def test_the_swarm_graph_with_its_gate_bypassed_is_refused(graph: Graph, mutant: str) -> None:
    """The promotion-gated mutants of the single host, applied to the swarm stack's graph."""
    mutated = Graph(graph.stack, GATE_MUTANTS[mutant](graph), graph.outputs)
    assert {v.policy for v in check_graph(mutated) if v.mandatory} == {GATE_POLICY}


def test_the_swarm_switch_provider_is_a_switch(graph: Graph) -> None:
    switch = graph.by_name("routing-switch")
    pickled = serialize_provider(SwarmRoutingProvider())
    wire = {**switch.wire, "__provider": pickled}
    assert [v.line() for v in check_graph(_with_switch(graph, wire)) if v.mandatory] == []
    # ... and a gate's kind on it does not pass for one.
    wire = {**wire, "kind": "paper-trading:promotion-gate"}
    assert {v.policy for v in check_graph(_with_switch(graph, wire)) if v.mandatory} == {GATE_POLICY}


def _with_switch(graph: Graph, wire: dict[str, Any]) -> Graph:
    resources = [replace(r, wire=wire, inputs=wire) if r.name == "routing-switch" else r
                 for r in graph.resources]
    return Graph(graph.stack, resources, graph.outputs)
