"""`monitoring-segmented` (resource) and `monitoring-segmented-graph` (stack) on the rendered graphs
and on mutants of them (issue 13, item 1): no app container on a network with Prometheus,
Alertmanager, Loki or Grafana; unknown or computed network names fail closed.

Policies run as the engine runs them (pulumi_policy's analyzer, policies/harness.py); results
are compared as (policy, resource, level) and, for the graph rule, as the exact
(container, network, control plane) findings.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from dataclasses import replace
from typing import Any

import pytest
from pulumi_policy.deserialize import deserialize_properties

from policies.check import check_graph
from policies.harness import Analyzer, Violation
from policies.rules import ALL_POLICIES
from policies.segmentation import Shared, shared_networks
from tests.support import rendered
from tools.render import UNKNOWN, Graph, Resource, stack_names

RULE = "monitoring-segmented"
GRAPH_RULE = "monitoring-segmented-graph"
OURS = (RULE, GRAPH_RULE)
CONTROL_PLANE = ("prometheus", "alertmanager", "grafana", "loki")


def _labels(res: Resource) -> dict[str, str]:
    return res.label_map


def _service(graph: Graph, service: str) -> Resource:
    return next(r for r in graph.containers if _labels(r).get("paper-trading.service") == service)


def _app(graph: Graph) -> Resource:
    return next(r for r in graph.containers if _labels(r).get("paper-trading.role") == "app")


def _mutate(res: Resource, change: Callable[[dict[str, Any]], None]) -> Resource:
    wire = deepcopy(res.wire)
    change(wire)
    return replace(res, wire=wire, inputs=deserialize_properties(wire))


def _graph_with(graph: Graph, res: Resource, change: Callable[[dict[str, Any]], None]) -> list[Resource]:
    mutated = _mutate(res, change)
    return [mutated if r.urn == res.urn else r for r in graph.resources]


def _join(network: str) -> Callable[[dict[str, Any]], None]:
    def change(wire: dict[str, Any]) -> None:
        wire["networksAdvanced"] = [*wire["networksAdvanced"], {"name": network}]
    return change


def _ours(found: list[Violation]) -> set[tuple[str, str, str]]:
    return {(v.policy, v.name, v.level) for v in found if v.policy in OURS}


def _shared(resources: list[Resource]) -> list[Shared]:
    return shared_networks((str(r.inputs["name"]), r.inputs) for r in resources
                           if r.type == "docker:index/container:Container")


# --------------------------------------------------------------------------- the real graphs


@pytest.mark.parametrize("stack", stack_names())
def test_rendered_stack_is_segmented(stack: str) -> None:
    graph = rendered(stack)
    assert _shared(graph.resources) == []
    assert _ours(check_graph(graph)) == set()


def test_the_rule_sees_apps_and_the_control_plane() -> None:
    """Guards against a vacuous pass: the rendered graph has apps and all four control-plane services."""
    graph = rendered("prod")
    services = {_labels(r).get("paper-trading.service") for r in graph.containers}
    assert {"prometheus", "alertmanager", "grafana", "loki"} <= services
    apps = [r for r in graph.containers if _labels(r).get("paper-trading.role") == "app"]
    # 4 replicas, and their 4 never-started carriers (stack/carrier.py), on backend only.
    assert sum(1 for r in apps if "paper-trading.carrier-for" not in _labels(r)) == 4
    assert {n["name"] for r in apps if "paper-trading.carrier-for" in _labels(r)
            for n in r.inputs["networksAdvanced"]} == {"paper-trading-backend"}


# --------------------------------------------------------------------------- mutants


@pytest.mark.parametrize("network", ["paper-trading-monitoring", "paper-trading-metrics"])
def test_app_on_a_control_plane_network_is_refused(network: str) -> None:
    graph = rendered("prod")
    app = _app(graph)
    resources = _graph_with(graph, app, _join(network))
    found = Analyzer(ALL_POLICIES).run(resources)
    assert (RULE, app.name, "mandatory") in _ours(found)
    (message,) = [v.message for v in found if v.policy == RULE and v.name == app.name]
    assert f"joins network {network!r}" in message
    on_net = sorted(_labels(r)["paper-trading.service"] for r in graph.containers
                    if network in [n["name"] for n in r.inputs.get("networksAdvanced") or []]
                    and _labels(r)["paper-trading.service"] in CONTROL_PLANE)
    assert _shared(resources) == [Shared(app.inputs["name"], network, tuple(on_net))]
    assert [v.message for v in found if v.policy == GRAPH_RULE] == [_shared(resources)[0].message()]


def test_control_plane_on_an_app_network_is_refused() -> None:
    graph = rendered("prod")
    for service in ("prometheus", "alertmanager", "grafana", "loki"):
        res = _service(graph, service)
        resources = _graph_with(graph, res, _join("paper-trading-frontend"))
        found = Analyzer(ALL_POLICIES).run(resources)
        apps = sorted(str(r.inputs["name"]) for r in graph.containers
                      if _labels(r).get("paper-trading.role") == "app"
                      and "paper-trading.carrier-for" not in _labels(r))
        assert (RULE, res.name, "mandatory") in _ours(found), service
        assert [(s.container, s.network) for s in _shared(resources)] == [
            (name, "paper-trading-frontend") for name in apps], service


def test_an_app_without_its_role_label_is_still_an_app() -> None:
    graph = rendered("prod")
    app = _app(graph)

    def change(wire: dict[str, Any]) -> None:
        wire["labels"] = [e for e in wire["labels"] if e["label"] != "paper-trading.role"]
        _join("paper-trading-monitoring")(wire)

    found = Analyzer(ALL_POLICIES).run(_graph_with(graph, app, change))
    assert (RULE, app.name, "mandatory") in _ours(found)
    assert (GRAPH_RULE, "prod", "mandatory") in _ours(found)


@pytest.mark.parametrize("case", ["computed-name", "unknown-suffix", "network-mode"])
def test_unknown_or_unexpected_networks_fail_closed(case: str) -> None:
    graph = rendered("prod")
    app = _app(graph)
    change = {
        "computed-name": _join(UNKNOWN),
        "unknown-suffix": _join("paper-trading-scrape"),
        "network-mode": lambda wire: wire.__setitem__("networkMode", "container:paper-trading-prometheus"),
    }[case]
    found = Analyzer(ALL_POLICIES).analyze(_mutate(app, change))
    assert (RULE, app.name, "mandatory") in _ours(found), [v.line() for v in found]


@pytest.mark.parametrize("mode", ["bridge", "default", ""])
def test_the_providers_default_network_mode_is_not_a_network(mode: str) -> None:
    """Under the real engine the provider fills in networkMode=bridge (detached before start)."""
    graph = rendered("prod")
    for res in (_app(graph), _service(graph, "alertmanager")):
        found = Analyzer(ALL_POLICIES).analyze(_mutate(res, lambda w: w.__setitem__("networkMode", mode)))
        assert (RULE, res.name, "mandatory") not in _ours(found)


def test_a_network_mode_naming_a_control_plane_network_counts() -> None:
    graph = rendered("prod")
    app = _app(graph)
    resources = _graph_with(graph, app, lambda w: w.__setitem__("networkMode", "paper-trading-monitoring"))
    assert (RULE, app.name, "mandatory") in _ours(Analyzer(ALL_POLICIES).run(resources))
    assert [(s.container, s.network) for s in _shared(resources)] == [
        (app.inputs["name"], "paper-trading-monitoring")]


def test_graph_rule_fails_closed_on_a_computed_network() -> None:
    graph = rendered("prod")
    found = Analyzer(ALL_POLICIES).analyze_stack(_graph_with(graph, _app(graph), _join(UNKNOWN)))
    assert [(v.policy, v.level) for v in found if v.policy == GRAPH_RULE] == [(GRAPH_RULE, "mandatory")]
    assert "fail closed" in next(v.message for v in found if v.policy == GRAPH_RULE)


def test_overlapping_suffix_config_fails_closed() -> None:
    """A pack config that lets the two network sets meet is itself a violation on every app."""
    graph = rendered("prod")
    config = {RULE: {"appNetworkSuffixes": ["-frontend", "-backend", "-monitoring"]}}
    found = Analyzer(ALL_POLICIES, pack_config=config).analyze(_app(graph))
    messages = [v.message for v in found if v.policy == RULE]
    assert len(messages) == 1 and "disjoint" in messages[0], messages
