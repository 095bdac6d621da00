"""The swarm target under the real engine, on the 3-node lab: the program's own `swarmlab` stack.

`pulumi up --policy-pack policies` from nothing deploys both colors as services and the proxy on
both edge nodes; a second preview (and one after `refresh`) plans nothing; each color runs on
at least 2 nodes; the preview listener admits only `swarm.previewFrom`; a flip under load moves
every edge node with 0 failed requests and leaves the old color's service untouched (warm); a
faulty candidate is refused by the gate with live unchanged on every edge node; the emergency
CLI rolls every edge node back and forth by marker renames under load; a node holding a live task
is cut off under load with 0 failed requests and its task replaced within 30 s.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.engine.engine import EngineProject
from tests.support import missing
from tools.swarm_lab import Lab

pytestmark = pytest.mark.engine
STACK = "swarmlab"
APP_IMAGE = "paper-trading-reference-app:test"
NGINX_IMAGE = "paper-trading-ci/nginx:1.30.6"
PREFIX = "paper-trading-lab"
EDGES = ("n1", "n2")
PORT, PREVIEW_PORT = 28080, 28081
ROOT = Path(__file__).resolve().parents[2]
#: Requests answered / failed under load, per operation (written to build/swarm-target.json).
MEASURED: dict[str, dict[str, int]] = {}


@pytest.fixture(scope="module")
def project(swarm_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProject]:
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        missing("the Pulumi CLI is not installed (run scripts/install-engine)")
    assert pulumi is not None
    engine = EngineProject(tmp_path_factory.mktemp("swarm-target"), pulumi, stack=STACK)
    engine.prepare()
    # The policy pack's own virtualenv (policies/venv): the project's, as scripts/test builds it.
    (engine.workdir / "policies" / "venv").symlink_to(ROOT / "venv")
    try:
        yield engine
    finally:
        engine.run("destroy", "--yes", check=False)
        out = ROOT / "build" / "swarm-target.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({"timings_s": engine.timings, "load": MEASURED}, indent=2) + "\n")
        print(f"\nswarm target: {engine.timings} {MEASURED}")


def _edge_urls(swarm_lab: Lab) -> list[str]:
    return [f"http://{swarm_lab.node(name).address}:{PORT}" for name in EDGES]


def _served(url: str, n: int = 6) -> set[str | None]:
    found: set[str | None] = set()
    for _ in range(n):
        try:
            found.add(httpx.get(f"{url}/health", timeout=5).headers.get("x-deployment-color"))
        except httpx.HTTPError:
            found.add(None)
    return found


def _tasks(swarm_lab: Lab, color: str, lost: str | None = None) -> list[dict[str, Any]]:
    """Running tasks of `color`; with `lost` (a node id, cut off), asked of a manager that is not on
    that node and the node's tasks left out (a cut-off manager's own API hangs for seconds)."""
    exclude = tuple(n.name for n in swarm_lab.nodes if lost and _node_id(swarm_lab, n.name) == lost)
    tasks: list[dict[str, Any]] = swarm_lab.manager(exclude=exclude).api.tasks(
        filters={"service": f"{PREFIX}-app-{color}", "desired-state": "running"})
    tasks = [t for t in tasks if t["NodeID"] != lost]
    return [t for t in tasks if t["Status"]["State"] == "running"]


def _service_version(swarm_lab: Lab, color: str) -> int:
    return int(swarm_lab.manager().services.get(f"{PREFIX}-app-{color}").attrs["Version"]["Index"])


_NODE_IDS: dict[str, str] = {}


def _node_id(swarm_lab: Lab, name: str) -> str:
    """A node's swarm id, remembered (asked while every node answers)."""
    if name not in _NODE_IDS:
        _NODE_IDS[name] = swarm_lab.node(name).client().info()["Swarm"]["NodeID"]
    return _NODE_IDS[name]


def _set_faults(swarm_lab: Lab, color: str, *faults: str) -> None:
    """Faults on every running task of `color`, through the engine of the node it runs on."""
    body = json.dumps({"faults": list(faults)})
    for name in ("n1", "n2", "n3"):
        client = swarm_lab.node(name).client()
        for container in client.containers.list(
                filters={"label": f"com.docker.swarm.service.name={PREFIX}-app-{color}"}):
            result = container.exec_run(["curl", "-sf", "-X", "POST", "-H", "Content-Type: application/json",
                                         "-d", body, "http://127.0.0.1:3000/admin/faults"])
            assert result.exit_code == 0, result.output


class _Load:
    """Requests on fresh connections to every edge node in turn until stopped; counts failures."""

    def __init__(self, urls: list[str], timeout: float = 5) -> None:
        self.urls, self.ok, self.failed, self.timeout = urls, 0, 0, timeout
        self.colors: set[str | None] = set()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            url = self.urls[i % len(self.urls)]
            i += 1
            try:
                response = httpx.get(f"{url}/health", timeout=self.timeout)
                if response.status_code == 200:
                    self.ok += 1
                    self.colors.add(response.headers.get("x-deployment-color"))
                else:
                    self.failed += 1
                    self.errors.append(f"{url}: {response.status_code}")
            except httpx.HTTPError as exc:
                self.failed += 1
                self.errors.append(f"{url}: {exc!r}")

    def __enter__(self) -> _Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_up_from_nothing_with_the_policy_pack(swarm_lab: Lab, project: EngineProject) -> None:
    project.run("up", "--yes", "--skip-preview", "--policy-pack", "policies", timing="swarm target up")
    outputs = project.outputs()
    assert outputs["activeColor"] == "blue"
    assert outputs["edgeUrls"] == _edge_urls(swarm_lab)
    for url in _edge_urls(swarm_lab):
        assert _served(url) == {"blue"}, url


def test_each_color_runs_on_at_least_two_nodes(swarm_lab: Lab) -> None:
    for color in ("blue", "green"):
        tasks = _tasks(swarm_lab, color)
        assert len(tasks) == 2, tasks
        assert len({t["NodeID"] for t in tasks}) == 2, color


def test_a_second_preview_and_one_after_refresh_plan_nothing(project: EngineProject) -> None:
    proc = project.run("preview", "--expect-no-changes", "--diff", check=False)
    assert proc.returncode == 0, proc.stdout[-12000:]
    project.run("refresh", "--yes", "--skip-preview")
    proc = project.run("preview", "--expect-no-changes", "--diff", check=False)
    assert proc.returncode == 0, proc.stdout[-12000:]


def test_the_preview_listener_admits_only_preview_from(swarm_lab: Lab) -> None:
    url = f"http://{swarm_lab.node('n1').address}:{PREVIEW_PORT}/health"
    assert httpx.get(url, headers={"X-Preview-Color": "green"}, timeout=5).status_code == 200
    # From another node's address (not in swarm.previewFrom): nginx refuses it.
    script = (f"import urllib.request,urllib.error\ntry:\n urllib.request.urlopen('{url}',timeout=5)\n"
              " print(200)\nexcept urllib.error.HTTPError as e:\n print(e.code)")
    netns = f"--net=/var/run/netns/{swarm_lab.node('n3').netns}"
    done = subprocess.run(["nsenter", netns, "python3", "-c", script], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "403"


def test_flip_under_load_moves_every_edge_and_leaves_blue_warm(
        swarm_lab: Lab, project: EngineProject) -> None:
    blue_before = _service_version(swarm_lab, "blue")
    project.config_set("deployment.activeColor", "green")
    with _Load(_edge_urls(swarm_lab)) as load:
        project.run("up", "--yes", "--skip-preview", "--policy-pack", "policies", timing="swarm flip")
        time.sleep(1)
    MEASURED["flip"] = {"ok": load.ok, "failed": load.failed}
    assert load.failed == 0 and load.ok > 50, (load.ok, load.failed, load.errors[:5])
    assert load.colors == {"blue", "green"}
    assert project.outputs()["activeColor"] == "green"
    for url in _edge_urls(swarm_lab):
        assert _served(url) == {"green"}, url
    # The old color was not touched: same service version, still 2 running tasks (warm for rollback).
    assert _service_version(swarm_lab, "blue") == blue_before
    assert len(_tasks(swarm_lab, "blue")) == 2


def _cli(project: EngineProject, *args: str) -> subprocess.CompletedProcess[str]:
    python = str(project.workdir / "venv" / "bin" / "python")
    return subprocess.run([python, "-m", "release.swarm", *args, "--stack", STACK], cwd=project.workdir,
                          capture_output=True, text=True, check=False)


def test_rollback_is_a_marker_rename_on_every_edge_with_no_failed_request(
        swarm_lab: Lab, project: EngineProject) -> None:
    with _Load(_edge_urls(swarm_lab)) as load:
        back = _cli(project, "switch", "--to", "blue", "--reason", "engine test: instant rollback")
        time.sleep(1)
    MEASURED["rollback"] = {"ok": load.ok, "failed": load.failed}
    assert back.returncode == 0, back.stderr
    assert load.failed == 0 and load.colors == {"blue", "green"}, (load.ok, load.failed, load.errors[:5])
    for url in _edge_urls(swarm_lab):
        assert _served(url) == {"blue"}, url
    shown = _cli(project, "show")
    assert shown.returncode == 0 and shown.stdout.split() == ["ptsl-n1", "blue", "ptsl-n2", "blue"]
    # The state still says green is live; a change to blue (which the edge serves now) is refused.
    project.config_set("deployment.blue.replicas", "3")
    try:
        refused = project.run("preview", check=False)
    finally:
        project.config_set("deployment.blue.replicas", "2")
    assert refused.returncode != 0
    assert "ptsl-n1 serves blue; ptsl-n2 serves blue, but this run would change" in refused.stdout, \
        refused.stdout[-3000:]
    forward = _cli(project, "switch", "--to", "green", "--reason", "engine test: back to the released color")
    assert forward.returncode == 0, forward.stderr
    for url in _edge_urls(swarm_lab):
        assert _served(url) == {"green"}, url


def _nft(swarm_lab: Lab, node: str, *args: str) -> None:
    netns = f"--net=/var/run/netns/{swarm_lab.node(node).netns}"
    subprocess.run(["nsenter", netns, "nft", *args], check=True, capture_output=True, text=True)


def test_a_switch_one_edge_cannot_confirm_is_undone_on_every_edge(
        swarm_lab: Lab, project: EngineProject) -> None:
    """n2's live listener drops every packet: its markers move, its confirmation fails, and both
    nodes are renamed back, so the edge never stays split."""
    _nft(swarm_lab, "n2", "add", "table", "inet", "ptsl_test")
    # Before Docker's DNAT (host-mode ports are DNAT to the task): a prerouting hook ahead of nat.
    _nft(swarm_lab, "n2", "add", "chain", "inet", "ptsl_test", "pre",
         "{ type filter hook prerouting priority -300 ; policy accept ; }")
    _nft(swarm_lab, "n2", "add", "rule", "inet", "ptsl_test", "pre", "tcp", "dport", str(PORT), "drop")
    try:
        moved = _cli(project, "switch", "--to", "blue", "--reason", "engine test: one edge unreachable")
    finally:
        _nft(swarm_lab, "n2", "delete", "table", "inet", "ptsl_test")
    assert moved.returncode == 1
    assert "node ptsl-n2:" in moved.stderr, moved.stderr
    assert "switched back on every edge node (ptsl-n1, ptsl-n2)" in moved.stderr, moved.stderr
    for url in _edge_urls(swarm_lab):
        assert _served(url) == {"green"}, url


def test_a_faulty_candidate_is_refused_and_every_edge_stays_live(
        swarm_lab: Lab, project: EngineProject) -> None:
    _set_faults(swarm_lab, "blue", "paper_mode_off")
    try:
        project.config_set("deployment.activeColor", "blue")
        proc, events = project.events("up", "--yes", "--skip-preview", timing="swarm refused up")
    finally:
        _set_faults(swarm_lab, "blue")
    assert proc.returncode != 0
    errors = [e["diagnosticEvent"]["message"] for e in events
              if e.get("diagnosticEvent", {}).get("severity") == "error"]
    assert any("safety.paper_trading_mode" in m and "blue was not promoted" in m for m in errors), errors
    assert project.outputs()["activeColor"] == "green"
    for url in _edge_urls(swarm_lab):
        assert _served(url) == {"green"}, url


def test_a_node_holding_live_tasks_lost_drops_no_request(swarm_lab: Lab) -> None:
    """A node running a live task is cut off while clients go through n1's edge: nginx retries the
    next task (connect timeout 5 s), Swarm replaces the lost task on the others within 30 s."""
    names = {_node_id(swarm_lab, n.name): n.name for n in swarm_lab.nodes}
    victim = sorted({names[t["NodeID"]] for t in _tasks(swarm_lab, "green")} - {"n1"})[0]
    lost = _node_id(swarm_lab, victim)
    replaced_after: float | None = None
    with _Load(_edge_urls(swarm_lab)[:1], timeout=20) as load:
        started = time.monotonic()
        swarm_lab.partition(victim)
        try:
            deadline = started + 60
            while time.monotonic() < deadline:
                if len(_tasks(swarm_lab, "green", lost=lost)) == 2:
                    replaced_after = time.monotonic() - started
                    break
                time.sleep(0.5)
            time.sleep(3)  # traffic on the replacement too
        finally:
            swarm_lab.heal(victim)
    MEASURED["partition"] = {"ok": load.ok, "failed": load.failed,
                             "replaced_ms": int((replaced_after or -1) * 1000)}
    assert load.failed == 0 and load.ok > 20, (load.ok, load.failed, load.errors[:5])
    assert replaced_after is not None and replaced_after <= 30, replaced_after
    # The healed node rejoins (a raft leader again, every node ready) before the stack is destroyed.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if all(node["state"] == "ready" for node in swarm_lab.status().values()):
                break
        except Exception:  # noqa: BLE001 - no leader yet
            pass
        time.sleep(2)
