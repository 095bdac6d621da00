"""Audit records of real switches on the real Docker Engine (issue 14, part 3).

The routing tests' stack (tests/support/docker_env.py: the rendered apps and proxy) plus a real audit
volume named as the program names it; records are appended by the real one-shot writer
(components/audit.VolumeSink: the ci stack's postgres image as its `postgres` user) and read
back from the volume. Each operation must leave its intent record (`started`) and then exactly
one outcome record with every field right.

Fail closed (issue 20, item 5): a real full volume (tmpfs of 4 KiB, filled by a holder
container that keeps it mounted) is the sink that cannot be appended to; the switch, the
routing provider, the emergency CLI and the gate must refuse before they act, and with
failClosed off warn and go on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from release import audit, routing
from tests.support import require_docker, require_tool

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]
WRITER_IMAGE = "paper-trading-ci/postgres:15"


@pytest.fixture(scope="module")
def env() -> Iterator[Any]:
    require_docker()
    require_tool("debootstrap")
    import docker

    from tests.support.docker_env import docker_env
    from tests.support.docker_render import TEST_LABEL

    client = docker.from_env(timeout=60)
    try:
        client.images.get(WRITER_IMAGE)
    except docker.errors.ImageNotFound:
        proc = subprocess.run([str(ROOT / "scripts" / "build-test-images"), "--ci"],
                              capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    with docker_env() as stack:
        volume = client.volumes.create(audit.volume_name(stack.prefix), labels={TEST_LABEL: stack.prefix})
        try:
            yield stack
        finally:
            with suppress(Exception):
                volume.remove(force=True)
            client.close()


def auditor(env: Any, actor: str = "tester") -> audit.Auditor:
    sink = audit.VolumeSink(audit.volume_name(env.prefix), WRITER_IMAGE, client=env.client)
    return audit.Auditor("docker-test", sink, actor=actor)


def records(env: Any) -> list[dict[str, Any]]:
    """Every record in the volume (each line must parse as a complete record)."""
    out = env.client.containers.run(
        WRITER_IMAGE, ["sh", "-c", f"cat {audit.AUDIT_DIR}/{audit.AUDIT_FILE} 2>/dev/null || true"],
        entrypoint=[], remove=True, network_mode="none",
        volumes=[f"{audit.volume_name(env.prefix)}:{audit.AUDIT_DIR}:ro"],
    ).decode()
    return [audit.parse(line) for line in out.splitlines()]


def new_records(env: Any, before: int) -> list[dict[str, Any]]:
    return records(env)[before:]


def assert_record(rec: dict[str, Any], **want: Any) -> None:
    assert tuple(rec) == audit.FIELDS
    assert rec["stack"] == "docker-test" and rec["time"].endswith("Z")
    assert isinstance(rec["duration_ms"], float) and rec["duration_ms"] >= 0
    for key, value in want.items():
        assert rec[key] == value, (key, rec)


def test_a_switch_leaves_its_intent_then_one_ok_record(env: Any) -> None:
    routing.switch(env.proxy_name, "blue", "green", routing.Endpoint(env.live_url), client=env.client)
    before = len(records(env))
    routing.switch(env.proxy_name, "green", "blue", routing.Endpoint(env.live_url), client=env.client,
                   audit=auditor(env))
    intent, rec = new_records(env, before)
    assert_record(intent, actor="tester", operation="switch", result="started", **{"from": None}, to="green",
                  duration_ms=0.0, error=None)
    assert_record(rec, actor="tester", operation="switch", result="ok", **{"from": "blue"}, to="green",
                  backup_id=None, error=None, reason=None, checks=None)
    assert intent["time"] <= rec["time"]
    # The writer made the file as the backup image's non-root user, readable by the collector.
    out = env.client.containers.run(
        WRITER_IMAGE, ["stat", "-c", "%U %a", f"{audit.AUDIT_DIR}/{audit.AUDIT_FILE}"], entrypoint=[],
        remove=True, volumes=[f"{audit.volume_name(env.prefix)}:{audit.AUDIT_DIR}:ro"]).decode().split()
    assert out == ["postgres", "644"]


def test_a_refused_switch_leaves_one_refused_record(env: Any) -> None:
    routing.switch(env.proxy_name, "blue", "green", routing.Endpoint(env.live_url), client=env.client)
    before = len(records(env))
    with pytest.raises(routing.RoutingError, match="refused"):  # not a color: nothing changes
        routing.switch(env.proxy_name, "purple", "blue", routing.Endpoint(env.live_url),  # type: ignore[arg-type]
                       client=env.client, audit=auditor(env))
    [rec] = new_records(env, before)
    assert_record(rec, operation="switch", result="refused", **{"from": None}, to="purple", backup_id=None)
    assert rec["error"].startswith("refused: live color must be blue or green")


def test_failed_checks_leave_a_failed_switch_and_one_rollback_record(env: Any) -> None:
    routing.switch(env.proxy_name, "blue", "green", routing.Endpoint(env.live_url), client=env.client)
    before = len(records(env))
    with pytest.raises(routing.RoutingError, match="switched back to blue"):
        routing.switch(env.proxy_name, "green", "blue", routing.Endpoint(env.live_url), client=env.client,
                       checker=lambda _e, _c: ["safety.paper_trading_mode: paper mode is off"],
                       audit=auditor(env))
    recs = new_records(env, before)
    assert [(r["operation"], r["result"]) for r in recs] == [
        ("switch", "started"), ("rollback", "ok"), ("switch", "failed")]
    [rollback] = [r for r in recs if r["operation"] == "rollback"]
    [switched] = [r for r in recs if r["operation"] == "switch" and r["result"] != "started"]
    assert_record(rollback, result="ok", **{"from": "green"}, to="blue", error=None)
    assert_record(switched, result="failed", **{"from": "blue"}, to="green")
    assert "post-promotion checks failed on green" in switched["error"]
    assert {str(c) for c in env.live_colors(6)} == {"200:blue:blue"}


def cli(env: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "release.routing", "switch", "--container", env.proxy_name, "--no-handoff",
         *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_the_emergency_cli_records_its_actor_and_reason(env: Any) -> None:
    routing.switch(env.proxy_name, "blue", "green", routing.Endpoint(env.live_url), client=env.client)
    before = len(records(env))
    proc = cli(env, "--to", "green", "--url", env.live_url, "--no-checks", "--actor", "oncall-bob",
               "--audit-image", WRITER_IMAGE, "--reason", "INC-42: blue leaks memory")
    assert proc.returncode == 0, proc.stderr
    intent, rec = new_records(env, before)
    assert tuple(rec) == audit.FIELDS
    assert (rec["actor"], rec["operation"], rec["result"], rec["from"], rec["to"]) == (
        "oncall-bob", "emergency-switch", "ok", "blue", "green")
    # --url with --no-checks: the listener confirmed the color, nothing else was checked.
    assert (rec["reason"], rec["checks"]) == ("INC-42: blue leaks memory", "confirm")
    assert (intent["operation"], intent["result"], intent["reason"], intent["checks"]) == (
        "emergency-switch", "started", "INC-42: blue leaks memory", "confirm")
    # The proxy's stack label names the stack.
    assert rec["stack"] == "docker-test"


def test_a_break_glass_switch_that_checks_nothing_is_recorded_as_such(env: Any) -> None:
    """No --url and --no-checks: still possible, and the record says checks=none."""
    routing.switch(env.proxy_name, "green", "blue", routing.Endpoint(env.live_url), client=env.client)
    before = len(records(env))
    proc = cli(env, "--to", "blue", "--no-checks", "--audit-image", WRITER_IMAGE, "--reason", "listener down")
    assert proc.returncode == 0, proc.stderr
    _, rec = new_records(env, before)
    assert (rec["operation"], rec["result"], rec["to"], rec["checks"], rec["reason"]) == (
        "emergency-switch", "ok", "blue", "none", "listener down")
    assert {str(c) for c in env.live_colors(6)} == {"200:blue:blue"}


# ------------------------------------------------------------------ fail closed on a full volume


@pytest.fixture(scope="module")
def full_volume(env: Any) -> Iterator[str]:
    """A 4 KiB tmpfs volume, filled and kept mounted by a holder (tmpfs lives while mounted)."""
    from tests.support.docker_render import TEST_LABEL

    name = f"{env.prefix}-full-audit"
    volume = env.client.volumes.create(name, driver="local", labels={TEST_LABEL: env.prefix},
                                       driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=4k"})
    holder = env.client.containers.run(
        WRITER_IMAGE, ["sh", "-c", f"head -c 8192 /dev/zero > {audit.AUDIT_DIR}/fill; exec sleep 3600"],
        entrypoint=[], detach=True, network_mode="none", labels={TEST_LABEL: env.prefix},
        volumes=[f"{name}:{audit.AUDIT_DIR}:rw"],
    )
    try:
        for _ in range(50):
            if holder.exec_run(["sh", "-c", f"test -s {audit.AUDIT_DIR}/fill"]).exit_code == 0:
                break
            time.sleep(0.1)
        df = holder.exec_run(["df", "--output=avail", audit.AUDIT_DIR]).output.decode().split()
        assert df[-1] == "0", df  # really full
        yield name
    finally:
        with suppress(Exception):
            holder.remove(force=True)
        with suppress(Exception):
            volume.remove(force=True)


def full_auditor(env: Any, volume: str, fail_closed: bool, warn: Any = None) -> audit.Auditor:
    return audit.Auditor("docker-test", audit.VolumeSink(volume, WRITER_IMAGE, client=env.client),
                         actor="tester", warn=warn, fail_closed=fail_closed)


def test_fail_closed_the_routing_provider_refuses_before_it_switches(env: Any, full_volume: str) -> None:
    """The engine's path: failClosed travels in the props; the switch never runs, traffic stays."""
    routing.switch(env.proxy_name, "blue", "green", routing.Endpoint(env.live_url), client=env.client)
    served = routing.current(env.proxy_name, env.client)
    target = audit.AuditTarget("docker-test", full_volume, WRITER_IMAGE, fail_closed=True)
    props = {"proxyContainerName": env.proxy_name, "liveColor": "green", "previewColor": "blue",
             "publicUrl": env.live_url, "postPromotionChecks": False, "audit": target.props()}
    with pytest.raises(audit.AuditUnavailable) as refused:
        routing.RoutingProvider().update("routing", {}, props)
    exc = refused.value
    assert (exc.operation, exc.result, exc.acted) == ("switch", "started", False)
    assert exc.where.startswith(f"volume {full_volume} ")
    assert "I/O error" in exc.cause or "No space" in exc.cause, exc.cause
    assert routing.current(env.proxy_name, env.client) == served
    assert {str(c) for c in env.live_colors(6)} == {"200:blue:blue"}


def test_fail_open_the_switch_warns_and_goes_on(env: Any, full_volume: str) -> None:
    routing.switch(env.proxy_name, "blue", "green", routing.Endpoint(env.live_url), client=env.client)
    said: list[str] = []
    routing.switch(env.proxy_name, "green", "blue", routing.Endpoint(env.live_url), client=env.client,
                   audit=full_auditor(env, full_volume, fail_closed=False, warn=said.append))
    assert {str(c) for c in env.live_colors(6)} == {"200:green:green"}
    assert len(said) == 2 and all(f"volume {full_volume}" in line for line in said), said


def test_fail_closed_the_emergency_cli_refuses_with_exit_74(env: Any, full_volume: str) -> None:
    routing.switch(env.proxy_name, "blue", "green", routing.Endpoint(env.live_url), client=env.client)
    for volume in (full_volume, f"{env.prefix}-no-such-audit-volume"):
        proc = cli(env, "--to", "green", "--url", env.live_url, "--audit-volume", volume,
                   "--audit-image", WRITER_IMAGE, "--reason", "drill")
        assert proc.returncode == 74, proc.stderr
        [line] = proc.stderr.splitlines()
        assert line.startswith(f"routing: audit: emergency-switch refused before it acted: its intent record "
                               f"cannot be appended to volume {volume}"), line
        assert {str(c) for c in env.live_colors(6)} == {"200:blue:blue"}


def test_fail_closed_the_gate_is_refused_before_any_check_runs(
        env: Any, full_volume: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from release import gate
    from release.gate import run_gate

    ran: list[Any] = []

    def checks(options: Any) -> Any:
        ran.append(options)
        raise RuntimeError("the checks ran")

    monkeypatch.setattr(gate, "avalidate", checks)  # the checks the gate runs
    props: dict[str, Any] = {"candidateColor": "green", "previewUrl": env.preview_url, "replicas": 1,
                             "options": {}, "enabled": True}
    closed = audit.AuditTarget("docker-test", full_volume, WRITER_IMAGE, fail_closed=True).props()
    with pytest.raises(audit.AuditUnavailable) as refused:
        run_gate({**props, "audit": closed})
    assert (refused.value.operation, refused.value.result) == ("gate", "started")
    assert ran == []
    # failClosed off: a warning per record, and the checks run.
    opened = audit.AuditTarget("docker-test", full_volume, WRITER_IMAGE, fail_closed=False).props()
    capsys.readouterr()
    with pytest.raises(RuntimeError, match="the checks ran"):
        run_gate({**props, "audit": opened})
    assert len(ran) == 1
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("audit: could not")]
    assert len(warnings) == 2, warnings
