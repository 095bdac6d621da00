"""The switch algorithm (release/routing/switching.py) against a scripted proxy, listener and handoff.

The Docker proof is tests/docker/test_routing_docker.py and tests/docker/test_audit_docker.py; those need a
real proxy and only reach some failure paths. Here the Docker side (find, rename, drain, lock),
the listener's confirmation and the handoff are replaced by a small in-memory proxy, so every
branch of `switch` is driven on purpose: what it raises (and the RoutingError's hand-back
fields), which records it writes (read back from a real file sink), what it asked the proxy
and the handoff to do. The listener's `confirm` itself runs for real against a scripted
`observe`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from release import audit
from release.handoff import HandoffError, HandoffResult, HandoffTarget
from release.routing import listener, switching
from release.routing.base import CONFIRM_SETTLE_S, CONFIRM_STREAK, Endpoint, RoutingError, SwitchResult
from release.routing.docker_side import Locked, Served

ENDPOINT = Endpoint("http://127.0.0.1:9")
TARGET = HandoffTarget("pt-redis", "pt-rabbitmq", 1.0)


@dataclass
class Proxy:
    """What the proxy's markers select, and everything the switch asked of it."""

    live: str = "blue"
    preview: str = "green"
    name: str = "pt-proxy"
    #: Colors the listener never confirms (their responses never show them).
    unconfirmed: set[str] = field(default_factory=set)
    #: Colors the handoff never hands to, and the error it raises.
    handoff_fails_to: dict[str, Exception] = field(default_factory=dict)
    refuse_swap: bool = False
    locked: bool = False
    swaps: list[tuple[str, str]] = field(default_factory=list)
    confirms: list[tuple[str, float]] = field(default_factory=list)
    handoffs: list[tuple[str, str | None]] = field(default_factory=list)
    drains: int = 0
    releases: int = 0


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Proxy:
    state = Proxy()

    def swap_markers(_container: Any, live: str, preview: str, _owner: str) -> Served:
        if state.locked:
            raise Locked("other-host/1/abcd 3")
        if state.refuse_swap:
            raise RoutingError("the proxy refused the switch (invalid color); traffic unchanged")
        before = Served(state.live, state.preview)
        state.live, state.preview = live, preview
        state.swaps.append((live, preview))
        return before

    def confirm(_endpoint: Endpoint, expected: str, deadline_s: float = 15.0) -> float:
        state.confirms.append((expected, deadline_s))
        if expected in state.unconfirmed or state.live != expected:
            raise RoutingError(f"{ENDPOINT.url} did not report X-Deployment-Color: {expected}")
        return 0.0

    def hand_over(
        _target: HandoffTarget, live: str, previous: str | None, client: Any = None
    ) -> HandoffResult:
        state.handoffs.append((live, previous))
        if live in state.handoff_fails_to:
            raise state.handoff_fails_to[live]
        return HandoffResult(live, len(state.handoffs), 12.5, f"{live}:1:x")

    def drain(_container: Any) -> None:
        state.drains += 1

    def release_lock(_container: Any, _owner: str) -> None:
        state.releases += 1

    monkeypatch.setattr(switching, "find_proxy", lambda _client, _name: state)
    monkeypatch.setattr(switching, "swap_markers", swap_markers)
    monkeypatch.setattr(switching, "confirm", confirm)
    monkeypatch.setattr(switching, "hand_over", hand_over)
    monkeypatch.setattr(switching, "drain", drain)
    monkeypatch.setattr(switching, "release_lock", release_lock)
    return state


@pytest.fixture
def trail(tmp_path: Path) -> tuple[audit.Auditor, Path]:
    path = tmp_path / "audit.jsonl"
    return audit.Auditor("switch-test", audit.FileSink(str(path)), "tester"), path


def _records(path: Path) -> list[tuple[str, str, str | None, str | None]]:
    if not path.exists():
        return []
    return [(r["operation"], r["result"], r["from"], r["to"])
            for r in (audit.parse(line) for line in path.read_text().splitlines())]


def _errors(path: Path) -> list[str | None]:
    return [audit.parse(line)["error"] for line in path.read_text().splitlines()]


def _switch(proxy: Proxy, live: Any, auditor: audit.Auditor | None = None, **kw: Any) -> Any:
    kw.setdefault("endpoint", ENDPOINT)
    return switching.switch(proxy.name, live, kw.pop("preview", "blue" if live == "green" else "green"),
                            client=object(), audit=auditor, **kw)


# --------------------------------------------------------------------------- refused: nothing changed


@pytest.mark.parametrize("live", [None, "purple", "none"])
def test_a_live_color_that_is_no_color_is_refused_before_anything(
    proxy: Proxy, trail: tuple[audit.Auditor, Path], live: Any
) -> None:
    auditor, path = trail
    with pytest.raises(RoutingError, match="refused: live color must be blue or green"):
        _switch(proxy, live, auditor, preview=None)
    assert proxy.swaps == [] and proxy.drains == 0
    assert _records(path) == [("switch", "refused", None, str(live))]


def test_a_swap_the_proxy_refuses_is_recorded_refused_and_not_drained(
    proxy: Proxy, trail: tuple[audit.Auditor, Path]
) -> None:
    auditor, path = trail
    proxy.refuse_swap = True
    with pytest.raises(RoutingError, match="refused the switch"):
        _switch(proxy, "green", auditor)
    assert (proxy.live, proxy.drains, proxy.releases) == ("blue", 0, 1)
    assert _records(path) == [("switch", "started", None, "green"), ("switch", "refused", None, "green")]


def test_a_held_lock_is_waited_for_then_refused(proxy: Proxy, trail: tuple[audit.Auditor, Path]) -> None:
    auditor, path = trail
    proxy.locked = True
    start = time.monotonic()
    held = r"another switch \(other-host/1/abcd, started 3s ago\) holds the lock"
    with pytest.raises(RoutingError, match=held):
        _switch(proxy, "green", auditor, lock_wait_s=0.5)
    assert time.monotonic() - start >= 0.5
    assert proxy.swaps == [] and proxy.drains == 0
    assert _records(path)[-1] == ("switch", "refused", None, "green")


# --------------------------------------------------------------------------- ok


def test_a_switch_confirms_hands_over_checks_drains_and_records_ok(
    proxy: Proxy, trail: tuple[audit.Auditor, Path]
) -> None:
    auditor, path = trail
    checked: list[str] = []

    def checker(_endpoint: Any, color: str) -> list[str]:
        checked.append(color)
        return []

    result = _switch(proxy, "green", auditor, handoff=TARGET, checker=checker)
    assert (result.live, result.previous_live, result.epoch, result.handoff_ms) == ("green", "blue", 1, 12.5)
    assert proxy.swaps == [("green", "blue")] and proxy.confirms == [("green", 15.0)]
    assert proxy.handoffs == [("green", "blue")] and checked == ["green"]
    assert (proxy.drains, proxy.releases) == (1, 1)
    assert _records(path) == [("switch", "started", None, "green"), ("switch", "ok", "blue", "green")]


def test_without_recycling_nothing_is_drained(proxy: Proxy) -> None:
    _switch(proxy, "green", recycle_workers=False)
    assert proxy.drains == 0 and proxy.releases == 1


# --------------------------------------------------------------------------- failed: switched back


def test_an_unconfirmed_switch_goes_back_without_touching_the_work(
    proxy: Proxy, trail: tuple[audit.Auditor, Path]
) -> None:
    auditor, path = trail
    proxy.unconfirmed = {"green"}
    with pytest.raises(RoutingError, match="switched back to blue") as caught:
        _switch(proxy, "green", auditor, handoff=TARGET)
    assert (caught.value.hand_back_error, caught.value.hand_back_to) == (None, None)
    assert proxy.handoffs == []  # the work never moved, so nothing is handed back
    assert proxy.swaps == [("green", "blue"), ("blue", "green")] and proxy.live == "blue"
    # the way back is confirmed too (best effort, a shorter deadline)
    assert proxy.confirms == [("green", 15.0), ("blue", 5.0)]
    assert proxy.drains == 1
    assert _records(path) == [("switch", "started", None, "green"), ("rollback", "ok", "green", "blue"),
                              ("switch", "failed", "blue", "green")]


def test_a_failed_handoff_goes_back_and_hands_the_work_back(
    proxy: Proxy, trail: tuple[audit.Auditor, Path]
) -> None:
    auditor, path = trail
    proxy.handoff_fails_to = {"green": HandoffError("lease not taken", live="green")}
    with pytest.raises(RoutingError, match=r"handoff to green failed \(lease not taken\)") as caught:
        _switch(proxy, "green", auditor, handoff=TARGET)
    assert proxy.handoffs == [("green", "blue"), ("blue", "green")]
    assert (caught.value.hand_back_error, caught.value.hand_back_to) == (None, "blue")
    assert proxy.live == "blue"
    assert _records(path)[1:] == [("rollback", "ok", "green", "blue"), ("switch", "failed", "blue", "green")]


def test_a_first_promotion_that_fails_hands_the_work_to_nobody(proxy: Proxy) -> None:
    proxy.live, proxy.preview = "none", "none"
    proxy.handoff_fails_to = {"green": HandoffError("lease not taken", live="green")}
    with pytest.raises(RoutingError) as caught:
        _switch(proxy, "green", handoff=TARGET)
    assert proxy.handoffs == [("green", "none"), ("none", "green")]
    assert caught.value.hand_back_to == "none"


def test_a_failed_hand_back_fails_the_rollback_record_with_its_error(
    proxy: Proxy, trail: tuple[audit.Auditor, Path]
) -> None:
    auditor, path = trail
    proxy.handoff_fails_to = {"green": HandoffError("lease not taken"), "blue": HandoffError("redis gone")}
    with pytest.raises(RoutingError) as caught:
        _switch(proxy, "green", auditor, handoff=TARGET)
    back_error = caught.value.hand_back_error
    assert back_error is not None and back_error.startswith("background work not handed back to blue")
    assert "redis gone" in back_error and caught.value.hand_back_to == "blue"
    assert str(caught.value).endswith(back_error)
    assert _records(path)[1:] == [
        ("rollback", "failed", "green", "blue"), ("switch", "failed", "blue", "green")]
    assert _errors(path)[1] == back_error


def test_failed_post_promotion_checks_go_back_and_hand_the_work_back(
    proxy: Proxy, trail: tuple[audit.Auditor, Path]
) -> None:
    auditor, path = trail
    with pytest.raises(RoutingError, match="post-promotion checks failed on green") as caught:
        _switch(proxy, "green", auditor, handoff=TARGET, checker=lambda _e, _c: ["health.ready: 503"])
    assert "health.ready: 503" in str(caught.value)
    assert proxy.live == "blue" and proxy.handoffs == [("green", "blue"), ("blue", "green")]
    assert caught.value.hand_back_to == "blue"
    assert _records(path)[1:] == [("rollback", "ok", "green", "blue"), ("switch", "failed", "blue", "green")]


# --------------------------------------------------------------------------- the listener's confirm


def test_confirm_needs_a_streak_that_lasts_the_settle_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong color inside the window restarts it: the window counts from after the last wrong answer."""
    start = time.monotonic()
    wrong_at: list[float] = []
    seen = {"green": 0}

    def observe(_endpoint: Endpoint, _client: Any = None) -> str:
        now = time.monotonic()
        if now - start > 0.2 and not wrong_at:
            wrong_at.append(now)
            return "blue"  # an old worker still answered
        seen["green"] += 1
        time.sleep(0.005)
        return "green"

    class Client:
        def __enter__(self) -> Client:
            return self

        def __exit__(self, *_exc: Any) -> None:
            return None

    monkeypatch.setattr(listener, "observe", observe)
    monkeypatch.setattr(listener, "_fresh_client", lambda _endpoint: Client())
    took = listener.confirm(ENDPOINT, "green", deadline_s=5.0)
    assert wrong_at, "the scripted listener never answered with the old color"
    assert start + took - wrong_at[0] >= CONFIRM_SETTLE_S
    assert seen["green"] >= CONFIRM_STREAK


def test_confirm_fails_at_the_deadline_naming_what_it_saw(monkeypatch: pytest.MonkeyPatch) -> None:
    class Client:
        def __enter__(self) -> Client:
            return self

        def __exit__(self, *_exc: Any) -> None:
            return None

    monkeypatch.setattr(listener, "observe", lambda _e, _c=None: "blue")
    monkeypatch.setattr(listener, "_fresh_client", lambda _endpoint: Client())
    said = r"did not report X-Deployment-Color: green within 0.3s \(last seen: blue\)"
    with pytest.raises(RoutingError, match=said):
        listener.confirm(ENDPOINT, "green", deadline_s=0.3)


# --------------------------------------------------------------------------- the provider and the CLI


def test_the_provider_runs_the_post_promotion_checks_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from release.routing import provider

    seen: list[Any] = []

    def fake_switch(_name: str, live: str, _preview: Any, _endpoint: Any, **kw: Any) -> Any:
        seen.append(kw["checker"])
        return SwitchResult(live, None, "blue", 1.0)  # type: ignore[arg-type]

    monkeypatch.setattr(provider, "switch", fake_switch)
    props = {"proxyContainerName": "pt-proxy", "liveColor": "green", "previewColor": "blue",
             "publicUrl": "http://127.0.0.1:9"}
    provider._apply_props(props)  # no postPromotionChecks key (state from before it): checks run
    provider._apply_props({**props, "postPromotionChecks": False})
    assert seen[0] is listener.validation_checks and seen[1] is None


@pytest.mark.parametrize("content", ["garbage", "", "live none\npreview none\n"])
def test_refresh_keeps_the_recorded_color_when_the_proxy_names_none(
    monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    from release.routing import provider

    monkeypatch.setattr(provider, "current", lambda _name: content)
    result = provider.RoutingProvider().read("id", {"proxyContainerName": "pt-proxy", "liveColor": "blue"})
    assert result.outs is not None and result.outs["liveColor"] == "blue"


def test_the_emergency_cli_checks_the_work_after_a_handoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a handoff the post-promotion checks expect the new color to hold the work ("active")."""
    from release.routing import cli

    seen: list[Any] = []
    monkeypatch.setattr(cli, "cli_handoff", lambda _args: TARGET)
    monkeypatch.setattr(cli, "cli_auditor", lambda _args: None)

    def fake_switch(_name: str, live: str, _preview: Any, _endpoint: Any, **kw: Any) -> Any:
        seen.append(kw)
        return SwitchResult(live, None, "blue", 1.0, handoff_ms=3.0, epoch=2)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "switch", fake_switch)
    base = ["switch", "--to", "green", "--container", "pt-proxy", "--reason", "test", "--url", "http://x"]
    assert cli.main(base) == 0
    assert cli.main([*base, "--no-handoff"]) == 0
    with_handoff, without = seen
    assert with_handoff["handoff"] == TARGET
    assert with_handoff["checker"].keywords == {"expect_work_role": "active"}
    assert without["handoff"] is None and without["checker"] is listener.validation_checks
    assert with_handoff["operation"] == "emergency-switch"


def test_a_reason_is_one_line_of_at_most_max_reason_characters() -> None:
    from release.routing.cli import reason_text

    assert reason_text("x" * audit.MAX_REASON) == "x" * audit.MAX_REASON
    for bad in ("x" * (audit.MAX_REASON + 1), "two\nlines", "   "):
        with pytest.raises(argparse.ArgumentTypeError):
            reason_text(bad)


# --------------------------------------------------------------------------- the Docker side, scripted


class _Exec:
    def __init__(self, exit_code: int, out: bytes) -> None:
        self.exit_code, self.output = exit_code, (out, b"")


class _Container:
    def __init__(self, status: str = "running", exit_code: int = 0, out: bytes = b"blue green\n") -> None:
        self.name, self.status, self.labels = "pt-proxy", status, {"paper-trading.stack": "prod"}
        self._exec = _Exec(exit_code, out)

    def exec_run(self, *_a: Any, **_kw: Any) -> _Exec:
        return self._exec


class _Client:
    def __init__(self, container: _Container) -> None:
        self.container = container
        self.containers, self.volumes = self, self

    def get(self, _name: str) -> _Container:
        return self.container


@pytest.mark.parametrize("status", ["exited", "paused", "restarting"])
def test_a_proxy_that_is_not_running_is_no_proxy(status: str) -> None:
    from release.routing.docker_side import find_proxy

    with pytest.raises(RoutingError, match=f"is {status}, not running; traffic unchanged"):
        find_proxy(_Client(_Container(status)), "pt-proxy")


def test_a_rename_that_exits_non_zero_is_an_error_whatever_it_printed() -> None:
    from release.routing.docker_side import swap_markers

    assert swap_markers(_Container(), "green", "blue", "me") == Served("blue", "green")
    with pytest.raises(RoutingError, match=r"could not rename the routing markers in pt-proxy \(exit 1\)"):
        swap_markers(_Container(exit_code=1), "green", "blue", "me")


def test_the_emergency_cli_always_audits_fail_closed() -> None:
    from release.routing.cli import cli_auditor

    args = argparse.Namespace(container="pt-proxy", audit_volume=None, audit_image="writer:1", actor="alice",
                              reason="pager: green is down", url="http://x", no_checks=False)
    auditor = cli_auditor(args, _Client(_Container()))
    assert (auditor.fail_closed, auditor.stack, auditor.actor) == (True, "prod", "alice")
    assert (auditor.reason, auditor.checks) == ("pager: green is down", "post-promotion")
    assert auditor.sink.describe() == "volume pt-audit-data (writer image writer:1)"


def test_post_promotion_checks_include_the_safety_checks() -> None:
    """Through the public listener: a live color that is not in paper mode fails the checks."""
    from tests.support.fakes.validation_servers import reference_app

    with reference_app(color="green") as app:
        assert listener.validation_checks(Endpoint(app.url), "green") == []
        app.set_faults("paper_mode_off")
        failed = listener.validation_checks(Endpoint(app.url), "green")
    assert any(line.startswith("safety.paper_trading_mode:") for line in failed), failed
    assert not any(line.startswith(("health.metrics:", "safety.metrics:")) for line in failed)
