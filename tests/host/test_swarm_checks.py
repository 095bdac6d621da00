"""The gate's Swarm checks (release/swarm/checks.py) on real services of the 3-node lab.

Each case builds a service the way a candidate can really end up, and the checks must name
exactly the one that fails: all on one node (`swarm.spread`), tasks that never turn healthy
(`swarm.replicas`), an update Swarm rolled back (`swarm.rollout`); a good candidate passes all,
also when the gate meets it while Swarm still reports its finished update as moving.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from docker.types import EndpointSpec, Healthcheck, ServiceMode, UpdateConfig

from release.swarm.checks import SWARM_CHECKS, SwarmCheck, run_swarm_checks, settled_checks
from release.swarm.nodes import Node
from tests.support.swarm_lab import LAB_IMAGES
from tools.swarm_lab import Lab

pytestmark = pytest.mark.docker
IMAGE = LAB_IMAGES[0]
SECOND = 1_000_000_000


def _nodes(lab: Lab) -> list[Node]:
    return [Node(f"ptsl-{name}", lab.node(name).docker_host, lab.node(name).address)
            for name in ("n1", "n2", "n3")]


def _health(test: str) -> Healthcheck:
    return Healthcheck(test=["CMD-SHELL", test], interval=SECOND, timeout=2 * SECOND, retries=2,
                       start_period=SECOND)


def _service(lab: Lab, name: str, *, health: str = "curl -sf http://127.0.0.1:3000/health/ready",
             constraints: list[str] | None = None, replicas: int = 2) -> Any:
    return lab.manager().services.create(
        IMAGE, name=name, mode=ServiceMode("replicated", replicas=replicas), constraints=constraints or [],
        healthcheck=_health(health), endpoint_spec=EndpointSpec(mode="dnsrr"),
        update_config=UpdateConfig(parallelism=1, order="start-first", failure_action="rollback",
                                   monitor=4 * SECOND),
        preferences=[("spread", "node.id")],
    )


def _checks(lab: Lab, service: str, replicas: int = 2) -> dict[str, SwarmCheck]:
    results = run_swarm_checks(lab.node("n1").docker_host, service, replicas, _nodes(lab))
    assert [r.name for r in results] == list(SWARM_CHECKS)
    return {r.name: r for r in results}


def _failed(lab: Lab, service: str) -> set[str]:
    return {name for name, result in _checks(lab, service).items() if not result.passed}


def _until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(1)
    return predicate()


def test_a_healthy_candidate_on_two_nodes_passes_every_check(swarm_lab: Lab) -> None:
    _service(swarm_lab, "good")
    assert _until(lambda: _failed(swarm_lab, "good") == set(), 60), _checks(swarm_lab, "good")
    assert len(_checks(swarm_lab, "good")["swarm.spread"].details["nodes"]) == 2


def test_every_task_on_one_node_fails_spread_only(swarm_lab: Lab) -> None:
    _service(swarm_lab, "lonely", constraints=["node.hostname==ptsl-n2"])
    assert _until(lambda: _checks(swarm_lab, "lonely")["swarm.replicas"].passed, 60)
    assert _failed(swarm_lab, "lonely") == {"swarm.spread"}


def test_tasks_that_never_turn_healthy_fail_replicas(swarm_lab: Lab) -> None:
    _service(swarm_lab, "sick", health="exit 1")
    time.sleep(8)  # started, checked and failed at least twice
    failed = _failed(swarm_lab, "sick")
    assert "swarm.replicas" in failed and "swarm.rollout" not in failed, failed


def test_an_update_swarm_rolled_back_fails_rollout(swarm_lab: Lab) -> None:
    service = _service(swarm_lab, "flaky")
    assert _until(lambda: _failed(swarm_lab, "flaky") == set(), 60)
    service.reload()
    service.update(healthcheck=_health("exit 1"))  # the new tasks never turn healthy

    def state() -> str | None:
        status: dict[str, Any] = swarm_lab.manager().services.get("flaky").attrs.get("UpdateStatus") or {}
        return status.get("State")

    assert _until(lambda: state() == "rollback_completed", 90), state()
    results = _checks(swarm_lab, "flaky")
    assert not results["swarm.rollout"].passed
    assert results["swarm.rollout"].details["state"] == "rollback_completed"
    # Swarm put the old tasks back: they are healthy and spread, so only the rollout speaks.
    assert _until(lambda: _failed(swarm_lab, "flaky") == {"swarm.rollout"}, 60), _checks(swarm_lab, "flaky")


def test_the_gate_waits_out_an_update_still_moving_and_judges_it_once_settled(swarm_lab: Lab) -> None:
    """Swarm reports an update `updating` until its monitor window after the last new task has
    passed: judged at once, `swarm.rollout` fails; `settled_checks` (the gate's) waits it out."""
    service = _service(swarm_lab, "moving")
    assert _until(lambda: _failed(swarm_lab, "moving") == set(), 60)
    service.reload()
    service.update(env=["RELEASE=2"])
    # Judged at once (the supervisor sets the state within moments): moving, refused.
    assert _until(lambda: not _checks(swarm_lab, "moving")["swarm.rollout"].passed, 10)
    began = time.monotonic()
    results = settled_checks(swarm_lab.node("n1").docker_host, "moving", 2, _nodes(swarm_lab), wait_s=90)
    waited = time.monotonic() - began
    assert [(r.name, r.passed) for r in results] == [(name, True) for name in SWARM_CHECKS], results
    assert results[0].details["state"] == "completed" and waited > 1, waited
    # A rollout that stays moving is judged as it is at the deadline: refused, never waited forever.
    service.reload()
    service.update(env=["RELEASE=3"])
    assert _until(lambda: _checks(swarm_lab, "moving")["swarm.rollout"].details["state"] == "updating", 10)
    stuck = settled_checks(swarm_lab.node("n1").docker_host, "moving", 2, _nodes(swarm_lab), wait_s=0)
    assert not stuck[0].passed and stuck[0].details["state"] == "updating", stuck[0]


def test_a_manager_that_cannot_answer_fails_every_check(swarm_lab: Lab) -> None:
    results = run_swarm_checks("unix:///run/ptsl/no-such.sock", "good", 2, _nodes(swarm_lab))
    assert [(r.name, r.passed) for r in results] == [(name, False) for name in SWARM_CHECKS]
