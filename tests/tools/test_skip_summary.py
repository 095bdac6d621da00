"""The suite's summary of tests a missing tool kept from running (tests/conftest.py; issue 13, item 9).

Real pytest runs in a subprocess with the plugin on a tiny test file that needs a tool no machine
has: on a laptop the tests skip, the run passes and the summary names the tool, the count and the
install command; under CI=true the same tests fail and so does the run.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import INSTALL_COMMAND, TOOL_PACKAGES, TOOL_STEPS, remedy

ROOT = Path(__file__).resolve().parents[2]
FAKE_TOOL = "paper-trading-no-such-tool"
TINY = f'''
import pytest
from tests.support import missing, require_tool

def test_needs_the_fake_tool():
    require_tool("{FAKE_TOOL}")

@pytest.mark.parametrize("n", [1, 2])
def test_needs_the_fake_tool_too(n):
    require_tool("{FAKE_TOOL}")

@pytest.fixture
def engine():
    missing("Docker Engine not reachable (`docker info` failed)")

def test_needs_docker(engine):
    pass

def test_runs():
    pass

def test_skipped_for_another_reason():
    pytest.skip("not about a tool")
'''
BECAUSE = "because a system tool or service is missing; they proved nothing:"
GROUP = re.compile(r"\s+(?P<count>\d+) tests?: (?P<reason>.+) -> (?P<remedy>.+)")
ESSENTIAL = {"coreutils", "util-linux", "dash"}  # Debian's essential set: always installed


def run_tiny(tmp_path: Path, ci: bool) -> tuple[int, list[str]]:
    (tmp_path / "test_tiny.py").write_text(TINY)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(ROOT)
    if ci:
        env["CI"] = "true"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q",
         "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(tmp_path / "test_tiny.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    return result.returncode, result.stdout.splitlines()


def section(lines: list[str], title: str) -> list[str]:
    """The lines of the summary section `title`, up to the next section rule."""
    start = next((i for i, line in enumerate(lines) if title in line and line.startswith("!")), None)
    assert start is not None, "no summary section:\n" + "\n".join(lines)
    body = []
    for line in lines[start + 1:]:
        if re.match(r"^[=!_-]{5,}", line):
            break
        body.append(line)
    return body


def groups(body: list[str]) -> dict[str, tuple[int, str]]:
    return {m["reason"]: (int(m["count"]), m["remedy"]) for line in body if (m := GROUP.fullmatch(line))}


def test_laptop_run_passes_and_says_what_was_skipped_and_how_to_install_it(tmp_path: Path) -> None:
    status, lines = run_tiny(tmp_path, ci=False)
    assert status == 0, "\n".join(lines)
    body = section(lines, "MISSING SYSTEM TOOLS: TESTS SKIPPED")
    assert body[0] == f"4 tests SKIPPED {BECAUSE}"
    fake_remedy = f"no known package; install {FAKE_TOOL!r} (see {INSTALL_COMMAND})"
    assert groups(body) == {
        f"tool {FAKE_TOOL!r} not found": (3, fake_remedy),
        "Docker Engine not reachable (`docker info` failed)":
            (1, "package docker.io; start the Docker Engine: scripts/start-dockerd (as root)"),
    }
    assert f"install what they need (as root, Debian/Ubuntu): {INSTALL_COMMAND}" in body
    assert "  or just these: apt-get install -y --no-install-recommends docker.io" in body
    assert any(line.startswith("under CI=true (as in .ci/run) these skips are failures") for line in body)


def test_ci_run_fails_on_the_same_tests_and_the_summary_says_so(tmp_path: Path) -> None:
    status, lines = run_tiny(tmp_path, ci=True)
    assert status == 1, "\n".join(lines)
    body = section(lines, "MISSING SYSTEM TOOLS: TESTS FAILED UNDER CI")
    assert body[0] == f"4 tests FAILED (CI=true) {BECAUSE}"
    assert {reason: count for reason, (count, _) in groups(body).items()} == {
        f"tool {FAKE_TOOL!r} not found": 3,
        "Docker Engine not reachable (`docker info` failed)": 1,
    }
    assert body[-1].startswith("under CI=true a skip for a missing tool is a failure")
    # pytest's own tally: the three tests and the fixture failed, the unrelated skip stays a skip.
    assert re.search(r"\b3 failed, 1 passed, 1 skipped, 1 error\b", lines[-1]), lines[-1]


def test_a_clean_run_prints_no_summary(tmp_path: Path) -> None:
    (tmp_path / "test_tiny.py").write_text("def test_ok():\n    pass\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q",
         "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(tmp_path / "test_tiny.py")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0
    assert "MISSING SYSTEM TOOLS" not in result.stdout


@pytest.mark.parametrize(
    ("reason", "package"),
    [
        ("tool 'amtool' not found", "prometheus-alertmanager"),
        ("tool 'promtool' not found", "prometheus"),
        ("Postgres server binaries (apt-get install postgresql) not found", "postgresql"),
        ("the Pulumi CLI is not installed (run scripts/install-engine)", None),
        ("tool 'pulumi' not found", None),
    ],
)
def test_remedy_names_the_package(reason: str, package: str | None) -> None:
    assert remedy(reason).package == package


def _required_tools() -> set[str]:
    """Every literal `require_tool("x")` in the tests."""
    found: set[str] = set()
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            first = node.args[0] if node.args else None
            if node.func.id == "require_tool" and isinstance(first, ast.Constant):
                found.add(str(first.value))
    return found - {FAKE_TOOL}


def _ci_packages() -> set[str]:
    script = (ROOT / ".ci" / "install-system-packages").read_text()
    match = re.search(r"^packages=\((.*?)\)", script, re.S | re.M)
    assert match, "no packages=(...) array in .ci/install-system-packages"
    return set(match.group(1).split())


def test_every_required_tool_has_a_package_that_ci_installs() -> None:
    tools = _required_tools()
    assert {"nginx", "promtool", "shellcheck"} <= tools  # the scan finds them
    unknown = tools - TOOL_PACKAGES.keys() - TOOL_STEPS.keys()
    assert sorted(unknown) == [], "add these tools to TOOL_PACKAGES (or TOOL_STEPS) in tests/conftest.py"
    not_installed = {TOOL_PACKAGES[t] for t in tools if t in TOOL_PACKAGES} - _ci_packages() - ESSENTIAL
    assert sorted(not_installed) == [], "add these packages to .ci/install-system-packages"
