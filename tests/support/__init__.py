"""Shared test helpers: rendered graphs, and tools that must exist in CI.

Under CI=true a missing tool or service fails the test instead of skipping it,
so CI never goes green on skipped proof.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from typing import Any

import pytest

from tools.render import Graph, evaluate, stack_config

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """Skip on a laptop; fail in CI."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/usr/local/bin/{name}") if os.path.exists(p)),
        None,
    )
    if path is None:
        missing(f"tool {name!r} not found")
    assert path is not None
    return path


def require_docker() -> None:
    require_tool("docker")
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        missing("Docker Engine not reachable (`docker info` failed)")


@cache
def rendered(stack: str) -> Graph:
    """The stack's graph from its committed file (cached: evaluation is deterministic)."""
    return evaluate(stack)


def render_with(stack: str, **overrides: Any) -> Graph:
    """Evaluate `stack` with some `paper-trading:<key>` values replaced (JSON-encodable)."""
    import json

    config, secrets = stack_config(stack)
    for key, value in overrides.items():
        full = f"paper-trading:{key}"
        if value is None:
            config.pop(full, None)
        else:
            config[full] = value if isinstance(value, str) else json.dumps(value)
    return evaluate(stack, config=config, secret_keys=secrets)


def container(graph: Graph, name: str) -> dict[str, Any] | None:
    for res in graph.containers:
        if res.inputs.get("name") == name:
            return res.inputs
    return None


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """Terminate a server a test started; kill it if it does not stop in time."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def serve_in_thread(httpd: Any) -> Any:
    """Run a stdlib HTTP server on a daemon thread; a generator for a fixture to `yield from`.

    Yields the server and always shuts it down, closes its socket and joins the thread.
    """
    import threading

    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
