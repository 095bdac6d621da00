"""Background work: only the live color runs queue consumers and schedulers, so an order
message or a scheduled job acts once, for the color that serves traffic.

The app reports its part in `/health/detailed` (docs/background-work.md): `role`
(active | standby | disabled), `epoch`, `liveColor` (what it last read from the source of
truth), `consumers` (queues it consumes now) and `schedulers` (jobs running now). This
check reads that for the color under validation and fails closed:

- a field missing or malformed: the app does not implement the contract;
- a color that must not work (before promotion, or not the live color per `liveColor`):
  role standby or disabled, no consumer, no scheduler;
- the live color after promotion: an instance holds the lease (role active, `liveColor`
  the validated color), or role disabled when the stack runs no work (`work_enabled` false).

With several replicas, only one instance of the live color holds the lease; the proxy
spreads requests over the replicas, so the check samples each of them a few times.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

from validation.checks_health import detailed_health
from validation.context import CheckFailed, Context, Passed, expect_status
from validation.models import Category
from validation.registry import check

ACTIVE, STANDBY, DISABLED = "active", "standby", "disabled"
ROLES = (ACTIVE, STANDBY, DISABLED)
COLORS = ("blue", "green")
#: The contract's top-level fields, in the order failures name them.
WORK_FIELDS = ("role", "epoch", "liveColor", "consumers", "schedulers")
#: Answers sampled per replica when a color has more than one (the proxy round-robins).
SAMPLES_PER_REPLICA = 3
#: Share of the check budget an active expectation may wait for the app to take the lease.
ACTIVE_WAIT_SHARE = 0.6
POLL_S = 0.2


@dataclass(frozen=True)
class WorkState:
    """One instance's answer, validated against the contract."""

    role: str
    epoch: int | None
    live_color: str | None
    consumers: tuple[str, ...]
    schedulers: tuple[str, ...]
    #: Optional: an instance id the app may report (tells replicas apart).
    instance: str | None = None

    @property
    def busy(self) -> bool:
        return bool(self.consumers or self.schedulers)

    def details(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "role": self.role,
            "epoch": self.epoch,
            "liveColor": self.live_color,
            "consumers": list(self.consumers),
            "schedulers": list(self.schedulers),
        }
        if self.instance is not None:
            found["instance"] = self.instance
        return found

    def running(self) -> str:
        """What it runs, for messages: 'consumers q1, q2 and schedulers strategy-tick'."""
        parts = []
        if self.consumers:
            parts.append("consumers " + ", ".join(self.consumers))
        if self.schedulers:
            parts.append("schedulers " + ", ".join(self.schedulers))
        return " and ".join(parts) or "nothing"


def _names(body: dict[str, Any], key: str, problems: list[str]) -> tuple[str, ...]:
    value = body[key]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(f"{key} is {value!r}, expected a list of names")
        return ()
    return tuple(value)


def parse_work_state(body: dict[str, Any]) -> WorkState:
    """The contract's fields from a detailed-health document, or CheckFailed naming each bad field."""
    missing = [key for key in WORK_FIELDS if key not in body]
    if missing:
        raise CheckFailed(
            f"detailed health lacks {', '.join(missing)}: the app does not implement the "
            "background-work contract",
            missing=missing,
        )
    problems: list[str] = []
    role = body["role"]
    if role not in ROLES:
        problems.append(f"role is {role!r}, expected one of {', '.join(ROLES)}")
    epoch = body["epoch"]
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0):
        problems.append(f"epoch is {epoch!r}, expected a non-negative integer or null")
    live = body["liveColor"]
    if live is not None and live not in COLORS:
        problems.append(f"liveColor is {live!r}, expected blue, green or null")
    consumers = _names(body, "consumers", problems)
    schedulers = _names(body, "schedulers", problems)
    if problems:
        raise CheckFailed("detailed health: " + "; ".join(problems), malformed=problems)
    instance = body.get("instance")
    return WorkState(
        role=str(role),
        epoch=epoch,
        live_color=live,
        consumers=consumers,
        schedulers=schedulers,
        instance=str(instance) if isinstance(instance, str) and instance else None,
    )


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str
    #: The sample the message is about (the offender, or the lease holder).
    state: WorkState
    #: True when waiting can fix it (the live color has not taken the lease yet).
    transient: bool = False


def judge_standby(color: str, state: WorkState, work_enabled: bool | None) -> Verdict:
    """A color that must not work: standby or disabled, no consumer, no scheduler."""
    if state.role == ACTIVE:
        return Verdict(
            False,
            f"{color} holds the work lease (role active, epoch {state.epoch}) but is not the live "
            f"color; it runs {state.running()}",
            state,
        )
    if state.busy:
        return Verdict(False, f"{color} is {state.role} but runs {state.running()}", state)
    if state.role == DISABLED and work_enabled is True:
        return Verdict(
            False,
            f"{color} reports role disabled but the stack runs background work (work_enabled): "
            "it would do no work once live",
            state,
        )
    return Verdict(True, f"{color} is {state.role}: no consumer, no scheduler", state)


def judge_active(color: str, states: list[WorkState], work_enabled: bool | None) -> Verdict:
    """The live color: one instance holds the lease; the others run nothing."""
    for state in states:
        if state.live_color is not None and state.live_color != color:
            return Verdict(
                False,
                f"{color} should hold the work but its liveColor is {state.live_color} "
                f"(role {state.role}, epoch {state.epoch})",
                state,
                transient=True,
            )
        if state.role != ACTIVE and state.busy:
            return Verdict(False, f"{color} is {state.role} but runs {state.running()}", state)
        if state.role == ACTIVE and work_enabled is False:
            return Verdict(
                False,
                f"{color} reports role active (runs {state.running()}) but the stack runs no "
                "background work (work_enabled false)",
                state,
            )
    holders = [s for s in states if s.role == ACTIVE]
    disabled = [s for s in states if s.role == DISABLED]
    if disabled:
        if work_enabled is False and not holders and len(disabled) == len(states):
            message = f"{color} runs no background work (disabled, work_enabled false)"
            return Verdict(True, message, disabled[0])
        why = (
            "the stack runs background work (work_enabled)" if work_enabled
            else "nothing says the stack runs no work (set work_enabled false, --work-enabled false)"
        )
        return Verdict(False, f"{color} reports role disabled after promotion, but {why}", disabled[0])
    if not holders:
        return Verdict(
            False,
            f"{color} should hold the work but no instance holds the lease (role "
            f"{states[0].role}, liveColor {states[0].live_color}, epoch {states[0].epoch})",
            states[0],
            transient=True,
        )
    holder = holders[0]
    instances = {s.instance for s in holders if s.instance is not None}
    if len(instances) > 1:
        listed = ", ".join(sorted(instances))
        return Verdict(False, f"{len(instances)} instances of {color} report role active: {listed}", holder)
    if holder.live_color != color or holder.epoch is None:
        return Verdict(
            False,
            f"{color} holds a lease but reports liveColor {holder.live_color} and epoch {holder.epoch}",
            holder,
            transient=True,
        )
    return Verdict(
        True, f"{color} holds the work (epoch {holder.epoch}): runs {holder.running()}", holder
    )


async def _fresh(ctx: Context) -> dict[str, Any]:
    path = ctx.options.paths.detailed
    response = await ctx.get(path)
    expect_status(response, path, 200)
    try:
        body = response.json()
    except ValueError as exc:
        raise CheckFailed(f"GET {path}: response is not valid JSON") from exc
    if not isinstance(body, dict):
        raise CheckFailed(f"GET {path}: JSON is not an object")
    return body


async def _sample(ctx: Context, count: int, first: dict[str, Any] | None) -> list[WorkState]:
    """`count` answers of detailed health (`first` if given, then fresh requests: other replicas)."""
    bodies = [first] if first is not None else []
    while len(bodies) < count:
        bodies.append(await _fresh(ctx))
    return [parse_work_state(body) for body in bodies]


def _failed(verdict: Verdict, base: dict[str, Any]) -> CheckFailed:
    return CheckFailed(verdict.message, **base, **verdict.state.details())


@check(
    "safety.background_work",
    Category.SAFETY,
    "Detailed health reports role, epoch, liveColor, consumers and schedulers; a color that is not "
    "the live one (or, with --expect-work-role standby, the candidate) is standby or disabled and "
    "runs no consumer and no scheduler; the live color (--expect-work-role active) holds the lease "
    "with liveColor = its color, or is disabled when the stack runs no work (--work-enabled false).",
)
async def background_work(ctx: Context) -> Passed:
    body = await detailed_health(ctx)
    color = ctx.options.color or body.get("color")
    if color not in COLORS:
        raise CheckFailed(
            f"cannot tell which color is validated (detailed health color {color!r}, no --color)"
        )
    first = parse_work_state(body)  # the contract first: a malformed answer fails here
    replicas = ctx.options.expected_replicas or 1
    count = 1 if replicas == 1 else SAMPLES_PER_REPLICA * replicas
    expected: Literal["standby", "active"] = ctx.options.expect_work_role or (
        "active" if first.live_color == color else "standby"
    )
    base: dict[str, Any] = {
        "color": color,
        "expected": expected,
        "inferred": ctx.options.expect_work_role is None,
        "workEnabled": ctx.options.work_enabled,
    }
    work_enabled = ctx.options.work_enabled
    if expected == "standby":
        states = await _sample(ctx, count, body)
        for state in states:
            verdict = judge_standby(str(color), state, work_enabled)
            if not verdict.ok:
                raise _failed(verdict, {**base, "samples": len(states)})
        return Passed(verdict.message, {**base, "samples": len(states), **states[0].details()})
    budget = min(ctx.options.check_timeout, ctx.options.timeout)  # the runner's budget for one check
    deadline = time.monotonic() + budget * ACTIVE_WAIT_SHARE
    first_body: dict[str, Any] | None = body
    while True:
        states = await _sample(ctx, count, first_body)
        first_body = None  # a retry polls afresh (the shared answer is a snapshot)
        verdict = judge_active(str(color), states, work_enabled)
        if verdict.ok:
            return Passed(verdict.message, {**base, "samples": len(states), **verdict.state.details()})
        if not verdict.transient or time.monotonic() + POLL_S >= deadline:
            raise _failed(verdict, {**base, "samples": len(states)})
        await asyncio.sleep(POLL_S)
