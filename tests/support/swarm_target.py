"""The `swarmlab` stack's parts on the lab as the target tests read them: edges, tasks, secrets;
and the Alertmanager the stack's auto-scaler alerts (a fixture, registered in tests/conftest.py).

Everything is asked of the engines themselves (the manager for services and tasks, each node's
own engine for its containers), never of the program's outputs alone.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from release import audit
from tests.support import swarm_work as work
from tests.support.swarm_load import answers, until
from tools.swarm_lab import Lab

PREFIX = "paper-trading-lab"
STACK = "swarmlab"
ROOT = Path(__file__).resolve().parents[2]
EDGES = ("n1", "n2")
PORT, PREVIEW_PORT = 28080, 28081
_SERVICE_LABEL = "com.docker.swarm.service.name"


def edge_urls(swarm_lab: Lab) -> list[str]:
    return [f"http://{swarm_lab.node(name).address}:{PORT}" for name in EDGES]


def served(url: str, n: int = 6) -> set[str | None]:
    """The colors `n` requests through one edge were answered by (None: a failed request)."""
    found: set[str | None] = set()
    for _ in range(n):
        try:
            found.add(httpx.get(f"{url}/health", timeout=5).headers.get("x-deployment-color"))
        except httpx.HTTPError:
            found.add(None)
    return found


_NODE_IDS: dict[str, str] = {}


def node_id(swarm_lab: Lab, name: str) -> str:
    """A node's swarm id, remembered (asked while every node answers)."""
    if name not in _NODE_IDS:
        _NODE_IDS[name] = swarm_lab.node(name).client().info()["Swarm"]["NodeID"]
    return _NODE_IDS[name]


def tasks(swarm_lab: Lab, color: str, lost: str | None = None) -> list[dict[str, Any]]:
    """Running tasks of `color`; with `lost` (a node id, cut off), asked of a manager that is not on
    that node and the node's tasks left out (a cut-off manager's own API hangs for seconds)."""
    exclude = tuple(n.name for n in swarm_lab.nodes if lost and node_id(swarm_lab, n.name) == lost)
    found: list[dict[str, Any]] = swarm_lab.manager(exclude=exclude).api.tasks(
        filters={"service": f"{PREFIX}-app-{color}", "desired-state": "running"})
    found = [t for t in found if t["NodeID"] != lost]
    return [t for t in found if t["Status"]["State"] == "running"]


def service_version(swarm_lab: Lab, color: str) -> int:
    return int(swarm_lab.manager().services.get(f"{PREFIX}-app-{color}").attrs["Version"]["Index"])


def replicas(swarm_lab: Lab, color: str) -> int:
    spec = swarm_lab.manager().services.get(f"{PREFIX}-app-{color}").attrs["Spec"]
    return int(spec["Mode"]["Replicated"]["Replicas"])


def images(swarm_lab: Lab, color: str) -> set[str]:
    """The images `color`'s running tasks run (without the digest Swarm pins)."""
    return {t["Spec"]["ContainerSpec"]["Image"].split("@")[0] for t in tasks(swarm_lab, color)}


def updating(swarm_lab: Lab, color: str) -> bool:
    """`color`'s service is rolling out a new spec."""
    state = (swarm_lab.manager().services.get(f"{PREFIX}-app-{color}").attrs.get("UpdateStatus") or {})
    return state.get("State") == "updating"


#: The stack's audit trail (release/audit.py): a local volume on the data node, as its engine keeps it.
TRAIL = Path("n3") / "volumes" / audit.volume_name(PREFIX) / "_data" / "audit.jsonl"


def trail_file(swarm_lab: Lab) -> Path:
    return swarm_lab.node("n3").data_root.parent / TRAIL


def trail(swarm_lab: Lab) -> list[str]:
    """The trail's lines, read from the data node's disk."""
    return trail_file(swarm_lab).read_text().splitlines()


def records(swarm_lab: Lab, since: int = 0) -> list[dict[str, Any]]:
    """The records after the trail's first `since` lines (the chain checked and dropped)."""
    return [audit.parse(line) for line in trail(swarm_lab)[since:]]


def outcomes(swarm_lab: Lab, since: int = 0) -> list[tuple[str, str, str | None, str | None]]:
    """(operation, result, from, to) of each outcome record (not the intents) after `since` lines."""
    return [(r["operation"], r["result"], r["from"], r["to"]) for r in records(swarm_lab, since)
            if r["result"] != "started"]


def nft(swarm_lab: Lab, node: str, *args: str) -> None:
    """`nft <args>` in a node's network namespace (its own rules, not this machine's)."""
    netns = f"--net=/var/run/netns/{swarm_lab.node(node).netns}"
    subprocess.run(["nsenter", netns, "nft", *args], check=True, capture_output=True, text=True)


def _containers(swarm_lab: Lab, color: str) -> list[Any]:
    """Every running container of `color`'s service, from each node's own engine."""
    found: list[Any] = []
    for node in swarm_lab.nodes:
        found += node.client().containers.list(
            filters={"label": f"{_SERVICE_LABEL}={PREFIX}-app-{color}", "status": "running"})
    return found


def set_faults(swarm_lab: Lab, color: str, *faults: str) -> None:
    """Faults on every running task of `color`, through the engine of the node it runs on."""
    body = json.dumps({"faults": list(faults)})
    for container in _containers(swarm_lab, color):
        result = container.exec_run(["curl", "-sf", "-X", "POST", "-H", "Content-Type: application/json",
                                     "-d", body, "http://127.0.0.1:3000/admin/faults"])
        assert result.exit_code == 0, result.output


def secret_digests(swarm_lab: Lab, color: str, file: str) -> set[str]:
    """The sha256 of `/run/secrets/<file>` as each running task of `color` reads it (as its own
    user: the file is 0400 and owned by it); a task that cannot read it fails the test."""
    found: set[str] = set()
    for container in _containers(swarm_lab, color):
        done = container.exec_run(["cat", f"/run/secrets/{file}"], stderr=False)
        assert done.exit_code == 0, (container.name, done.output[-300:])
        found.add(hashlib.sha256(done.output).hexdigest())
    return found


def secret_names(swarm_lab: Lab, color: str, file: str) -> set[str]:
    """The Swarm secrets that hold `color`'s `file` (`<prefix>-<color>-<file>-<keyed hash>`)."""
    start = f"{PREFIX}-{color}-{file}-"
    return {s.name for s in swarm_lab.manager().secrets.list() if s.name.startswith(start)}


def on_disk_under(root: Path, needle: bytes) -> list[str]:
    """Files under `root` holding `needle`, except on tmpfs mounts (memory: where Swarm puts a
    task's secrets, /run/secrets being a bind of one)."""
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    tmpfs = [m[1] for m in mounts if m[2] == "tmpfs" and m[1].startswith(str(root))]
    done = subprocess.run(["grep", "-rlaF", needle.decode(), str(root)], capture_output=True, check=False)
    # 2: something not searched. Only a file gone while grep walked (a task's churn) is let pass.
    unread = [line for line in done.stderr.decode(errors="replace").splitlines()
              if not line.endswith("No such file or directory")]
    assert done.returncode in (0, 1, 2) and not unread, unread[:5]
    found = done.stdout.decode(errors="replace").split()
    return [f for f in found if not any(f == m or f.startswith(m + "/") for m in tmpfs)]


ALERTMANAGER_IMAGE = "paper-trading-ci/alertmanager:0.25"
#: Where Pulumi.swarmlab.yaml's `swarm.autoscale.alertmanagerUrl` points (on this machine).
ALERTMANAGER_PORT = 29093


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """A real Alertmanager on this machine's engine (the operator's, to the lab stack's scaler),
    routing everything to a receiver that sends nothing: the test reads its alerts API."""
    name = "paper-trading-lab-alertmanager"
    config = tmp_path / "alertmanager.yml"
    config.write_text("route:\n  receiver: keep\nreceivers:\n  - name: keep\n")
    config.chmod(0o644)
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    subprocess.run(["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{ALERTMANAGER_PORT}:9093",
                    "-v", f"{config}:/etc/alertmanager/alertmanager.yml:ro", ALERTMANAGER_IMAGE],
                   check=True, capture_output=True)
    url = f"http://127.0.0.1:{ALERTMANAGER_PORT}"
    try:
        ready = until(lambda: answers(f"{url}/-/ready"), 30)
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stderr
        assert ready is not None, logs
        yield url
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m release.swarm <args> --stack swarmlab` in the engine test's copy of the project."""
    python = str(workdir / "venv" / "bin" / "python")
    return subprocess.run([python, "-m", "release.swarm", *args, "--stack", STACK], cwd=workdir,
                          capture_output=True, text=True, check=False)


def scaler_command(audit_file: Path, *extra: str) -> list[str]:
    """The auto-scaler's command line for the lab stack, its decisions appended to `audit_file`."""
    return [str(ROOT / "venv" / "bin" / "python"), "-m", "release.swarm", "autoscale", "--stack", STACK,
            "--project-dir", str(ROOT), "--audit-file", str(audit_file), *extra]


def scale_records(audit_file: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in audit_file.read_text().splitlines()] if audit_file.exists() else []


@pytest.fixture
def scale_orders(swarm_lab: Lab) -> Iterator[str]:
    """Orders published all through the scaling test (1200 at 10/s: about 2 minutes)."""
    with work.publishing(swarm_lab, "scale", 1200, 10):
        yield "scale"
