"""The blue/green switch on a real Docker Engine: the real routing code against the real proxy config.

One stack for the module (tests/support/docker_env.py): the reference app as blue and green and
the proxy, started as the program renders them (environment, labels, generated nginx.conf),
the proxy's nginx from the debootstrap base image.
Tests run in file order; each starts by putting the state it needs in place.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dill
import pytest

from release import routing
from release.routing.docker_side import LOCK_STALE_S, lock_owner, swap_markers
from release.routing.listener import validation_checks
from render.nginx.routing import ROUTING_DIR, render_markers
from tests.support import require_docker, require_tool

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env() -> Iterator[Any]:
    require_docker()
    require_tool("debootstrap")
    from tests.support.docker_env import docker_env

    with docker_env() as stack:
        # The label the runbooks stop and start the apps by finds both colors (app_ids relies on it).
        assert len(app_ids(stack)) == 2, "label paper-trading.role=app does not find both app containers"
        yield stack


def endpoint(env: Any) -> routing.Endpoint:
    return routing.Endpoint(env.live_url)


def colors(env: Any, n: int = 12) -> set[str]:
    return {str(c) for c in env.live_colors(n)}


def proxy_identity(env: Any) -> tuple[str, str, int]:
    """Container id, start time and nginx master pid: a replaced or restarted proxy changes them."""
    container = env.client.containers.get(env.proxy_name)
    pid = container.exec_run(["cat", "/tmp/nginx.pid"]).output.decode().strip()
    return container.id, container.attrs["State"]["StartedAt"], int(pid)


WORKERS = ('for d in /proc/[0-9]*; do c=$(tr "\\0" " " 2>/dev/null < $d/cmdline); '
           'case "$c" in "nginx: worker process"*) echo ${d#/proc/};; esac; done')


def worker_pids(env: Any) -> set[int]:
    """nginx worker pids: a reload replaces them, a refused switch must not."""
    container = env.client.containers.get(env.proxy_name)
    # stdout only: a process that exits mid-loop makes the shell complain on stderr.
    out = container.exec_run(["sh", "-c", WORKERS], stderr=False).output.decode().split()
    return {int(pid) for pid in out}


def app_ids(env: Any) -> set[str]:
    return {c.id for c in env.client.containers.list(filters={"label": "paper-trading.role=app"})
            if c.name.startswith(env.prefix)}


def test_bootstrap_routing_promotes_nothing(env: Any) -> None:
    assert colors(env) == {"503:none:None"}


def test_promote_blue_then_green_without_replacing_anything(env: Any) -> None:
    before_proxy, before_apps = proxy_identity(env), app_ids(env)
    result = routing.switch(env.proxy_name, "blue", "green", endpoint(env), client=env.client,
                            checker=validation_checks)
    assert result.previous_live == "none"
    assert colors(env) == {"200:blue:blue"}
    workers_on_blue = worker_pids(env)
    result = routing.switch(env.proxy_name, "green", "blue", endpoint(env), client=env.client,
                            checker=validation_checks)
    assert result.previous_live == "blue"
    assert colors(env) == {"200:green:green"}
    assert not worker_pids(env) <= workers_on_blue  # the switch recycles the workers once it is done
    assert result.switch_ms < 5000
    # Same container, same nginx master (graceful reload, not a restart), same apps.
    assert proxy_identity(env) == before_proxy
    assert app_ids(env) == before_apps
    assert routing.current(env.proxy_name, env.client) == "live green\npreview blue\n"


def test_preview_listener_follows_the_routing_default(env: Any) -> None:
    routing.switch(env.proxy_name, "green", "blue", endpoint(env), client=env.client)
    import httpx

    response = httpx.get(f"{env.preview_url}/health", timeout=5)
    assert response.headers["X-Deployment-Color"] == "blue"
    assert response.headers["X-Upstream-Color"] == "blue"


#: The emergency CLI always records (issue 20): the writer image, as the ci stack's backup runs it.
WRITER_IMAGE = "paper-trading-ci/postgres:15"


@pytest.fixture(scope="module")
def audit_volume(env: Any) -> Iterator[str]:
    """The audit volume the CLI finds from the proxy's prefix (the program creates it on a stack)."""
    from release import audit
    from tests.support.docker_render import TEST_LABEL

    volume = env.client.volumes.create(audit.volume_name(env.prefix), labels={TEST_LABEL: env.prefix})
    try:
        yield volume.name
    finally:
        volume.remove(force=True)


def test_rollback_with_the_emergency_cli(env: Any, audit_volume: str) -> None:
    routing.switch(env.proxy_name, "green", "blue", endpoint(env), client=env.client)
    assert colors(env) == {"200:green:green"}
    proc = subprocess.run(
        [sys.executable, "-m", "release.routing", "switch", "--to", "blue",
         "--container", env.proxy_name, "--url", env.live_url, "--no-handoff",
         "--audit-image", WRITER_IMAGE, "--reason", "green fails its health checks"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "green -> blue" in proc.stdout
    assert colors(env) == {"200:blue:blue"}


def test_emergency_cli_without_redis_moves_nothing_unless_told_traffic_only(env: Any) -> None:
    """No `<prefix>-redis` here: the CLI says so in one line and leaves traffic where it is."""
    routing.switch(env.proxy_name, "blue", "green", endpoint(env), client=env.client)
    proc = subprocess.run(
        [sys.executable, "-m", "release.routing", "switch", "--to", "green",
         "--container", env.proxy_name, "--url", env.live_url, "--no-checks", "--reason", "drill"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    prefix = env.proxy_name.removesuffix("-proxy")
    assert f"Redis container '{prefix}-redis' not found" in line and "--no-handoff" in line
    assert colors(env) == {"200:blue:blue"}


def test_failed_handoff_switches_traffic_back(env: Any) -> None:
    """The work cannot move (no such Redis/RabbitMQ): traffic goes back, the error names the handoff."""
    from release.handoff import HandoffTarget

    routing.switch(env.proxy_name, "blue", "green", endpoint(env), client=env.client)
    target = HandoffTarget(f"{env.prefix}-no-such-redis", f"{env.prefix}-no-such-rabbitmq", timeout_s=1.0)
    with pytest.raises(routing.RoutingError, match="background-work handoff to green failed") as failed:
        routing.switch(env.proxy_name, "green", "blue", endpoint(env), client=env.client, handoff=target)
    assert "traffic switched back to blue" in str(failed.value)
    assert colors(env) == {"200:blue:blue"}
    assert routing.live_color_of(routing.current(env.proxy_name, env.client)) == "blue"


def settled_workers(env: Any) -> set[int]:
    """nginx's workers once the old ones of an earlier reload (a switch's recycle) have exited."""
    import time

    deadline = time.monotonic() + 10
    while len(worker_pids(env)) != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = worker_pids(env)
    assert workers
    return workers


def test_the_switch_itself_moves_traffic_without_any_reload(env: Any) -> None:
    """One rename of the marker: the next request has the new color, the nginx workers are the same."""
    routing.switch(env.proxy_name, "blue", "green", endpoint(env), client=env.client)
    before_workers, before_identity = settled_workers(env), proxy_identity(env)
    result = routing.switch(env.proxy_name, "green", "blue", None, client=env.client, recycle_workers=False)
    # No confirmation step here: the very first fresh requests after the exec already see green.
    assert colors(env, 4) == {"200:green:green"}
    assert worker_pids(env) == before_workers and proxy_identity(env) == before_identity
    assert set(result.steps) == {"find", "swap"}
    assert routing.current(env.proxy_name, env.client) == "live green\npreview blue\n"
    # The recycle (after the outcome is final) is a graceful reload: same master, new workers.
    routing.switch(env.proxy_name, "green", "blue", endpoint(env), client=env.client)
    assert proxy_identity(env) == before_identity
    assert not worker_pids(env) <= before_workers


def test_invalid_switch_is_refused_and_traffic_untouched(env: Any) -> None:
    routing.switch(env.proxy_name, "blue", "green", endpoint(env), client=env.client)
    before_state = routing.current(env.proxy_name, env.client)
    before_identity, before_workers = proxy_identity(env), settled_workers(env)
    before = colors(env)
    assert before == {"200:blue:blue"}
    with pytest.raises(routing.RoutingError, match="refused: live color must be blue or green"):
        routing.switch(env.proxy_name, "purple", "blue", endpoint(env), client=env.client)  # type: ignore[arg-type]
    # The proxy-side script refuses too (defence in depth), before it takes the lock or renames anything.
    container = env.client.containers.get(env.proxy_name)
    with pytest.raises(routing.RoutingError, match="the proxy refused the switch .invalid color 'live-x'."):
        swap_markers(container, "live-x", "none", lock_owner())
    listing = container.exec_run(["ls", "-A", ROUTING_DIR]).output.decode().split()
    assert sorted(listing) == ["live-blue", "preview-green"]  # no lock left, no stray marker
    assert colors(env) == before
    assert routing.current(env.proxy_name, env.client) == before_state
    assert proxy_identity(env) == before_identity
    assert worker_pids(env) == before_workers  # no reload happened


def test_missing_proxy_container_gives_a_clear_error(env: Any) -> None:
    with pytest.raises(routing.RoutingError, match="proxy container 'no-such-proxy' not found"):
        routing.switch("no-such-proxy", "green", "blue", endpoint(env), client=env.client)
    proc = subprocess.run(
        [sys.executable, "-m", "release.routing", "switch", "--to", "blue",
         "--container", "no-such-proxy", "--no-handoff", "--reason", "drill"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 1
    assert "not found on the Docker Engine" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dynamic_provider_after_pickling_switches_and_reapplies(env: Any) -> None:
    """What the engine runs: the dill-serialised provider's create/update/read."""
    from pulumi.dynamic.dynamic import serialize_provider

    provider = dill.loads(base64.b64decode(serialize_provider(routing.RoutingProvider())))
    container = env.client.containers.get(env.proxy_name)
    props = {
        "proxyContainerName": env.proxy_name, "proxyContainerId": container.id,
        "liveColor": "green", "previewColor": "blue", "publicUrl": env.live_url,
        "postPromotionChecks": True, "renderedFiles": render_markers("green", "blue"),
    }
    created = provider.create(props)
    assert created.outs["liveColor"] == "green"
    assert colors(env) == {"200:green:green"}
    news = {**props, "liveColor": "blue", "previewColor": "green",
            "renderedFiles": render_markers("blue", "green")}
    assert provider.diff(created.id, created.outs, news).changes
    updated = provider.update(created.id, created.outs, news)
    assert updated.outs["previousLiveColor"] == "green" and updated.outs["handoffMs"] is None
    assert colors(env) == {"200:blue:blue"}
    # Someone switched by hand (emergency CLI): refresh sees the color really served.
    routing.switch(env.proxy_name, "green", "blue", endpoint(env), client=env.client)
    assert provider.read(created.id, updated.outs).outs["liveColor"] == "green"
    # Missing proxy: the update fails with the clear error.
    with pytest.raises(routing.RoutingError, match="not found"):
        provider.update(created.id, updated.outs, {**news, "proxyContainerName": "no-such-proxy"})


LOCK_DIR = f"{ROUTING_DIR}/.switch.lock"


def hold_lock(env: Any, holder: str, age_s: int) -> None:
    """Leave the switch lock as another switch (started `age_s` ago) would."""
    container = env.client.containers.get(env.proxy_name)
    script = f'mkdir -p {LOCK_DIR} && echo "{holder} $(( $(date +%s) - {age_s} ))" > {LOCK_DIR}/owner'
    assert container.exec_run(["sh", "-c", script], user="0").exit_code == 0


def lock_present(env: Any) -> bool:
    container = env.client.containers.get(env.proxy_name)
    return bool(container.exec_run(["test", "-d", LOCK_DIR]).exit_code == 0)


def test_a_switch_in_progress_blocks_another_and_traffic_stays(env: Any) -> None:
    routing.switch(env.proxy_name, "blue", "green", endpoint(env), client=env.client)
    assert not lock_present(env)  # released after a successful switch
    before_file = routing.current(env.proxy_name, env.client)
    hold_lock(env, "ci-runner/4242/abcd", age_s=5)
    try:
        with pytest.raises(routing.RoutingError) as blocked:
            routing.switch(env.proxy_name, "green", "blue", endpoint(env), client=env.client, lock_wait_s=0.5)
        assert "another switch (ci-runner/4242/abcd, started" in str(blocked.value)
        assert "traffic unchanged" in str(blocked.value)
        assert colors(env) == {"200:blue:blue"}
        assert routing.current(env.proxy_name, env.client) == before_file
        assert lock_present(env)  # someone else's lock is not ours to drop
    finally:
        env.client.containers.get(env.proxy_name).exec_run(["rm", "-rf", LOCK_DIR], user="0")


def test_an_abandoned_lock_is_taken_over(env: Any) -> None:
    routing.switch(env.proxy_name, "blue", "green", endpoint(env), client=env.client)
    hold_lock(env, "dead-host/1/0000", age_s=LOCK_STALE_S + 5)
    result = routing.switch(env.proxy_name, "green", "blue", endpoint(env), client=env.client,
                            lock_wait_s=0.5)
    assert result.live == "green" and colors(env) == {"200:green:green"}
    assert not lock_present(env)


def test_concurrent_switches_run_one_after_the_other(env: Any) -> None:
    """A `pulumi up` and the emergency CLI at once: both complete, one after the other, and the
    proxy ends on the color of the switch that finished last (unserialised, one would see the
    other's color while confirming and fail or switch back)."""
    import concurrent.futures
    import threading
    import time

    routing.switch(env.proxy_name, "blue", "green", endpoint(env), client=env.client)
    finished: list[tuple[float, str]] = []
    start = threading.Barrier(2)

    def go(live: Any, preview: Any) -> routing.SwitchResult:
        start.wait()
        result = routing.switch(env.proxy_name, live, preview, endpoint(env), client=env.client,
                                lock_wait_s=30.0)
        finished.append((time.monotonic(), live))
        return result

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        to_green = pool.submit(go, "green", "blue")
        to_blue = pool.submit(go, "blue", "green")
        results = [to_green.result(timeout=90), to_blue.result(timeout=90)]
    assert {r.live for r in results} == {"green", "blue"}
    last = max(finished)[1]
    assert colors(env) == {f"200:{last}:{last}"}
    assert routing.live_color_of(routing.current(env.proxy_name, env.client)) == last
    assert not lock_present(env)
