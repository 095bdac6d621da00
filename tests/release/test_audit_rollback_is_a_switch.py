"""`security.audit_log`: a rollback is a switch; the newest successful one decides the live color.

tests/release/test_audit.py's trails end in a `switch` or an `emergency-switch`. After a gated switch
to blue, a successful `rollback` to green makes green live: the check for green passes and the
check for blue names the rollback's color. Without `rollback` among the switches the trail
would still say blue is live. And only a *passed* gate verdict after an emergency switch
reviews it (a refused or failed one does not).
"""

from __future__ import annotations

from tests.support.audit_trail import _check, _line


def _trail() -> list[str]:
    return [
        _line("gate", "ok", "green"), _line("switch", "ok", "green"),
        _line("gate", "ok", "blue"), _line("switch", "ok", "blue"),
        _line("rollback", "ok", "green"),
    ]


def test_after_a_rollback_the_rolled_back_to_color_is_live() -> None:
    problems, details = _check(_trail(), "green")
    assert problems == []
    assert details["switch_line"] == 5


def test_after_a_rollback_the_rolled_back_from_color_is_not_live() -> None:
    problems, _ = _check(_trail(), "blue")
    assert problems == ["the newest successful switch made green live, not blue"]


def test_a_failed_rollback_changes_nothing() -> None:
    trail = [*_trail()[:4], _line("rollback", "failed", "green")]
    assert _check(trail, "blue")[0] == []
    assert _check(trail, "green")[0] == ["the newest successful switch made blue live, not green"]


def test_only_a_passed_gate_verdict_after_an_emergency_switch_reviews_it() -> None:
    """An emergency switch to green, then a refused or failed gate for green: still unreviewed."""
    for verdict in ("refused", "failed"):
        trail = [_line("gate", "ok", "blue"), _line("switch", "ok", "blue"),
                 _line("emergency-switch", "ok", "green"), _line("gate", verdict, "green")]
        problems, details = _check(trail, "green")
        assert [e["line"] for e in details["unreviewed_emergency"]] == [3], verdict
        assert any(p.startswith("emergency switch to green") for p in problems), problems
    trail = [*trail[:3], _line("gate", "ok", "green")]
    assert _check(trail, "green")[1]["unreviewed_emergency"] == []


def test_with_a_stack_only_that_stacks_records_count() -> None:
    """Another stack's newer switch (same trail, e.g. one Loki) says nothing about this stack."""
    from release.audit import AuditRecord

    other = AuditRecord(actor="a", stack="dev", operation="switch", result="ok",
                        duration_ms=1, to="blue").line()
    trail = [_line("gate", "ok", "green"), _line("switch", "ok", "green"), other]
    from validation.checks_audit import audit_findings

    assert audit_findings(trail, "green", "prod")[0] == []
    assert audit_findings(trail, "blue", "dev")[0] == ["no passed gate verdict for blue before its switch"]
