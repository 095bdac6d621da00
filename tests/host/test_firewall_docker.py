"""The host guard's table at `pulumi destroy` (issue 21, item 3), against the real Docker Engine.

The stack's `FirewallTable` resource is created before the guard container and deleted after
it; its delete runs the guard image once (host network, NET_ADMIN + NET_RAW) to remove the
stack's table, and only that table. The tables here are empty (no chains, no hooks): they
filter nothing, so loading them into the host's namespace changes no traffic.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from stack.firewall import FirewallTableProvider, supervisor_source
from tests.support import missing, require_tool

IMAGE = os.environ.get("HOST_GUARD_TEST_IMAGE", "paper-trading-ci/host-guard:1.0.6")


def _nft(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nft", *args], capture_output=True, text=True, timeout=30)


def _docker_ready() -> str | None:
    if os.geteuid() != 0:
        return "needs root (nft in the host namespace)"
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.images.get(IMAGE)
    except Exception as exc:  # noqa: BLE001 - any reason the engine or image is missing is a skip
        return f"Docker or the host-guard image {IMAGE} is not available: {exc}"
    return None


@pytest.fixture
def tables() -> Iterator[tuple[str, str]]:
    reason = _docker_ready()
    if reason:
        missing(reason)
    require_tool("nft")
    tag = uuid.uuid4().hex[:8]
    mine, other = f"paper_trading_guard_fwtest_{tag}", f"paper_trading_guard_fwother_{tag}"
    for name in (mine, other):
        assert _nft("add", "table", "inet", name).returncode == 0
    try:
        yield mine, other
    finally:
        for name in (mine, other):
            _nft("delete", "table", "inet", name)


def test_destroy_removes_the_stacks_table_and_no_other(tables: tuple[str, str]) -> None:
    mine, other = tables
    FirewallTableProvider().delete(f"firewall-table-inet {mine}", {"table": f"inet {mine}", "image": IMAGE})
    assert _nft("list", "table", "inet", mine).returncode != 0
    assert _nft("list", "table", "inet", other).returncode == 0


def test_destroy_fails_loudly_without_the_image(tables: tuple[str, str]) -> None:
    """No silent success: a destroy that cannot remove the table is an error (the table stays)."""
    mine, _ = tables
    with pytest.raises(Exception):  # noqa: B017, PT011 - docker.errors.ImageNotFound or APIError
        FirewallTableProvider().delete("x", {"table": f"inet {mine}", "image": "paper-trading/absent:0"})
    assert _nft("list", "table", "inet", mine).returncode == 0


def test_the_health_check_runs_in_the_real_image() -> None:
    """The container's health check command (the supervisor's --check under the image's python
    and nft) reports a table that is not loaded as unhealthy, exit 1."""
    reason = _docker_ready()
    if reason:
        missing(reason)
    import docker

    client = docker.from_env(timeout=30)
    table = f"paper_trading_guard_fwabsent_{uuid.uuid4().hex[:8]}"
    ruleset = f"table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n}}\n"
    container = client.containers.run(
        IMAGE, ["python3", "-c", supervisor_source(), "--check"], entrypoint=["/usr/bin/env"],
        network_mode="host", cap_drop=["ALL"], cap_add=["NET_ADMIN", "NET_RAW"], read_only=True,
        environment={"HOST_GUARD_RULESET": ruleset}, detach=True,
    )
    try:
        result = container.wait(timeout=60)
        logs = container.logs().decode()
    finally:
        container.remove(force=True)
    assert result["StatusCode"] == 1, logs
    assert f"table inet {table} is not loaded" in logs


def test_the_rendered_guard_is_healthy_only_with_the_wanted_table() -> None:
    """The prod stack's guard as rendered (command, environment, read-only root, capabilities),
    in the real image, in a network namespace of its own (`--network none`: the table filters
    nothing of the host's). Its health check passes once loaded, fails when a chain is emptied
    behind its back, and passes again when the supervisor has restored it."""
    reason = _docker_ready()
    if reason:
        missing(reason)
    import time

    import docker

    from tests.support import rendered

    guard = next(r.inputs for r in rendered("prod").containers
                 if str(r.inputs.get("name", "")).endswith("-host-guard"))
    envs = dict(e.split("=", 1) for e in guard["envs"])
    command = list(guard["command"])
    command[command.index("--interval") + 1] = "1"
    health = guard["healthcheck"]["tests"][1:]
    table = next(line for line in envs["HOST_GUARD_RULESET"].splitlines() if line.startswith("table "))[6:]
    client = docker.from_env(timeout=30)
    container = client.containers.run(
        IMAGE, command, entrypoint=guard["entrypoints"], network_mode="none", cap_drop=["ALL"],
        cap_add=["NET_ADMIN", "NET_RAW"], read_only=True, environment=envs, detach=True,
        security_opt=["no-new-privileges:true"],
    )

    def healthy() -> int:
        return int(container.exec_run(health)[0])

    try:
        deadline = time.time() + 20
        while time.time() < deadline and healthy() != 0:
            time.sleep(0.5)
        assert healthy() == 0, container.logs().decode()
        code, out = container.exec_run(["nft", "flush", "chain", *table.split(), "forward"])
        assert code == 0, out
        assert healthy() == 1
        deadline = time.time() + 10
        while time.time() < deadline and healthy() != 0:
            time.sleep(0.5)
        assert healthy() == 0, container.logs().decode()
        container.stop(timeout=10)
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 143
        assert "stays loaded" in container.logs().decode()
    finally:
        container.remove(force=True)
