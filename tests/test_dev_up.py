"""`scripts/dev-up` on a first run (issue 13, item 8).

Without the Pulumi CLI (or without a Docker Engine) it says what to do and creates nothing: it
runs in a fresh copy of the files it uses, with an empty HOME and a `docker` on PATH that records
every call before handing it to the real client, so "nothing created" is checked as "no venv, no
backend folder, not one Docker call". With no registry reachable it builds the reference app
image offline on the local Debian base (real Docker, real `pulumi`; `--help` is passed through to
`pulumi up`, so the stack is initialised in a throwaway file backend and nothing is deployed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fakes.validation_servers import free_port
from tests.support import missing, require_docker, require_tool

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parent.parent
# What a fresh clone gives dev-up to work with.
FILES = ("scripts/dev-up", "requirements.txt", "Pulumi.yaml", "Pulumi.dev.yaml",
         "reference_app/Dockerfile", "components/__init__.py", "components/work_contract.py",
         *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "reference_app").glob("*.py")))
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # where Debian puts docker, bash, coreutils; not pulumi
APP_IMAGE = "paper-trading-reference-app:dev"
OFFLINE_BASE = "paper-trading-base:test"


def fresh_copy(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for name in FILES:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    return repo


def recording_docker(tmp_path: Path) -> tuple[Path, Path]:
    """A bin folder whose `docker` logs its arguments, then runs the real client."""
    real = require_tool("docker")
    bin_dir, log = tmp_path / "bin", tmp_path / "docker-calls.log"
    bin_dir.mkdir()
    wrapper = bin_dir / "docker"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    return bin_dir, log


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def run_dev_up(
    repo: Path, path: str, home: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    home.mkdir(exist_ok=True)
    full_env = {"PATH": path, "HOME": str(home), "PULUMI_SKIP_UPDATE_CHECK": "true", **env}
    if "DOCKER_HOST" in os.environ and "DOCKER_HOST" not in env:
        full_env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    return subprocess.run([str(repo / "scripts" / "dev-up"), *args],
                          env=full_env, capture_output=True, text=True, timeout=600)


def test_without_pulumi_it_says_what_to_do_and_creates_nothing(tmp_path: Path) -> None:
    repo = fresh_copy(tmp_path)
    bin_dir, docker_log = recording_docker(tmp_path)
    path = f"{bin_dir}:{SYSTEM_PATH}"
    assert shutil.which("pulumi", path=path) is None
    before = files_under(repo)

    result = run_dev_up(repo, path, tmp_path / "home")

    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "dev-up: the Pulumi CLI is not installed (no `pulumi` on PATH); nothing was created."
    assert set(re.findall(r"https://\S+?(?=[\s)]|$)", result.stderr)) == {"https://www.pulumi.com/docs/install/"}
    # The offline path this repo has, and where it is explained.
    assert set(re.findall(r"\b(scripts/[\w-]+|docs/[\w-]+\.md)\b", result.stderr)) == {
        "scripts/install-engine", "docs/engine.md", "scripts/dev-up",
    }
    assert result.stdout == ""
    # Nothing created: no venv or other file in the clone, nothing in HOME, not one Docker call.
    assert files_under(repo) == before
    assert files_under(tmp_path / "home") == set()
    assert not docker_log.exists()


def test_without_a_docker_engine_it_names_docker_host_and_creates_nothing(tmp_path: Path) -> None:
    pulumi = require_tool("pulumi")
    repo = fresh_copy(tmp_path)
    bin_dir, docker_log = recording_docker(tmp_path)
    (bin_dir / "pulumi").symlink_to(pulumi)
    before = files_under(repo)
    host = f"tcp://127.0.0.1:{free_port()}"

    result = run_dev_up(repo, f"{bin_dir}:{SYSTEM_PATH}", tmp_path / "home", DOCKER_HOST=host)

    assert result.returncode == 1
    first = result.stderr.splitlines()[0]
    assert first == f"dev-up: no Docker Engine answers (DOCKER_HOST={host}); nothing was created."
    assert docker_log.read_text().splitlines() == ["info"]  # only the probe
    assert files_under(repo) == before
    assert files_under(tmp_path / "home") == set()


def test_offline_it_builds_the_reference_app_on_the_local_base(tmp_path: Path) -> None:
    require_docker()
    pulumi = require_tool("pulumi")
    probe = subprocess.run(["docker", "pull", "--quiet", "python:3.11-slim-bookworm"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode == 0:
        pytest.skip("a registry is reachable here: the offline path is not taken")
    base = subprocess.run(["docker", "image", "inspect", OFFLINE_BASE], capture_output=True)
    if base.returncode != 0:
        missing(f"the {OFFLINE_BASE} image is not built (scripts/build-test-images)")
    repo = fresh_copy(tmp_path)
    (repo / "venv").symlink_to(ROOT / "venv")  # the project's venv: dev-up only checks it is installed
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pulumi").symlink_to(pulumi)
    backend = tmp_path / "backend"
    backend.mkdir()

    result = run_dev_up(repo, f"{bin_dir}:{SYSTEM_PATH}", tmp_path / "home", "--help",
                        PULUMI_BACKEND_URL=f"file://{backend}")

    assert result.returncode == 0, result.stderr
    prefix = "dev-up: "
    said = [line.removeprefix(prefix) for line in result.stderr.splitlines() if line.startswith(prefix)]
    assert said[0].startswith("no container registry is reachable (docker pull python:3.11-slim-bookworm: ")
    assert said[1] == (f"building {APP_IMAGE} offline on the local Debian base {OFFLINE_BASE} "
                       f"(--build-arg BASE={OFFLINE_BASE})")
    assert f"built {APP_IMAGE} (--build-arg BASE={OFFLINE_BASE})" in said
    # The image is the Dockerfile's, layered on the local base.
    fields = "{{json .RootFS.Layers}}|{{.Config.User}}|{{json .Config.Cmd}}"
    inspect = subprocess.run(
        ["docker", "image", "inspect", "--format", fields, APP_IMAGE, OFFLINE_BASE],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    app_layers, user, cmd = inspect[0].split("|")
    base_layers = inspect[1].split("|")[0]
    assert app_layers.startswith(base_layers.rstrip("]"))
    assert (user, cmd) == ("1000:1000", '["python3","-m","reference_app","--port","3000"]')
    # The stack went only as far as `pulumi up --help`: initialised in the throwaway backend.
    assert "Create or update the resources in a stack." in result.stdout
