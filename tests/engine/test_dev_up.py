"""`scripts/dev-up` and `scripts/dev-down` as a new user runs them, on a copy of the project.

The copy has its own HOME (so a fresh file backend and a PULUMI_HOME without providers: dev-up
installs them with scripts/install-engine, from its cache) and the dev stack under its own name
prefix and ports, so a developer's real dev stack is never touched. In order: the failure paths
(no Docker Engine; no Pulumi CLI and no Go; an image nobody can give) each print one message, create
nothing and exit non-zero; then dev-up from nothing (stack healthy, blue live and answering), a
second run that changes nothing, dev-down (data kept) and dev-down --delete-data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.engine.engine import ROOT, tracked_files
from tests.support import missing, require_docker

pytestmark = pytest.mark.engine

PREFIX = "paper-trading-devtest"
PORTS = {"http": 38180, "https": 38543, "preview": 38181, "prometheus": 39190, "alertmanager": 39193}


@dataclass
class DevProject:
    base: Path
    timings: dict[str, float] = field(default_factory=dict)
    stack_text: str = ""

    @property
    def workdir(self) -> Path:
        return self.base / "project"

    @property
    def stack_file(self) -> Path:
        return self.workdir / "Pulumi.dev.yaml"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
        env.update({"HOME": str(self.base / "home"), "PULUMI_SKIP_UPDATE_CHECK": "true"})
        env.update(extra)
        return env

    def run(self, script: str, *args: str, timing: str | None = None, timeout: float = 1800,
            **extra: str) -> subprocess.CompletedProcess[str]:
        started = time.perf_counter()
        proc = subprocess.run([str(self.workdir / "scripts" / script), *args], cwd=self.workdir,
                              env=self.env(**extra), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if timing:
            self.timings[timing] = round(time.perf_counter() - started, 1)
        return proc

    def pulumi(self, *args: str) -> subprocess.CompletedProcess[str]:
        pulumi = shutil.which("pulumi") or "/var/cache/paper-trading-engine/bin/pulumi"
        env = self.env(PULUMI_CONFIG_PASSPHRASE="",
                       PULUMI_BACKEND_URL=f"file://{self.base / 'home' / '.pulumi-local'}")
        return subprocess.run([pulumi, *args, "--non-interactive"], cwd=self.workdir, env=env,
                              capture_output=True, text=True, timeout=600)

    def stacks(self) -> list[str]:
        """The stacks in the copy's file backend (none before dev-up first logs in)."""
        if not (self.base / "home" / ".pulumi-local").exists():
            return []
        proc = self.pulumi("stack", "ls", "--json")
        assert proc.returncode == 0, proc.stderr
        return sorted(str(s["name"]) for s in json.loads(proc.stdout))


def _docker() -> Any:
    import docker

    return docker.from_env()


def _created() -> dict[str, list[str]]:
    """Everything on the engine carrying the copy's name prefix."""
    client = _docker()
    return {
        "containers": sorted(c.name for c in client.containers.list(all=True) if c.name.startswith(PREFIX)),
        "networks": sorted(n.name for n in client.networks.list() if n.name.startswith(PREFIX)),
        "volumes": sorted(v.name for v in client.volumes.list() if v.name.startswith(PREFIX)),
    }


def _cleanup() -> None:
    client = _docker()
    for container in client.containers.list(all=True):
        if container.name.startswith(PREFIX):
            container.remove(force=True)
    for network in client.networks.list():
        if network.name.startswith(PREFIX):
            network.remove()
    for volume in client.volumes.list():
        if volume.name.startswith(PREFIX):
            volume.remove(force=True)


def _one_message(proc: subprocess.CompletedProcess[str]) -> str:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevProject]:
    require_docker()
    if shutil.which("pulumi") is None and not Path("/var/cache/paper-trading-engine/bin/pulumi").exists():
        missing("the Pulumi engine is not installed (scripts/install-engine)")
    dev = DevProject(tmp_path_factory.mktemp("dev-up"))
    for name in tracked_files():
        target = dev.workdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    (dev.workdir / "venv").symlink_to(ROOT / "venv")
    (dev.base / "home").mkdir()
    # Edited as text, so the file keeps the form `pulumi stack init` writes (and dev-up must keep).
    text = dev.stack_file.read_text()
    for old, new in ((" paper-trading-dev\n", f" {PREFIX}\n"),
                     ("httpPort: 8080", f"httpPort: {PORTS['http']}"),
                     ("httpsPort: 8443", f"httpsPort: {PORTS['https']}"),
                     ("previewPort: 8081", f"previewPort: {PORTS['preview']}"),
                     ("port: 19090", f"port: {PORTS['prometheus']}"),
                     ("port: 19093", f"port: {PORTS['alertmanager']}")):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    dev.stack_file.write_text(text)
    dev.stack_text = text
    _cleanup()
    yield dev
    out = ROOT / "build" / "dev-up-timings.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(dev.timings, indent=2) + "\n")
    _cleanup()


def test_without_a_docker_engine_it_says_so_and_creates_nothing(project: DevProject) -> None:
    proc = project.run("dev-up", DOCKER_HOST="unix:///nonexistent/docker.sock")
    out = _one_message(proc)
    assert proc.returncode == 1
    assert "no Docker Engine answers (DOCKER_HOST=unix:///nonexistent/docker.sock)" in out
    assert _created() == {"containers": [], "networks": [], "volumes": []}
    assert project.stacks() == []


def test_without_pulumi_and_go_it_points_at_the_official_install(project: DevProject) -> None:
    proc = project.run("dev-up", PATH="/usr/sbin:/usr/bin:/sbin:/bin", GO=str(project.base / "no-go"),
                       PULUMI_ENGINE_CACHE=str(project.base / "no-engine"))
    out = _one_message(proc)
    assert proc.returncode == 1
    assert "the Pulumi CLI is not installed and Go is not here to build it" in out
    assert "https://www.pulumi.com/docs/install/" in out
    assert _created() == {"containers": [], "networks": [], "volumes": []}
    assert project.stacks() == []


def test_an_image_nobody_can_give_stops_it_before_anything_is_created(project: DevProject) -> None:
    original = project.stack_file.read_text()
    document = yaml.safe_load(original)
    document["config"]["paper-trading:images"]["redis"] = "registry.invalid/paper-trading/redis:7.0"
    project.stack_file.write_text(yaml.safe_dump(document, sort_keys=False))
    try:
        proc = project.run("dev-up", DEV_UP_PULL_TIMEOUT="30", timing="dev-up refused (image unobtainable)")
    finally:
        project.stack_file.write_text(original)
    out = _one_message(proc)
    assert proc.returncode == 1
    (line,) = [x for x in out.splitlines() if x.strip().startswith("- ") and "registry.invalid" in x]
    assert line.strip().startswith("- images.redis = registry.invalid/paper-trading/redis:7.0")
    assert "nothing was deployed" in out
    assert "pulling registry.invalid/paper-trading/redis:7.0" in out  # it tried the registry first
    assert _created() == {"containers": [], "networks": [], "volumes": []}
    assert project.stacks() == []


def test_dev_up_deploys_a_gated_serving_stack_from_nothing(project: DevProject) -> None:
    proc = project.run("dev-up", timing="dev-up from nothing")
    out = _one_message(proc)
    assert proc.returncode == 0, out[-6000:]
    outputs = json.loads(project.pulumi("stack", "output", "--json", "--stack", "dev").stdout)
    assert outputs["activeColor"] == "blue"
    assert outputs["appUrl"] == f"http://localhost:{PORTS['http']}"
    response = httpx.get(f"{outputs['appUrl']}/health", timeout=10)
    assert response.status_code == 200
    assert response.headers["x-deployment-color"] == "blue"
    preview = httpx.get(f"{outputs['previewUrl']}/health", timeout=10)
    assert preview.headers["x-deployment-color"] == "green"
    # The summary it ends with names what to look at.
    assert f"app          http://localhost:{PORTS['http']}" in out
    assert "X-Deployment-Color: blue" in out
    # The working tree stays clean: the stack file is as it was (no new salt, no rewritten values).
    assert project.stack_file.read_text() == project.stack_text
    # No registry answers here: the app image is the Dockerfile's, layered on the local Debian base.
    if "(on paper-trading-base:test: no registry)" in out:
        fields = "{{json .RootFS.Layers}}|{{.Config.User}}|{{json .Config.Cmd}}"
        inspect = subprocess.run(
            ["docker", "image", "inspect", "--format", fields, "paper-trading-reference-app:dev",
             "paper-trading-base:test"], capture_output=True, text=True, check=True).stdout.splitlines()
        app_layers, user, cmd = inspect[0].split("|")
        assert app_layers.startswith(inspect[1].split("|")[0].rstrip("]"))
        assert (user, cmd) == ("1000:1000", '["python3","-m","reference_app","--port","3000"]')
    # Every app, proxy and datastore container runs and is healthy.
    client = _docker()
    for name in (f"{PREFIX}-proxy", f"{PREFIX}-app-blue-1", f"{PREFIX}-app-green-1", f"{PREFIX}-postgres"):
        state = client.containers.get(name).attrs["State"]
        assert state["Status"] == "running" and state["Health"]["Status"] == "healthy", (name, state)


def test_a_second_dev_up_changes_nothing(project: DevProject) -> None:
    proc = project.run("dev-up", timing="dev-up again (no change)")
    out = _one_message(proc)
    assert proc.returncode == 0, out[-4000:]
    history = json.loads(project.pulumi("stack", "history", "--json", "--stack", "dev").stdout)
    last = history[0]
    assert last["kind"] == "update" and last["result"] == "succeeded"
    assert set(last["resourceChanges"]) == {"same"}, last["resourceChanges"]
    assert project.pulumi("preview", "--expect-no-changes", "--stack", "dev").returncode == 0


def test_dev_down_removes_every_container_and_keeps_the_data(project: DevProject) -> None:
    proc = project.run("dev-down", timing="dev-down")
    out = _one_message(proc)
    assert proc.returncode == 0, out[-4000:]
    left = _created()
    assert left["containers"] == [] and left["networks"] == []
    assert f"{PREFIX}-postgres-data" in left["volumes"]
    assert all(v.endswith("-data") for v in left["volumes"]), left["volumes"]

    proc = project.run("dev-down", "--delete-data", timing="dev-down --delete-data")
    assert proc.returncode == 0, _one_message(proc)[-4000:]
    assert _created() == {"containers": [], "networks": [], "volumes": []}
    assert project.stacks() == []
    # The stack file is the project's: removing the stack's state leaves it, as it was.
    assert project.stack_file.read_text() == project.stack_text
