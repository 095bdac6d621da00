"""`pulumi up` for real: the engine built by `scripts/install-engine`, the `ci` stack, the real dockerd.

One scenario, in order (each step starts from the state the previous one left):
preview (with the policy pack) -> a rogue program refused by the engine -> up from nothing ->
a no-op up and a refresh -> a faulty candidate refused by the gate -> a flip under load ->
a release on the idle color -> no plain secret in the state -> destroy keeping the data.
Each operation is timed; the figures are written to build/engine-timings.json.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.engine.engine import ROOT, EngineProject, changed, policy_violations
from tests.support import missing, require_docker, require_tool

pytestmark = pytest.mark.engine

STACK = "ci"
PREFIX = "paper-trading-ci"
APP_IMAGE = "paper-trading-reference-app:test"
RELEASE_IMAGE = "paper-trading-reference-app:ci-release"
SECRET_SIG = "4dabf18193072939515e22adb298388d"


def _pulumi() -> str:
    found = shutil.which("pulumi")
    if found is None:
        missing("the Pulumi CLI is not installed (run scripts/install-engine)")
    assert found is not None
    return found


def _docker() -> Any:
    import docker

    return docker.from_env()


def _stack_containers() -> list[Any]:
    """The engine's containers of the ci stack; not the ones Docker tests start from its render
    (labelled `paper-trading.test`), which another suite may run at the same time."""
    found = _docker().containers.list(all=True, filters={"label": f"paper-trading.stack={STACK}"})
    return [c for c in found if "paper-trading.test" not in c.labels]


CARRIER_LABEL = "paper-trading.carrier-for"


def _is_carrier(container: Any) -> bool:
    """A never-started file carrier (stack/carrier.py): `Created`, never running."""
    return CARRIER_LABEL in container.labels


def _data_volumes() -> list[Any]:
    volumes = _docker().volumes.list()
    return [v for v in volumes if v.name.startswith(f"{PREFIX}-") and v.name.endswith("-data")]


def _cleanup() -> None:
    client = _docker()
    for container in _stack_containers():
        container.remove(force=True)
    for network in client.networks.list():
        if network.name.startswith(f"{PREFIX}-"):
            network.remove()
    for volume in client.volumes.list():
        if volume.name.startswith(f"{PREFIX}-"):
            volume.remove(force=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProject]:
    pulumi = _pulumi()
    require_docker()
    build = subprocess.run([str(ROOT / "scripts" / "build-test-images"), "--ci"], capture_output=True,
                           text=True, timeout=1800)
    assert build.returncode == 0, build.stdout + build.stderr
    _cleanup()
    engine = EngineProject(tmp_path_factory.mktemp("engine"), pulumi, stack=STACK)
    engine.prepare()
    # The policy pack's own virtualenv (policies/venv): the project's, as scripts/test builds it.
    (engine.workdir / "policies" / "venv").symlink_to(ROOT / "venv")
    try:
        yield engine
    finally:
        engine.run("destroy", "--yes", "--skip-preview", check=False)
        _cleanup()
        out = ROOT / "build" / "engine-timings.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(engine.timings, indent=2) + "\n")
        print(f"\nengine timings (s): {engine.timings}")


def _live(url: str, n: int = 10) -> set[str | None]:
    with httpx.Client(timeout=5) as client:
        return {client.get(f"{url}/health").headers.get("x-deployment-color") for _ in range(n)}


def _wait_healthy(timeout: float = 120) -> dict[str, str]:
    """name -> state for every container of the stack, once all are running and healthy (or timeout);
    a file carrier's state is `created` (never started)."""
    import docker

    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = {}
        ready = True
        for container in _stack_containers():
            try:
                container.reload()
            except docker.errors.NotFound:
                continue  # removed since it was listed (not one of the engine's: a parallel test's)
            health = container.attrs["State"].get("Health", {}).get("Status")
            carrier = _is_carrier(container)
            states[container.name] = container.status if carrier else health or container.status
            ready &= states[container.name] in (("created",) if carrier else ("healthy", "running"))
        if states and ready:
            return states
        time.sleep(2)
    return states


def test_preview_with_the_policy_pack_has_no_mandatory_violation(project: EngineProject) -> None:
    proc, events = project.events("preview", "--policy-pack", "policies", timing="preview")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [v for v in policy_violations(events) if v[1] in ("mandatory", "remediate")] == []


ROGUE_PROGRAM = '''
import pulumi_docker as docker

docker.Container(
    "rogue",
    image="{image}",
    envs=["DEPLOYMENT_COLOR=blue"],
    labels=[docker.ContainerLabelArgs(label="paper-trading.role", value="app"),
            docker.ContainerLabelArgs(label="paper-trading.color", value="blue")],
)
'''


def test_engine_refuses_an_app_container_without_the_safety_env(project: EngineProject) -> None:
    rogue = project.base / "rogue"
    rogue.mkdir()
    (rogue / "Pulumi.yaml").write_text(
        "name: rogue\nruntime:\n  name: python\n  options:\n    toolchain: pip\n"
        f"    virtualenv: {ROOT / 'venv'}\n")
    (rogue / "__main__.py").write_text(ROGUE_PROGRAM.format(image=APP_IMAGE))
    project.run("stack", "init", "rogue", cwd=rogue)
    proc, events = project.events("preview", "--stack", "rogue", "--policy-pack",
                                  str(project.workdir / "policies"), cwd=rogue)
    refused = {(name, level) for name, level, _ in policy_violations(events)}
    assert proc.returncode != 0
    assert ("paper-trading-mode", "mandatory") in refused


def _work() -> dict[str, Any]:
    """Who does the background work, from each source: the Redis lease, the broker's consumers
    per color (rabbitmqctl: live, unlike the management API's 5 s statistics), and each
    color's own `/health/detailed` role."""
    from contract import work as wc
    from release.handoff import REDIS_CONF, parse_consumers

    client = _docker()
    redis = client.containers.get(f"{PREFIX}-redis")
    auth = f"REDISCLI_AUTH=\"$(sed -n 's/^requirepass //p' {REDIS_CONF})\""
    lease = redis.exec_run(["sh", "-c", f"{auth} redis-cli --no-auth-warning --raw GET {wc.LEASE_KEY}"])
    broker = client.containers.get(f"{PREFIX}-rabbitmq")
    consumers = broker.exec_run(["rabbitmqctl", "-q", "list_consumers", "--no-table-headers",
                                 "queue_name", "consumer_tag"])
    roles = {}
    for container in _stack_containers():
        color = container.labels.get("paper-trading.color")
        if container.labels.get("paper-trading.role") == "app" and color and not _is_carrier(container):
            out = container.exec_run(["curl", "-sf", "http://127.0.0.1:3000/health/detailed"]).output
            detailed = json.loads(out)
            roles[color] = (detailed["role"], tuple(detailed["consumers"]))
    return {"lease": lease.output.decode().strip(), "consumers": parse_consumers(consumers.output.decode()),
            "roles": roles}


def _work_held_by(color: str, timeout: float = 20) -> dict[str, Any]:
    other = "green" if color == "blue" else "blue"
    deadline = time.monotonic() + timeout
    while True:
        work = _work()
        if (work["lease"].startswith(f"{color}:") and work["consumers"].get(other) == 0
                and work["consumers"].get(color, 0) >= 1 and work["roles"].get(color, ("",))[0] == "active"
                and work["roles"].get(other, ("",))[0] == "standby"):
            return work
        if time.monotonic() > deadline:
            raise AssertionError(f"background work not held by {color} alone: {work}")
        time.sleep(0.5)


def test_up_from_nothing(project: EngineProject) -> None:
    project.run("up", "--yes", "--policy-pack", "policies", timing="first up")
    states = _wait_healthy()
    assert len(states) >= 12
    # Issue 21, item 7: the apps' and the proxy's file carriers exist, never started; all else runs.
    carriers = {c.name for c in _stack_containers() if _is_carrier(c)}
    assert len(carriers) == 3 and {states[n] for n in carriers} == {"created"}, states
    assert {name: s for name, s in states.items()
            if name not in carriers and s not in ("healthy", "running")} == {}
    outputs = project.outputs()
    assert outputs["activeColor"] == "blue"
    state = json.loads(project.run("stack", "export").stdout)
    (gate,) = [r for r in state["deployment"]["resources"] if r["urn"].endswith("::promotion-gate")]
    assert gate["outputs"]["validated"] is True and gate["outputs"]["approvedColor"] == "blue"
    assert gate["outputs"]["report"]["passed"] >= 10
    assert _live(outputs["appUrl"]) == {"blue"}
    # Issue 15: the switch handed the background work to blue, and only blue does it.
    (switch,) = [r for r in state["deployment"]["resources"] if r["urn"].endswith("::routing-switch")]
    assert switch["outputs"]["handoffMs"] > 0
    _work_held_by("blue")


def test_second_up_changes_nothing_and_refresh_finds_no_drift(project: EngineProject) -> None:
    assert changed(project.preview_steps()) == {}
    project.run("up", "--yes", "--expect-no-changes", timing="no-op up")
    project.run("refresh", "--yes", "--expect-no-changes", timing="refresh")
    assert changed(project.preview_steps()) == {}


def _set_faults(color: str, *faults: str) -> None:
    (container,) = [c for c in _stack_containers()
                    if c.labels.get("paper-trading.color") == color and not _is_carrier(c)]
    body = json.dumps({"faults": list(faults)})
    result = container.exec_run(["curl", "-sf", "-X", "POST", "-H", "Content-Type: application/json",
                                 "-d", body, "http://127.0.0.1:3000/admin/faults"])
    assert result.exit_code == 0, result.output


def test_faulty_candidate_fails_up_and_keeps_traffic(project: EngineProject) -> None:
    url = project.outputs()["appUrl"]
    _set_faults("green", "paper_mode_off")
    try:
        project.config_set("deployment.activeColor", "green")
        proc, events = project.events("up", "--yes", timing="refused up")
    finally:
        _set_faults("green")
    assert proc.returncode != 0
    errors = [e["diagnosticEvent"]["message"] for e in events
              if e.get("diagnosticEvent", {}).get("severity") == "error"]
    assert any("safety.paper_trading_mode" in m and "green was not promoted" in m for m in errors), errors
    assert project.outputs()["activeColor"] == "blue"
    assert _live(url) == {"blue"}
    _work_held_by("blue")


class _Load:
    """Requests on fresh connections until stopped; counts what did not answer 200."""

    def __init__(self, url: str) -> None:
        self.url, self.ok, self.failed = url, 0, 0
        self.colors: set[str | None] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = httpx.get(f"{self.url}/health", timeout=5)
                if response.status_code == 200:
                    self.ok += 1
                    self.colors.add(response.headers.get("x-deployment-color"))
                else:
                    self.failed += 1
            except httpx.HTTPError:
                self.failed += 1

    def __enter__(self) -> _Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_flip_moves_only_gate_and_routing_with_no_failed_request(project: EngineProject) -> None:
    project.config_set("deployment.activeColor", "green")
    steps = changed(project.preview_steps("--diff"))
    assert set(steps.values()) == {"update"}, steps
    # The gate re-validates, the switch moves traffic, the deploy record writes this release's record.
    assert {urn.rsplit("::", 1)[-1] for urn in steps} == {"promotion-gate", "routing-switch", "deploy-record"}
    url = project.outputs()["appUrl"]
    with _Load(url) as load:
        project.run("up", "--yes", timing="flip")
        time.sleep(1)
    assert load.failed == 0 and load.ok > 50, (load.ok, load.failed)
    assert load.colors == {"blue", "green"}
    assert project.outputs()["activeColor"] == "green"
    assert _live(url) == {"green"}
    # Issue 15: the background work moved with the traffic; blue holds no consumer.
    _work_held_by("green", timeout=5)
    # The audit trail under the real engine: this up's gate verdict, switch and deploy, in that order.
    records = _audit_records()
    last = {rec["operation"]: rec for rec in records}
    assert (last["gate"]["result"], last["gate"]["to"]) == ("ok", "green")
    assert (last["switch"]["result"], last["switch"]["from"], last["switch"]["to"]) == ("ok", "blue", "green")
    assert (last["deploy"]["result"], last["deploy"]["from"], last["deploy"]["to"]) == ("ok", "blue", "green")
    order = [rec["operation"] for rec in records]
    assert max(i for i, op in enumerate(order) if op == "deploy") > max(
        i for i, op in enumerate(order) if op == "switch")


def _audit_records() -> list[dict[str, Any]]:
    from release import audit

    out = _docker().containers.run(
        "paper-trading-ci/postgres:15", ["sh", "-c", f"cat {audit.AUDIT_DIR}/{audit.AUDIT_FILE}"],
        entrypoint=[], remove=True, network_mode="none",
        volumes=[f"{audit.volume_name(PREFIX)}:{audit.AUDIT_DIR}:ro"],
    ).decode()
    return [audit.parse(line) for line in out.splitlines()]


def _release_image() -> Any:
    """A new image (its own ID), as a release would bring."""
    import io

    dockerfile = f"FROM {APP_IMAGE}\nLABEL paper-trading.test-release=2\n".encode()
    release, _ = _docker().images.build(fileobj=io.BytesIO(dockerfile), tag=RELEASE_IMAGE, rm=True)
    return release


def _ids(color: str) -> dict[str, str]:
    return {c.name: c.id for c in _stack_containers() if c.labels.get("paper-trading.color") == color}


def _errors(events: list[dict[str, Any]]) -> list[str]:
    return [e["diagnosticEvent"]["message"] for e in events
            if e.get("diagnosticEvent", {}).get("severity") == "error"]


def test_a_change_to_the_live_color_is_refused_and_replaces_nothing(project: EngineProject) -> None:
    """Issue 20, item 1: green is live; a new green image is refused before anything moves."""
    _release_image()
    assert project.outputs()["activeColor"] == "green"
    url = project.outputs()["appUrl"]
    before = _ids("green")
    project.config_set("deployment.green.image", RELEASE_IMAGE)
    try:
        proc, events = project.events("preview", timing="refused preview")
        assert proc.returncode != 0
        refused = [m for m in _errors(events) if "refused: deployment.green.image changed" in m]
        assert refused and "deployment.activeColor=blue" in refused[0], _errors(events)
        with _Load(url) as load:
            proc, events = project.events("up", "--yes", timing="refused live change")
            time.sleep(1)
        assert proc.returncode != 0
        assert any("refused: deployment.green.image changed" in m for m in _errors(events))
    finally:
        project.config_set("deployment.green.image", APP_IMAGE)
    assert _ids("green") == before
    assert load.failed == 0 and load.ok > 20, (load.ok, load.failed)
    assert load.colors == {"green"}
    assert changed(project.preview_steps()) == {}


@contextlib.contextmanager
def _port_blocked(port: int) -> Iterator[None]:
    """Drops this host's new connections to `port` (before Docker's NAT sees them)."""
    nft = require_tool("nft")
    table = "pt_engine_test_block"
    rules = (f"table inet {table} {{\n chain out {{\n  type filter hook output priority -300;\n"
             f"  tcp dport {port} drop\n }}\n}}\n")
    subprocess.run([nft, "-f", "-"], input=rules, text=True, check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run([nft, "delete", "table", "inet", table], capture_output=True)


def test_a_failed_switch_is_followed_by_a_fresh_gate_run(project: EngineProject) -> None:
    """Issue 20, item 2: the gate approves blue, the switch cannot confirm it and switches back;
    the approval is spent, so the next `up` with the same config checks blue again."""
    from urllib.parse import urlsplit

    url = project.outputs()["appUrl"]
    project.config_set("deployment.activeColor", "blue")
    with _port_blocked(int(urlsplit(url).port or 80)):
        proc, events = project.events("up", "--yes", timing="failed switch")
    assert proc.returncode != 0
    assert any("switched back to green" in m for m in _errors(events)), _errors(events)
    assert project.outputs()["activeColor"] == "green"
    assert _live(url) == {"green"}
    gates_before = [r for r in _audit_records() if r["operation"] == "gate" and r["result"] == "ok"]
    steps = changed(project.preview_steps())
    assert "promotion-gate" in {urn.rsplit("::", 1)[-1] for urn in steps}, steps
    project.run("up", "--yes", timing="up after a failed switch")
    gates_after = [r for r in _audit_records() if r["operation"] == "gate" and r["result"] == "ok"]
    assert len(gates_after) == len(gates_before) + 1 and gates_after[-1]["to"] == "blue"
    assert project.outputs()["activeColor"] == "blue"
    assert _live(url) == {"blue"}
    _work_held_by("blue")


def test_release_on_the_idle_color_replaces_only_its_containers(project: EngineProject) -> None:
    release = _release_image()
    assert project.outputs()["activeColor"] == "blue"
    project.config_set("deployment.green.image", RELEASE_IMAGE)
    steps = changed(project.preview_steps())
    assert steps, "a new image must change something"
    names = {urn.rsplit("::", 1)[-1] for urn in steps} - {"deploy-record"}  # one record per release
    assert names and all("green" in name for name in names), steps
    # The image, the replica and its file carrier are replaced (the carrier runs the color's image);
    # the files are the same, so their volume (named by their hash) is kept (stack/carrier.py).
    replaced = {urn.rsplit("::", 1)[-1] for urn, op in steps.items() if op not in ("create", "update")}
    assert replaced == {"green-image", "green-1", "green-1-carrier"}, steps
    before = _ids("blue")
    url = project.outputs()["appUrl"]
    with _Load(url) as load:
        project.run("up", "--yes", timing="release")
        time.sleep(1)
    assert load.failed == 0 and load.ok > 20, (load.ok, load.failed)
    assert load.colors == {"blue"}
    assert _ids("blue") == before
    green = [c for c in _stack_containers() if c.labels.get("paper-trading.color") == "green"]
    assert green and {c.image.id for c in green} == {release.id}
    assert project.outputs()["activeColor"] == "blue"


def test_scaling_the_live_color_out_replaces_nothing_and_drops_no_request(project: EngineProject) -> None:
    """Issue 20, item 1: more replicas of the live color are new containers; none is replaced."""
    assert project.outputs()["activeColor"] == "blue"
    before = _ids("blue")
    project.config_set("deployment.blue.replicas", "2")
    steps = changed(project.preview_steps())
    # Nothing that carries traffic is replaced: no app container, not the proxy (its scrape relay
    # admits any replica number). Prometheus lists each replica as a target: it is recreated.
    replaced = {urn.rsplit("::", 1)[-1] for urn, op in steps.items() if op not in ("create", "update")}
    assert replaced <= {"prometheus"}, steps
    created = {urn.rsplit("::", 1)[-1] for urn, op in steps.items() if op == "create"}
    # The replica, its file carrier and the carrier's volume (stack/carrier.py).
    assert created == {"blue-2", "blue-2-carrier", "blue-2-files"}, steps
    url = project.outputs()["appUrl"]
    with _Load(url) as load:
        project.run("up", "--yes", timing="scale out the live color")
        time.sleep(1)
    after = _ids("blue")
    assert {name: after[name] for name in before} == before and len(after) == len(before) + 2
    assert load.failed == 0 and load.ok > 20, (load.ok, load.failed)
    assert load.colors == {"blue"}
    assert changed(project.preview_steps()) == {}


def _secret_plaintexts(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        if node.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270" and "plaintext" in node:
            found.append(str(node["plaintext"]))
        for value in node.values():
            found.extend(_secret_plaintexts(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_secret_plaintexts(value))
    return found


def test_stack_export_has_no_plaintext_secret(project: EngineProject) -> None:
    revealed = json.loads(project.run("stack", "export", "--show-secrets").stdout)
    plain = {value.strip('"') for value in _secret_plaintexts(revealed)}
    plain = {value for value in plain if len(value) >= 12}
    assert plain, "the stack holds secrets (generated passwords): they must be found"
    exported = project.run("stack", "export").stdout
    assert [value for value in plain if value in exported] == []


def test_destroy_keeps_the_data_volumes_and_their_data(project: EngineProject) -> None:
    volumes = _data_volumes()
    assert volumes
    client = _docker()
    for volume in volumes:
        client.containers.run(APP_IMAGE, ["sh", "-c", "echo kept > /data/.engine-test-marker"],
                              volumes={volume.name: {"bind": "/data"}}, remove=True, user="0")
    project.run("state", "unprotect", "--all", "--yes", "--stack", STACK)
    project.run("destroy", "--yes", timing="destroy")
    assert _stack_containers() == []
    survivors = {v.name for v in _data_volumes()}
    assert survivors == {v.name for v in volumes}
    for name in survivors:
        out = client.containers.run(APP_IMAGE, ["cat", "/data/.engine-test-marker"],
                                    volumes={name: {"bind": "/data"}}, remove=True, user="0")
        assert out.decode().strip() == "kept"


def test_a_fresh_clone_previews_with_the_policy_pack(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No venv at all, as after `git clone`: the engine creates the program's and the pack's venvs."""
    fresh = EngineProject(tmp_path_factory.mktemp("fresh"), _pulumi(), stack=STACK)
    fresh.prepare(link_venv=False)
    proc, events = fresh.events("preview", "--policy-pack", "policies", timing="fresh-clone preview")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [v for v in policy_violations(events) if v[1] in ("mandatory", "remediate")] == []
    assert (fresh.workdir / "venv" / "bin" / "python").exists()
    assert (fresh.workdir / "policies" / "venv" / "bin" / "python").exists()
