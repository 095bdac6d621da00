"""The 3-node Swarm lab (tools/swarm_lab.py) and the facts the Swarm target is designed on.

Three dockerd nodes in network namespaces, every one a manager: the swarm forms, a dnsrr
service spreads its tasks over the nodes and they reach each other over an overlay network,
a node cut off the hub is marked down and its task replaced on another node within 30 s, and
`down` leaves no namespace, mount, cgroup, process or file behind.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
from docker.types import EndpointSpec, ServiceMode

from tools.swarm_lab import Lab

pytestmark = pytest.mark.docker
IMAGE = "paper-trading-reference-app:test"
#: DNS round robin: no virtual IP (this kernel has no IPVS).
DNSRR = EndpointSpec(mode="dnsrr")
PROBE = """
import json, socket, urllib.request
found = {}
for ip in sorted({a[4][0] for a in socket.getaddrinfo("tasks.probe", 3000)}):
    try:
        found[ip] = urllib.request.urlopen(f"http://{ip}:3000/health", timeout=3).status
    except OSError as exc:
        found[ip] = str(exc)
print(json.dumps(found))
"""


def _tasks(client: Any, service: str) -> list[dict[str, Any]]:
    return [t for t in client.api.tasks(filters={"service": service}) if t["DesiredState"] == "running"]


def _wait(predicate: Any, timeout: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def _running_on(client: Any, service: str) -> dict[str, str]:
    """task id -> node id of the service's running tasks."""
    return {t["ID"]: t["NodeID"] for t in _tasks(client, service) if t["Status"]["State"] == "running"}


def test_three_managers_ready_with_their_labels(swarm_lab: Lab) -> None:
    status = swarm_lab.status()
    assert {name: (s["state"], s["availability"], s["labels"]) for name, s in status.items()} == {
        "n1": ("ready", "active", "edge"), "n2": ("ready", "active", "edge"),
        "n3": ("ready", "active", "data")}
    managers = [n for n in swarm_lab.manager().nodes.list() if n.attrs.get("ManagerStatus")]
    assert len(managers) == 3


def test_a_dnsrr_service_spreads_and_its_tasks_reach_each_other_over_the_overlay(swarm_lab: Lab) -> None:
    client = swarm_lab.manager()
    network = client.networks.create("probe-net", driver="overlay", attachable=True)
    service = client.services.create(IMAGE, name="probe", networks=[network.id], endpoint_spec=DNSRR,
                                     mode=ServiceMode("replicated", replicas=3))
    try:
        assert _wait(lambda: len(_running_on(client, "probe")) == 3, 90), _tasks(client, "probe")
        assert len(set(_running_on(client, "probe").values())) == 3  # one per node: spread
        local = next(c for c in swarm_lab.nodes[0].client().containers.list() if c.name.startswith("probe."))
        answers: dict[str, Any] = {}

        def all_three_answer() -> bool:
            # tasks.<service> is spread by gossip: a task on another node can take seconds to appear.
            done = local.exec_run(["python3", "-c", PROBE])
            assert done.exit_code == 0, done.output
            answers.clear()
            answers.update(json.loads(done.output.decode()))
            return len(answers) == 3 and set(answers.values()) == {200}

        assert _wait(all_three_answer, 30, step=1), answers
    finally:
        service.remove()
        _wait(lambda: not swarm_lab.nodes[0].client().containers.list(filters={"name": "probe."}), 60)
        network.remove()


def test_a_partitioned_node_is_marked_down_and_its_task_replaced_within_30_s(swarm_lab: Lab) -> None:
    client = swarm_lab.manager()
    client.services.create(IMAGE, name="spread", mode=ServiceMode("replicated", replicas=3),
                           endpoint_spec=DNSRR)
    try:
        assert _wait(lambda: len(_running_on(client, "spread")) == 3, 90)
        n3_id = swarm_lab.swarm_node(swarm_lab.node("n3")).id
        assert n3_id in _running_on(client, "spread").values()
        started = time.monotonic()
        swarm_lab.partition("n3")
        manager = swarm_lab.manager(exclude=("n3",))

        def down() -> bool:
            return bool(manager.nodes.get(n3_id).attrs["Status"]["State"] == "down")

        assert _wait(down, 30), "n3 never marked down"
        marked = time.monotonic() - started

        def replaced() -> bool:
            running = _running_on(manager, "spread")
            return len([n for n in running.values() if n != n3_id]) == 3

        assert _wait(replaced, 30), _tasks(manager, "spread")
        elapsed = time.monotonic() - started
        assert elapsed < 30, f"replacement after {elapsed:.1f} s (n3 down after {marked:.1f} s)"
    finally:
        swarm_lab.heal("n3")
        _wait(lambda: swarm_lab.status()["n3"]["state"] == "ready", 60)
        swarm_lab.manager().services.get("spread").remove()


def test_the_lab_is_only_reachable_on_its_own_subnet(swarm_lab: Lab) -> None:
    """The host reaches the nodes' addresses (a dockerd listens for swarm on 2377) via its veth."""
    with socket.create_connection((swarm_lab.node("n1").address, 2377), timeout=3):
        pass
