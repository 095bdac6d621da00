"""`promotion-gated` (issue 20, item 3): the routing switch must be able to switch back.

The switch runs its post-promotion checks through `publicUrl` and switches back when they
fail; with `postPromotionChecks` off, or no usable `publicUrl` (the provider then has no
endpoint and skips the checks), a broken color would stay live. The stack policy refuses
both at `pulumi preview`, failing closed on a missing, malformed or unknown value. Each case
is one property of the real program's rendered switch changed; the verdict is read from the
structured violations (policy, level, resource), not from a listing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from policies.check import check_graph
from policies.harness import Analyzer, Violation
from policies.rules import STACK_POLICIES
from tests.support import rendered
from tools.render import UNKNOWN, Graph, Resource

POLICY = "promotion-gated"
SWITCH = "routing-switch"
DROP = object()


def _with_switch(graph: Graph, key: str, value: Any) -> Graph:
    """The graph with one input of the routing switch replaced (or removed with DROP)."""
    out: list[Resource] = []
    for resource in graph.resources:
        if resource.name == SWITCH:
            wire = {k: v for k, v in resource.wire.items() if k != key}
            if value is not DROP:
                wire[key] = value
            resource = replace(resource, wire=wire, inputs=wire)
        out.append(resource)
    return Graph(graph.stack, out, graph.outputs)


def _gated(graph: Graph) -> list[Violation]:
    return [v for v in Analyzer(STACK_POLICIES).analyze_stack(graph.resources) if v.policy == POLICY]


def _mandatory_policies(graph: Graph) -> set[str]:
    return {v.policy for v in check_graph(graph) if v.mandatory}


@pytest.mark.parametrize("stack", ["prod", "ci"])
def test_the_rendered_switch_passes(stack: str) -> None:
    graph = rendered(stack)
    switch = graph.by_name(SWITCH)
    assert switch.inputs["postPromotionChecks"] is True
    assert str(switch.inputs["publicUrl"]).startswith(("http://", "https://"))
    assert _gated(graph) == []
    assert POLICY not in _mandatory_policies(graph)


BAD_URLS: dict[str, Any] = {
    "empty": "",
    "blank": "   ",
    "missing": DROP,
    "null": None,
    "ftp": "ftp://x",
    "no-scheme": "paper.example.com",
    "no-host": "https://",
    "path-only": "http:///health",
    "bad-port": "https://paper.example.com:99999",
    "number": 443,
    "list": ["https://paper.example.com"],
}


@pytest.mark.parametrize("case", sorted(BAD_URLS))
def test_a_switch_without_a_usable_public_url_is_refused(case: str) -> None:
    graph = _with_switch(rendered("prod"), "publicUrl", BAD_URLS[case])
    switch = graph.by_name(SWITCH)
    (violation,) = _gated(graph)
    assert violation.level == "mandatory"
    assert violation.urn == switch.urn
    assert violation.message.startswith(f"{SWITCH}.publicUrl "), violation.message
    # Nothing else in the pack objects: this policy alone stands between the graph and `up`.
    assert _mandatory_policies(graph) == {POLICY}


def test_an_unknown_public_url_is_refused() -> None:
    """At preview an output-computed URL is unknown: the policy cannot check it, so it refuses."""
    graph = _with_switch(rendered("prod"), "publicUrl", UNKNOWN)
    (violation,) = _gated(graph)
    assert violation.level == "mandatory"
    assert violation.urn == graph.by_name(SWITCH).urn
    prefix = f"{SWITCH}.publicUrl can't be known during preview"
    assert violation.message.startswith(prefix), violation.message
    assert _mandatory_policies(graph) == {POLICY}


@pytest.mark.parametrize("value", [False, DROP, None, "true", 1, UNKNOWN],
                         ids=["false", "missing", "null", "string", "one", "unknown"])
def test_post_promotion_checks_must_be_literally_true(value: Any) -> None:
    graph = _with_switch(rendered("prod"), "postPromotionChecks", value)
    (violation,) = _gated(graph)
    assert violation.level == "mandatory"
    assert violation.urn == graph.by_name(SWITCH).urn
    assert violation.message.startswith(f"{SWITCH}.postPromotionChecks "), violation.message
    assert _mandatory_policies(graph) == {POLICY}
