"""The `ci` stack's locally built images honour the contract the program relies on.

No Pulumi engine: the ci stack is rendered (`tools.render.evaluate("ci")`) and every
container it enables is started with the Docker SDK from its rendered inputs, the way
pulumi-docker would: image, user, command, entrypoint, envs, tmpfs, read-only root,
capabilities, security options, memory/CPU limits, init, restart policy, user networks
with the rendered aliases, volumes (fresh named volumes, shared ones shared), and the
uploads written into the created-but-not-started container (a file carrier, `start: false`,
is only created). Containers start in
dependency order (the rendered `dependsOn`), and a dependency created with `wait=true`
must be healthy first, as the provider waits for it. Then each container must become
healthy by its own rendered healthcheck, or, without one (only the exporters whose upstream
image is FROM scratch, stack.monitoring.NO_HEALTHCHECK), answer on its listen port;
the exporters must also reach what they export (pg_up 1, redis_up 1, nginx_up 1).

Deviations from the provider, each deliberate:
- ports are not published (the ci stack's host ports may be in use; nothing here needs them);
- healthchecks run every second instead of the rendered interval (same command, timeout,
  retries and start period): Docker 20.10 has no start interval, and a 10-60 s first
  check would not fit the time budget;
- names get a test prefix (hostnames stay as rendered: RabbitMQ's node name uses it),
  and every rendered container name is also an alias on its networks.

Images: `scripts/build-test-images --ci` (reused when already built; see docs/ci-stack.md).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.ci_stack import STACK, CiStack

pytestmark = pytest.mark.docker

HEALTH_TIMEOUT = 75.0
CONTAINER_TYPE = "docker:index/container:Container"
















def test_ci_stack_uses_only_local_images(client: Any) -> None:
    from tools.render import evaluate

    graph = evaluate(STACK)
    images = sorted({r.inputs["image"] for r in graph.containers})
    for image in images:
        client.images.get(image)  # raises ImageNotFound: the ci stack would need a registry
    services = {r.label_map.get("paper-trading.service") for r in graph.containers}
    assert not services & {"grafana", "loki"}, "disabled in the ci stack (docs/ci-stack.md)"
    # Logs run on VictoriaLogs + vlagent, built here from the Go module proxy (images/_go).
    assert {"victorialogs", "log-collector"} <= services


def test_every_ci_container_becomes_healthy(client: Any) -> None:
    from tools.render import evaluate

    graph = evaluate(STACK)
    stack = CiStack(client, graph)
    began = time.monotonic()
    deadline = began + HEALTH_TIMEOUT
    try:
        stack.create_networks()
        stack.start_all(deadline)
        results: dict[str, bool | None] = {r.inputs["name"]: None for r in graph.containers}
        took: dict[str, float] = {}
        while time.monotonic() < deadline and any(v is None for v in results.values()):
            for res in graph.containers:
                name = res.inputs["name"]
                if results[name] is None:
                    results[name] = stack.status(res)
                    if results[name] is not None:
                        took[name] = time.monotonic() - began
            time.sleep(0.5)
        print("healthy after (s, from the first container's start):",  # shown with `pytest -s`
              ", ".join(f"{n}={t:.0f}" for n, t in sorted(took.items(), key=lambda kv: kv[1])))
        bad = [r for r in graph.containers if results[r.inputs["name"]] is not True]
        assert not bad, (
            f"not healthy after {time.monotonic() - began:.0f}s:\n  "
            + "\n  ".join(stack.describe(r) for r in bad)
        )
    finally:
        stack.remove()
