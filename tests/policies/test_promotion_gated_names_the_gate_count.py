"""`promotion-gated` says how many gates it found when there is not exactly one.

tests/policies/test_promotion_gate_integrity.py checks that each mutated graph is refused by the
policy; a graph without a gate is also refused through the switch's `liveColor` (it cannot
come from a gate that is not there), which hid a gate-count check that no longer counted
zero. Here the gate-count violation itself is asserted, for zero gates and for two.
"""

from __future__ import annotations

import pytest

from policies.check import check_graph
from tests.support.gate_mutants import MUTANTS, POLICY
from tools.render import Graph, evaluate


@pytest.mark.parametrize(("mutant", "found"), [
    ("no gate", "found 0 (none)"), ("gate kind removed", "found 0 (none)"), ("two gates", "found 2"),
])
def test_the_gate_count_is_a_violation(mutant: str, found: str) -> None:
    graph = evaluate("prod")
    violations = check_graph(Graph(graph.stack, MUTANTS[mutant](graph), graph.outputs))
    messages = [v.message for v in violations if v.policy == POLICY and v.mandatory]
    assert any(m.startswith(f"exactly one promotion gate must exist, {found}") for m in messages), messages


def test_the_real_graph_has_no_gate_count_violation() -> None:
    graph = evaluate("prod")
    assert not any("exactly one promotion gate" in v.message for v in check_graph(graph))
