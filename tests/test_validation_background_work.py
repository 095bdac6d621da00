"""safety.background_work (issue 15, part D): only the live color consumes and schedules.

The rules are unit-tested on contract documents, then proven end to end against the real
reference app: with its work disabled, and with real local Redis (one `redis-server` per
module) where the app really takes, holds and releases the lease, and with the fault
`ignore_lease` really runs its scheduler without it.
"""

from __future__ import annotations

from typing import Any

import pytest

from validation.checks_work import (
    WORK_FIELDS,
    WorkState,
    judge_active,
    judge_standby,
    parse_work_state,
)
from validation.runner import CheckFailed


def doc(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "color": "green", "role": "standby", "epoch": 3, "liveColor": "blue", "consumers": [], "schedulers": [],
    }
    body.update(over)
    return body


def state(**over: Any) -> WorkState:
    return parse_work_state(doc(**over))


# ----------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("field", WORK_FIELDS)
def test_a_missing_contract_field_fails_naming_it(field: str) -> None:
    body = doc()
    del body[field]
    with pytest.raises(CheckFailed) as caught:
        parse_work_state(body)
    assert caught.value.details["missing"] == [field]
    assert field in caught.value.message and "does not implement" in caught.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("role", "leader"), ("role", None), ("role", True),
        ("epoch", "3"), ("epoch", -1), ("epoch", True), ("epoch", 2.5),
        ("liveColor", "red"), ("liveColor", ""), ("liveColor", 1),
        ("consumers", "paper-trading.orders"), ("consumers", [1]), ("consumers", [""]), ("consumers", None),
        ("schedulers", {"strategy-tick": True}), ("schedulers", None),
    ],
)
def test_a_malformed_contract_field_fails_naming_it(field: str, value: Any) -> None:
    with pytest.raises(CheckFailed) as caught:
        parse_work_state(doc(**{field: value}))
    (problem,) = caught.value.details["malformed"]
    assert problem.startswith(f"{field} is {value!r}")


def test_well_formed_documents_parse() -> None:
    parsed = parse_work_state(doc(role="active", epoch=0, liveColor=None, consumers=["q"], schedulers=["s"]))
    assert parsed.details() == {
        "role": "active", "epoch": 0, "liveColor": None, "consumers": ["q"], "schedulers": ["s"],
    }
    assert parse_work_state(doc(epoch=None, instance="green-1")).instance == "green-1"


# ----------------------------------------------------------------------------- the rules


@pytest.mark.parametrize("role", ["standby", "disabled"])
def test_standby_passes_idle(role: str) -> None:
    assert judge_standby("green", state(role=role), None).ok


@pytest.mark.parametrize(
    ("over", "named"),
    [
        ({"role": "active"}, "role active"),
        ({"role": "active", "consumers": ["paper-trading.orders"]}, "paper-trading.orders"),
        ({"schedulers": ["strategy-tick"]}, "schedulers strategy-tick"),
        ({"consumers": ["paper-trading.orders"]}, "consumers paper-trading.orders"),
        ({"role": "disabled", "schedulers": ["eod-pnl"]}, "schedulers eod-pnl"),
    ],
)
def test_standby_fails_naming_what_runs(over: dict[str, Any], named: str) -> None:
    verdict = judge_standby("green", state(**over), None)
    assert not verdict.ok and named in verdict.message


def test_a_disabled_candidate_fails_when_the_stack_runs_work() -> None:
    assert judge_standby("green", state(role="disabled"), False).ok
    verdict = judge_standby("green", state(role="disabled"), True)
    assert not verdict.ok and "work_enabled" in verdict.message


def test_active_needs_the_lease_for_its_own_color() -> None:
    holder = state(role="active", liveColor="green", epoch=4, consumers=["paper-trading.orders"])
    assert judge_active("green", [holder], True).ok
    assert judge_active("green", [holder], None).ok
    # liveColor still names the old color: the publish has not reached it (transient: polled).
    stale = judge_active("green", [state(role="active", liveColor="blue")], True)
    assert not stale.ok and stale.transient and "liveColor is blue" in stale.message
    nobody = judge_active("green", [state(role="standby", liveColor="green")], True)
    assert not nobody.ok and nobody.transient and "no instance holds the lease" in nobody.message


def test_active_disabled_only_when_the_stack_runs_no_work() -> None:
    disabled = state(role="disabled", liveColor=None, epoch=None)
    assert judge_active("green", [disabled], False).ok
    for work_enabled in (True, None):
        verdict = judge_active("green", [disabled], work_enabled)
        assert not verdict.ok and not verdict.transient and "work_enabled" in verdict.message
    busy = judge_active("green", [state(role="active", liveColor="green")], False)
    assert not busy.ok and "runs no background work" in busy.message


def test_active_with_replicas_one_holder_the_others_idle() -> None:
    holder = state(role="active", liveColor="green", epoch=5, schedulers=["strategy-tick"], instance="g1")
    idle = state(role="standby", liveColor="green", epoch=5, instance="g2")
    assert judge_active("green", [idle, holder, idle], True).ok
    busy_idle = state(role="standby", liveColor="green", consumers=["paper-trading.orders"], instance="g2")
    verdict = judge_active("green", [holder, busy_idle], True)
    assert not verdict.ok and verdict.state.instance == "g2" and "paper-trading.orders" in verdict.message
    twin = state(role="active", liveColor="green", epoch=5, instance="g3")
    verdict = judge_active("green", [holder, twin], True)
    assert not verdict.ok and "2 instances" in verdict.message
