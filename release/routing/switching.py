"""The switch algorithm: apply under the lock, confirm, post-promotion checks, switch back, audit."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from contract.work import NOBODY
from release.audit import Auditor, Operation
from release.handoff import HandoffTarget, hand_over
from release.routing.base import NONE, Checker, Endpoint, RoutingError, SwitchResult
from release.routing.docker_side import (
    LOCK_STALE_S,
    LOCK_WAIT_S,
    Locked,
    Served,
    docker_client,
    drain,
    find_proxy,
    lock_owner,
    release_lock,
    swap_markers,
)
from release.routing.listener import confirm
from settings import Color


def apply_locked(container: Any, live: str, preview: str, owner: str, wait_s: float) -> Served:
    """`swap_markers` once the switch lock is free: waits up to `wait_s` for another switch to end."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return swap_markers(container, live, preview, owner)
        except Locked as held:
            if time.monotonic() >= deadline:
                holder, _, age = str(held).partition(" ")
                raise RoutingError(
                    f"another switch ({holder}, started {age or '?'}s ago) holds the lock on "
                    f"{container.name}; waited {wait_s:g}s, traffic unchanged. It is released when that "
                    f"switch ends, and treated as abandoned after {LOCK_STALE_S}s"
                ) from None
            time.sleep(0.2)


def switch(
    container_name: str,
    live: Color,
    preview: Color | None,
    endpoint: Endpoint | None,
    checker: Checker | None = None,
    client: Any = None,
    lock_wait_s: float = LOCK_WAIT_S,
    audit: Auditor | None = None,
    operation: Operation = "switch",
    handoff: HandoffTarget | None = None,
    recycle_workers: bool = True,
) -> SwitchResult:
    """Make `live` the live color of the proxy `container_name`, or fail leaving the old one.

    `endpoint` None skips the confirmation (only when no listener is reachable from here);
    `checker` None skips the post-promotion checks. The switch itself is one exec that
    renames the proxy's routing markers (no nginx reload); `recycle_workers` then reloads
    nginx gracefully once the outcome is final, so connections opened before (websockets)
    end within `worker_shutdown_timeout` instead of staying on the old color. Switches on
    one proxy run one at a time: this one waits up to `lock_wait_s` for another to finish.

    `handoff`: once traffic is confirmed, and before the post-promotion checks, the
    background work moves to `live` (`release.handoff.hand_over`). A failed handoff
    switches traffic back like failed checks do, hands the work back (best effort) and
    fails; so does a rollback after failed checks. None: traffic only.

    `audit`: one `operation` record (ok; refused when nothing changed; failed when it was
    undone or broke), plus one `rollback` record when a failed confirmation, a failed
    handoff or failed post-promotion checks switched back.
    """
    for role, value in (("live", live), ("preview", preview)):
        if value not in ("blue", "green") and not (role == "preview" and value is None):
            problem = f"refused: {role} color must be blue or green, not {value!r}; traffic unchanged"
            if audit is not None:
                audit.record(operation, "refused", 0.0, from_=None, to=str(live), error=problem)
            raise RoutingError(problem)
    if audit is not None:  # the intent record; fail closed it raises AuditUnavailable, traffic unchanged
        audit.begin(operation, to=str(live))
    start = time.monotonic()
    steps: dict[str, float] = {}
    seen: dict[str, Any] = {"from": None, "applied": False, "handed": False}

    def lap(name: str) -> None:
        steps[name] = round((time.monotonic() - start) * 1000 - sum(steps.values()), 1)

    def since_start() -> float:
        return (time.monotonic() - start) * 1000

    def give_back(previous_live: str | None) -> dict[str, str | None]:
        """Hand the work back if it moved (or may have); RoutingError's hand-back fields."""
        if handoff is None or not seen["handed"]:
            return {"hand_back_error": None, "hand_back_to": None}
        back = str(previous_live) if previous_live in ("blue", "green") else NOBODY
        return {"hand_back_error": _hand_back(handoff, back, live, client), "hand_back_to": back}

    def rollback(
        container: Any, previous: Served, previous_live: str | None, owner: str
    ) -> dict[str, str | None]:
        """Switch back, and the work if it moved or may have; one `rollback` record.

        The record is `ok` only when traffic and the work both went back; `failed` otherwise,
        its error saying what did not (the hand-back's error is exactly RoutingError's
        `hand_back_error`). Returns the hand-back fields for the caller's RoutingError.
        """
        began = time.monotonic()
        try:
            _revert(container, previous, endpoint, previous_live, owner)
        except Exception as exc:
            back = give_back(previous_live)
            problem = f"switching traffic back to {previous_live} failed: {exc}"
            problem += _also(back["hand_back_error"])
            if audit is not None:
                audit.record("rollback", "failed", (time.monotonic() - began) * 1000, from_=live,
                             to=previous_live, error=problem)
            raise RoutingError(problem, **back) from exc
        back = give_back(previous_live)
        if audit is not None:
            took = (time.monotonic() - began) * 1000
            if back["hand_back_error"] is None:
                audit.record("rollback", "ok", took, from_=live, to=previous_live)
            else:  # traffic is back, the work is not: not a completed rollback
                audit.record("rollback", "failed", took, from_=live, to=previous_live,
                             error=back["hand_back_error"])
        return back

    handoff_ms: float | None = None
    epoch: int | None = None
    try:
        client = client or docker_client()
        container = find_proxy(client, container_name)
        lap("find")
        owner = lock_owner()
        try:
            previous = apply_locked(container, live, preview or NONE, owner, lock_wait_s)
            previous_live: str | None = previous.live
            seen.update({"from": previous_live, "applied": True})
            lap("swap")
            if endpoint is not None:
                try:
                    confirm(endpoint, live)
                except RoutingError as exc:
                    back = rollback(container, previous, previous_live, owner)
                    raise RoutingError(
                        f"{exc}; switched back to {previous_live}" + _also(back["hand_back_error"]), **back
                    ) from None
                lap("confirm")
            elapsed_ms = (time.monotonic() - start) * 1000
            if handoff is not None:
                seen["handed"] = True  # from here on a rollback hands the work back
                try:
                    moved = hand_over(handoff, live, previous_live, client=client)
                except Exception as exc:  # HandoffError, or anything that left the work unknown
                    back = rollback(container, previous, previous_live, owner)
                    raise RoutingError(
                        f"background-work handoff to {live} failed ({exc}); traffic switched back to "
                        f"{previous_live}" + _also(back["hand_back_error"]), **back
                    ) from None
                handoff_ms, epoch = moved.handoff_ms, moved.epoch
                lap("handoff")
            if checker is not None and endpoint is not None:
                failures = checker(endpoint, live)
                if failures:
                    back = rollback(container, previous, previous_live, owner)
                    raise RoutingError(
                        f"post-promotion checks failed on {live}; switched back to {previous_live}"
                        + _also(back["hand_back_error"]) + ":\n  " + "\n  ".join(failures), **back
                    )
        finally:
            if recycle_workers and seen["applied"]:
                with contextlib.suppress(Exception):  # best effort: traffic is already where it belongs
                    drain(container)
                lap("recycle_workers")
            release_lock(container, owner)
    except Exception as exc:
        if audit is not None:
            # Refused: nothing changed (nginx refused the file, the lock was held, no proxy).
            refused = isinstance(exc, RoutingError) and not seen["applied"]
            audit.record(operation, "refused" if refused else "failed", since_start(), from_=seen["from"],
                         to=live, error=str(exc))
        raise
    if audit is not None:
        audit.record(operation, "ok", since_start(), from_=previous_live, to=live)
    return SwitchResult(live, preview, previous_live, elapsed_ms, steps, handoff_ms=handoff_ms, epoch=epoch)


def _hand_back(target: HandoffTarget, back: str, live: str, client: Any) -> str | None:
    """Give the work back to `back`, the color traffic went back to; None, or what went wrong.

    When no color was live before (a first promotion), `back` is "none": nobody may do the
    work, so the color that failed stands down instead of keeping the lease. Any failure
    (the publish, the lease or the broker check, an unreachable container) is returned: the
    switch fails anyway, and says so (RoutingError.hand_back_error, the rollback record).
    """
    try:
        hand_over(target, back, live, client=client)
    except Exception as exc:  # noqa: BLE001 - reported, never swallowed: the caller raises with it
        held = f"{live} may still hold the lease or consume"
        return f"background work not handed back to {back} ({held}): {exc}"
    return None


def _also(hand_back_error: str | None) -> str:
    return f"; {hand_back_error}" if hand_back_error else ""


def _revert(
    container: Any, previous: Served, endpoint: Endpoint | None, previous_live: str | None, owner: str
) -> None:
    """Put the previous markers back at once (best effort confirm: the caller fails anyway)."""
    swap_markers(container, previous.live, previous.preview, owner)
    if previous_live is not None and endpoint is not None:
        with contextlib.suppress(RoutingError):
            confirm(endpoint, previous_live, deadline_s=5.0)
