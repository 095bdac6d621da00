"""Suite plugin: a loud summary of the tests a missing system tool kept from running (issue 13, item 9).

`tests/support/__init__.py`'s `missing()` skips a test whose tool or service is absent (nginx, promtool,
a Docker Engine, ...) and fails it instead under CI=true. Such an outcome is recognised by where
it was raised (inside `missing`), not by its wording; the tests are grouped by what was missing,
and the end of the run says how many tests each group holds, what installs it, and that under
CI=true these are failures. `scripts/test` and CI run the suite with this plugin.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import IN_CI

SUPPORT = Path(__file__).resolve().parent / "support" / "__init__.py"
#: Support modules that hold fixtures shared by several test modules (found by pytest, not imported).
pytest_plugins = ("tests.support.backup_lab", "tests.support.ci_stack", "tests.support.firewall_lab",
                  "tests.support.ids_proxy",
                  "tests.support.nginx_lab", "tests.support.swarm_lab", "tests.support.swarm_target")
INSTALL_COMMAND = ".ci/install-system-packages"

# The Debian package that provides each tool the tests look up with require_tool
# (tests/tools/test_skip_summary.py keeps it complete and in step with .ci/install-system-packages).
TOOL_PACKAGES = {
    "amtool": "prometheus-alertmanager",
    "busybox": "busybox",
    "curl": "curl",
    "dash": "dash",
    "debootstrap": "debootstrap",
    "docker": "docker.io",
    "dockerd": "docker.io",
    "fail2ban-client": "fail2ban",
    "fail2ban-regex": "fail2ban",
    "fail2ban-server": "fail2ban",
    "flock": "util-linux",
    "hey": "hey",
    "ip": "iproute2",
    "nft": "nftables",
    "nginx": "nginx",
    "nsenter": "util-linux",
    "openssl": "openssl",
    "prometheus": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "prometheus-blackbox-exporter": "prometheus-blackbox-exporter",
    "promtool": "prometheus",
    "redis-cli": "redis-server",
    "redis-server": "redis-server",
    "sha256sum": "coreutils",
    "unshare": "util-linux",
    "shellcheck": "shellcheck",
    "wrk": "wrk",
}

# Tools no Debian package provides, and what makes them.
TOOL_STEPS = {"pulumi": "build the engine: scripts/install-engine (docs/engine.md)"}

# Reasons `missing()` is called with that name no tool: (pattern, package, what else to do).
OTHER_REASONS: tuple[tuple[re.Pattern[str], str | None, str | None], ...] = (
    (
        re.compile(r"Docker Engine not reachable"), "docker.io",
        "start the Docker Engine: scripts/start-dockerd (as root)",
    ),
    (re.compile(r"Postgres server binaries"), "postgresql", None),
    (re.compile(r"no `postgres` user"), "postgresql", None),
    (re.compile(r"Pulumi CLI"), None, TOOL_STEPS["pulumi"]),
    (
        re.compile(r"scripts/build-test-images"), "debootstrap",
        "build the images: scripts/build-test-images (as root)",
    ),
)
TOOL_REASON = re.compile(r"tool '(?P<tool>[^']+)' not found")
CI_PREFIX = "required in CI: "

CI_FAILS = "under CI=true a skip for a missing tool is a failure: these tests failed and the run fails"
CI_WOULD_FAIL = "under CI=true (as in .ci/run) these skips are failures: CI never goes green on skipped proof"

_GROUPS = pytest.StashKey[dict[str, list[str]]]()


@dataclass(frozen=True)
class Remedy:
    package: str | None  # Debian package that provides it, when known
    action: str  # what to do, in one phrase
    step: str | None = None  # a step beyond installing packages (start or build something)


def remedy(reason: str) -> Remedy:
    """What installs (or starts) what a `missing()` reason names."""
    found = TOOL_REASON.search(reason)
    if found:
        package = TOOL_PACKAGES.get(found["tool"])
        step = TOOL_STEPS.get(found["tool"])
        if step is not None:
            return Remedy(None, step, step)
        if package is None:
            return Remedy(None, f"no known package; install {found['tool']!r} (see {INSTALL_COMMAND})")
        return Remedy(package, f"package {package}")
    for pattern, package, action in OTHER_REASONS:
        if pattern.search(reason):
            parts = [f"package {package}"] if package else []
            parts += [action] if action else []
            return Remedy(package, "; ".join(parts), action)
    return Remedy(None, f"see {INSTALL_COMMAND}")


def _raised_by_missing(excinfo: pytest.ExceptionInfo[BaseException]) -> bool:
    if not isinstance(excinfo.value, (pytest.skip.Exception, pytest.fail.Exception)):
        return False
    return any(
        entry.frame.code.name == "missing" and Path(entry.path) == SUPPORT for entry in excinfo.traceback
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if call.excinfo is not None and _raised_by_missing(call.excinfo):
        reason = str(getattr(call.excinfo.value, "msg", "") or call.excinfo.value)
        reason = reason.removeprefix(CI_PREFIX)
        item.config.stash.setdefault(_GROUPS, {}).setdefault(reason, []).append(item.nodeid)
    return report


def summary_lines(groups: dict[str, list[str]], in_ci: bool) -> list[str]:
    """The summary's lines (without the section rule); one `N test(s): reason -> remedy` line per group."""
    total = sum(len(ids) for ids in groups.values())
    outcome = "FAILED (CI=true)" if in_ci else "SKIPPED"
    lines = [f"{total} tests {outcome} because a system tool or service is missing; they proved nothing:"]
    packages: set[str] = set()
    actions: list[str] = []
    for reason, ids in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        fix = remedy(reason)
        lines.append(f"  {len(ids)} test{'' if len(ids) == 1 else 's'}: {reason} -> {fix.action}")
        files = Counter(nodeid.split("::", 1)[0] for nodeid in ids)
        lines.append("      in " + ", ".join(f"{name} ({count})" for name, count in sorted(files.items())))
        if fix.package:
            packages.add(fix.package)
        if fix.step and fix.step not in actions:
            actions.append(fix.step)
    lines.append(f"install what they need (as root, Debian/Ubuntu): {INSTALL_COMMAND}")
    if packages:
        apt = "apt-get install -y --no-install-recommends " + " ".join(sorted(packages))
        lines.append(f"  or just these: {apt}")
    lines.extend(f"  then {action}" for action in actions)
    lines.append(CI_FAILS if in_ci else CI_WOULD_FAIL)
    return lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    groups = config.stash.get(_GROUPS, {})
    if not groups:
        return
    title = "MISSING SYSTEM TOOLS: TESTS FAILED UNDER CI" if IN_CI else "MISSING SYSTEM TOOLS: TESTS SKIPPED"
    terminalreporter.section(title, sep="!", red=True, bold=True)
    for line in summary_lines(groups, IN_CI):
        terminalreporter.line(line, red=True, bold=line[0] != " ")
