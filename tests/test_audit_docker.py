"""Audit records of real switches on the real Docker Engine (issue 14, part 3).

The routing tests' stack (tests/docker_env.py: the rendered apps and proxy) plus a real audit
volume named as the program names it; records are appended by the real one-shot writer
(components/audit.VolumeSink: the ci stack's postgres image as its `postgres` user) and read
back from the volume. Each operation must leave exactly one record with every field right.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from components import audit, routing
from tests.support import require_docker, require_tool

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parent.parent
WRITER_IMAGE = "paper-trading-ci/postgres:15"


@pytest.fixture(scope="module")
def env() -> Iterator[Any]:
    require_docker()
    require_tool("debootstrap")
    import docker

    from tests.docker_env import TEST_LABEL, docker_env

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


def test_a_switch_leaves_one_ok_record(env: Any) -> None:
    routing.switch(env.proxy_name, "blue", "green", routing.Endpoint(env.live_url), client=env.client)
    before = len(records(env))
    routing.switch(env.proxy_name, "green", "blue", routing.Endpoint(env.live_url), client=env.client,
                   audit=auditor(env))
    [rec] = new_records(env, before)
    assert_record(rec, actor="tester", operation="switch", result="ok", **{"from": "blue"}, to="green",
                  backup_id=None, error=None)
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
    [rollback] = [r for r in recs if r["operation"] == "rollback"]
    [switched] = [r for r in recs if r["operation"] == "switch"]
    assert len(recs) == 2
    assert_record(rollback, result="ok", **{"from": "green"}, to="blue", error=None)
    assert_record(switched, result="failed", **{"from": "blue"}, to="green")
    assert "post-promotion checks failed on green" in switched["error"]
    assert {str(c) for c in env.live_colors(6)} == {"200:blue:blue"}


def test_the_emergency_cli_records_its_actor(env: Any) -> None:
    routing.switch(env.proxy_name, "blue", "green", routing.Endpoint(env.live_url), client=env.client)
    before = len(records(env))
    proc = subprocess.run(
        [sys.executable, "-m", "components.routing", "switch", "--to", "green", "--container", env.proxy_name,
         "--url", env.live_url, "--no-checks", "--actor", "oncall-bob", "--audit-image", WRITER_IMAGE,
         "--no-handoff"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    [rec] = new_records(env, before)
    assert tuple(rec) == audit.FIELDS
    assert (rec["actor"], rec["operation"], rec["result"], rec["from"], rec["to"]) == (
        "oncall-bob", "emergency-switch", "ok", "blue", "green")
    # The proxy's stack label names the stack.
    assert rec["stack"] == "docker-test"
