"""`scripts/dev-up`'s first checks: without the Pulumi CLI and Go, or without a Docker Engine,
it says what to do and creates nothing.

It runs in a fresh copy of the files those checks use, with an empty HOME and a `docker` on PATH
that records every call before handing it to the real client, so "nothing created" is checked as
"no venv, no backend folder, no Docker call but the probe". The whole first run (offline, from
nothing, to a serving stack) is tests/engine/test_dev_up.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import require_docker, require_tool
from tests.support.fakes.validation_servers import free_port

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]
# What a fresh clone gives dev-up to work with.
FILES = ("scripts/dev-up", "scripts/lib/dev-common.sh", "tools/engine/versions.env", "requirements.txt",
         "Pulumi.yaml", "Pulumi.dev.yaml",
         "reference_app/Dockerfile", "contract/__init__.py", "contract/work.py",
         *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "reference_app").glob("*.py")))
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # where Debian puts docker, bash, coreutils; not pulumi


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


def test_without_pulumi_and_go_it_says_what_to_do_and_creates_nothing(tmp_path: Path) -> None:
    require_docker()
    repo = fresh_copy(tmp_path)
    bin_dir, docker_log = recording_docker(tmp_path)
    path = f"{bin_dir}:{SYSTEM_PATH}"
    assert shutil.which("pulumi", path=path) is None
    before = files_under(repo)

    result = run_dev_up(repo, path, tmp_path / "home", GO=str(tmp_path / "no-go"),
                        PULUMI_ENGINE_CACHE=str(tmp_path / "no-engine"))

    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == ("dev-up: the Pulumi CLI is not installed and Go is not here to build it; "
                        "nothing was created.")
    assert set(re.findall(r"https://\S+?(?=[\s)]|$)", result.stderr)) == {
        "https://www.pulumi.com/docs/install/", "https://get.pulumi.com"}
    # The offline path this repo has, and where it is explained.
    assert set(re.findall(r"\b(scripts/[\w-]+|docs/[\w-]+\.md)\b", result.stderr)) == {
        "scripts/install-engine", "docs/engine.md", "scripts/dev-up",
    }
    assert result.stdout == ""
    # Nothing created: no venv or other file in the clone, nothing in HOME, no Docker call but the probe.
    assert files_under(repo) == before
    assert files_under(tmp_path / "home") == set()
    assert docker_log.read_text().splitlines() == ["info --format {{.ServerVersion}}"]


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
    assert docker_log.read_text().splitlines() == ["info --format {{.ServerVersion}}"]  # only the probe
    assert files_under(repo) == before
    assert files_under(tmp_path / "home") == set()
