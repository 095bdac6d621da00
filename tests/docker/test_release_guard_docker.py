"""The release guard and the spent approval read a real proxy (issue 20, items 1-2).

One stack (tests/support/docker_env.py): the proxy as the program renders it, blue and green from the
reference-app image. The routing switch moves traffic for real; the guard's `problems` and
the gate's `spent` then read which color the proxy serves through the Docker API.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from release import routing
from release.gate import PromotionGateProvider, spent
from release.guard import ReleaseGuardProvider, problems, served_color
from tests.support import require_docker, require_tool

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def env() -> Iterator[Any]:
    require_docker()
    require_tool("debootstrap")
    from tests.support.docker_env import docker_env

    with docker_env() as stack:
        yield stack


def _guard(env: Any, *changing: str) -> dict[str, Any]:
    return {"proxyContainerName": env.proxy_name, "recordedLive": "blue", "changing": list(changing)}


def _unreachable_engine() -> Any:
    import docker

    return docker.DockerClient(base_url="unix:///nonexistent/docker.sock", version="1.41", timeout=2)


def test_before_a_promotion_nothing_is_served_and_every_approval_is_spent(env: Any) -> None:
    assert served_color(env.proxy_name, env.client) == "none"
    assert problems(_guard(env, "blue", "green"), env.client) == []
    assert spent({"approvedColor": "blue"}, {"proxyContainerName": env.proxy_name}, env.client) is True


def test_the_guard_refuses_to_replace_the_color_the_proxy_serves(env: Any) -> None:
    routing.switch(env.proxy_name, "blue", "green", routing.Endpoint(env.live_url), client=env.client)
    assert served_color(env.proxy_name, env.client) == "blue"
    refused = problems(_guard(env, "blue"), env.client)
    assert [prop for prop, _ in refused] == ["changing"]
    assert "serves blue" in refused[0][1]
    assert problems(_guard(env, "green"), env.client) == []
    assert problems(_guard(env), env.client) == []
    # Through the provider, as the engine calls it on every preview and up.
    check = ReleaseGuardProvider().check({}, _guard(env, "blue"))
    assert [failure.property for failure in check.failures] == ["changing"]


def test_the_guard_fails_closed_when_it_cannot_look(env: Any) -> None:
    unreachable = _unreachable_engine()
    refused = problems(_guard(env, "green"), unreachable)
    assert [prop for prop, _ in refused] == ["changing"]
    assert problems(_guard(env), unreachable) == []  # nothing changes: nothing to protect
    unnamed = {**_guard(env, "green"), "proxyContainerName": ""}
    assert problems(unnamed, env.client)[0][0] == "proxyContainerName"


def test_an_approval_is_spent_unless_the_proxy_serves_it(env: Any) -> None:
    routing.switch(env.proxy_name, "green", "blue", routing.Endpoint(env.live_url), client=env.client)
    news = {"proxyContainerName": env.proxy_name}
    assert spent({"approvedColor": "green"}, news, env.client) is False
    # A switch that failed left blue live: the approval of green no longer stands.
    assert spent({"approvedColor": "blue"}, news, env.client) is True
    assert spent({"approvedColor": "green"}, {"proxyContainerName": "pt-no-such-proxy"}, env.client) is True
    assert spent({"approvedColor": "green"}, news, _unreachable_engine()) is True
    assert spent({"approvedColor": "green"}, {}, env.client) is True


def test_the_gate_checks_again_after_a_failed_switch(env: Any) -> None:
    """Same inputs, but the proxy does not serve the approved color: the diff asks for an update."""
    routing.switch(env.proxy_name, "green", "blue", routing.Endpoint(env.live_url), client=env.client)
    inputs = {"candidateColor": "green", "proxyContainerName": env.proxy_name, "enabled": True,
              "options": {}, "candidateContainers": ["a"]}
    olds = {**inputs, "approvedColor": "green", "secretsFingerprint": None}
    import release.gate as gate

    olds["secretsFingerprint"] = gate._fingerprint({k: None for k in gate.SECRET_FIELDS})
    assert PromotionGateProvider().diff("gate", olds, dict(inputs)).changes is False
    routing.switch(env.proxy_name, "blue", "green", routing.Endpoint(env.live_url), client=env.client)
    assert PromotionGateProvider().diff("gate", olds, dict(inputs)).changes is True
