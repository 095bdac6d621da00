"""`security.firewall`'s verdict per probed port: a public port must be `open`; any other port must not be.

A refused public port (RST: nothing listens, or a reject rule) is as broken as a dropped one
(timeout); a closed port that answers is the only failure on that side.
"""

from __future__ import annotations

import pytest

from validation.checks_security import firewall_findings


@pytest.mark.parametrize("state", ["refused", "timeout", "error: unreachable"])
def test_a_public_port_that_is_not_open_is_a_problem(state: str) -> None:
    assert firewall_findings({80: "open", 443: state}, (80, 443), ()) == [
        f"public port 443 does not answer ({state})"]


@pytest.mark.parametrize("state", ["refused", "timeout"])
def test_a_closed_port_that_does_not_answer_is_fine(state: str) -> None:
    assert firewall_findings({80: "open", 22: state}, (80,), (22,)) == []


def test_a_closed_port_that_answers_is_a_problem() -> None:
    assert firewall_findings({80: "open", 5432: "open"}, (80,), (5432,)) == [
        "port 5432 answers from outside; only [80] may"]
