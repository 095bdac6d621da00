"""First-run error messages (issue 13, item 10): one line that names the problem, a non-zero exit.

Each command runs as a user runs it (a subprocess) against the real failure: a port nothing
listens on, a socket that does not exist, a stack file that is not YAML, a folder that is not
there. Assertions parse the line and compare its facts (which target, which file and line,
which folder, the bar and the verdict), not substrings of the whole output.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.fakes.validation_servers import free_port, reference_app
from tests.support.fidelity_report import APP_BLOCKING_CHECKS

ROOT = Path(__file__).resolve().parents[2]
CLEARED = ("VALIDATION_", "BINANCE_", "KUCOIN_")
Result = subprocess.CompletedProcess[str]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    """`python ARGS` from the repo root, without the validation and exchange settings of this shell."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED)}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )


# --------------------------------------------------------------------------- emergency routing CLI

ENGINE_LINE = re.compile(
    r"routing: cannot reach the Docker Engine \(DOCKER_HOST=(?P<host>[^)]+)\): (?P<why>[^;]+); "
    r"start dockerd, or set DOCKER_HOST to the engine that runs the proxy"
)


def _routing_without_engine(docker_host: str, *args: str) -> re.Match[str]:
    result = run("-m", "release.routing", *args, env={"DOCKER_HOST": docker_host}, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # one line, no traceback
    match = ENGINE_LINE.fullmatch(lines[0])
    assert match, lines[0]
    assert match["host"] == docker_host
    return match


def test_routing_cli_without_engine_names_docker_host_tcp() -> None:
    host = f"tcp://127.0.0.1:{free_port()}"
    assert _routing_without_engine(host, "show", "--container", "p")["why"] == "connection refused"
    match = _routing_without_engine(host, "switch", "--to", "blue", "--container", "p", "--no-checks",
                                    "--reason", "drill")
    assert match["why"] == "connection refused"


def test_routing_cli_without_engine_names_docker_host_socket(tmp_path: Path) -> None:
    host = f"unix://{tmp_path}/docker.sock"
    assert _routing_without_engine(host, "show", "--container", "p")["why"] == "no socket at that path"


# --------------------------------------------------------------------------- validation CLI

UNREACHABLE = re.compile(r"target (?P<url>\S+) unreachable: (?P<why>[^;]+); (?P<failed>\d+) checks failed")
FAILED = re.compile(
    r"target (?P<url>\S+): VALIDATION FAILED, (?P<count>\d+) blocking checks failed \((?P<names>.+)\)"
)
PASSED = re.compile(r"target (?P<url>\S+): VALIDATION PASSED, (?P<passed>\d+) checks passed")


def _validate(tmp_path: Path, url: str) -> tuple[int, str, dict[str, object]]:
    report_file = tmp_path / "report.json"
    result = run("-m", "validation", "--base-url", url, "--report", str(report_file),
                 env={"VALIDATION_RETRIES": "1"})
    return result.returncode, result.stdout.splitlines()[0], json.loads(report_file.read_text())


def _checks(report: dict[str, object], status: str, blocking_only: bool = False) -> list[str]:
    checks = report["checks"]
    assert isinstance(checks, list)
    return [c["name"] for c in checks if c["status"] == status and (c["blocking"] or not blocking_only)]


def test_unreachable_target_has_one_headline_first_and_the_report_intact(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    status, first, report = _validate(tmp_path, url)
    assert status == 1
    match = UNREACHABLE.fullmatch(first)
    assert match, first
    assert (match["url"], match["why"]) == (url, "connection refused")
    assert int(match["failed"]) == len(_checks(report, "failed"))
    # The structured report is unchanged: every app-facing blocking check failed, nothing else.
    assert set(_checks(report, "failed", blocking_only=True)) == APP_BLOCKING_CHECKS
    assert report["passed"] is False


def test_reachable_failing_target_headline_names_the_failed_checks(tmp_path: Path) -> None:
    with reference_app(faults="paper-mode-off") as app:
        status, first, report = _validate(tmp_path, app.url)
    assert status == 1
    match = FAILED.fullmatch(first)
    assert match, first
    failed = _checks(report, "failed", blocking_only=True)
    assert match["url"] == app.url
    assert int(match["count"]) == len(failed) == 2
    assert match["names"].split(", ") == failed


def test_passing_target_headline(tmp_path: Path) -> None:
    with reference_app() as app:
        status, first, report = _validate(tmp_path, app.url)
    assert status == 0
    match = PASSED.fullmatch(first)
    assert match, first
    assert int(match["passed"]) == len(_checks(report, "passed"))


# --------------------------------------------------------------------------- render --stack-file

YAML_LINE = re.compile(r"error: (?P<path>.+):(?P<line>\d+):(?P<column>\d+): not valid YAML: (?P<problem>.+)")


def test_stack_file_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    stack_file = tmp_path / "Pulumi.candidate.yaml"
    stack_file.write_text(
        "config:\n"
        "  paper-trading:paperTradingMode: true\n"
        "  paper-trading:allowRealTrades: false\n"
        "  paper-trading:deployment: {activeColor: blue\n"  # unclosed flow mapping
        "  paper-trading:namePrefix: x\n"
    )
    out = tmp_path / "out"
    result = run("-m", "tools.render", "--stack-file", str(stack_file), "--out", str(out))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    match = YAML_LINE.fullmatch(lines[0])
    assert match, lines[0]
    assert match["path"] == str(stack_file)
    assert int(match["line"]) in (4, 5)  # where the parser notices the unclosed mapping
    assert not out.exists()


def test_stack_file_tab_indent_names_its_line(tmp_path: Path) -> None:
    stack_file = tmp_path / "Pulumi.tabs.yaml"
    stack_file.write_text("config:\n  paper-trading:paperTradingMode: true\n\tpaper-trading:namePrefix: x\n")
    result = run("-m", "tools.render", "--stack-file", str(stack_file), "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    match = YAML_LINE.fullmatch(result.stderr.strip())
    assert match, result.stderr
    assert (match["path"], int(match["line"])) == (str(stack_file), 3)


# --------------------------------------------------------------------------- policies.check --graph

NO_RENDER = re.compile(
    r"(?P<source>\S+): BLOCKED: no render to check: the folder (?P<folder>\S+) "
    r"(?P<why>does not exist|holds no resources\.json) "
    r"\(write one with `python -m tools\.render --stack <name> --out (?P<out>\S+)`\)"
)


def _check_graph(path: Path) -> re.Match[str]:
    result = run("-m", "policies.check", "--graph", str(path))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    match = NO_RENDER.fullmatch(lines[0])
    assert match, lines[0]
    assert match["folder"] == match["out"] == match["source"] == str(path)
    return match


def test_policy_check_on_a_missing_folder_names_the_folder(tmp_path: Path) -> None:
    assert _check_graph(tmp_path / "no-such-render")["why"] == "does not exist"


def test_policy_check_on_a_folder_without_a_render_says_so(tmp_path: Path) -> None:
    assert _check_graph(tmp_path)["why"] == "holds no resources.json"


# --------------------------------------------------------------------------- bench/evaluate.py

RATIO_LINE = re.compile(
    r"evaluate/import ratio: (?P<value>[\d.]+) \(bar <= (?P<bar>[\d.]+)\): (?P<verdict>PASS|FAIL)"
)
POLICY_LINE = re.compile(
    r"offline policy check adds: (?P<value>-?[\d.]+) s \(bar < (?P<bar>[\d.]+) s\): (?P<verdict>PASS|FAIL)"
)


def _bench(*args: str) -> tuple[int, dict[str, re.Match[str]]]:
    result = run("bench/evaluate.py", "--runs", "1", *args, timeout=600)
    found = {}
    for line in result.stdout.splitlines():
        for name, pattern in (("ratio", RATIO_LINE), ("policy", POLICY_LINE)):
            if match := pattern.fullmatch(line):
                found[name] = match
    return result.returncode, found


def test_bench_prints_bar_and_verdict_and_exits_by_it() -> None:
    status, lines = _bench("--with-policies", "--bar", "1000", "--policy-bar", "1000")
    assert set(lines) == {"ratio", "policy"}
    assert [lines[k]["verdict"] for k in ("ratio", "policy")] == ["PASS", "PASS"]
    assert float(lines["ratio"]["bar"]) == 1000 and float(lines["ratio"]["value"]) <= 1000
    assert status == 0

    status, lines = _bench("--bar", "0.5")  # evaluating includes importing: above half of it
    ratio = lines["ratio"]
    assert (float(ratio["bar"]), ratio["verdict"]) == (0.5, "FAIL")
    assert float(ratio["value"]) > 0.5
    assert status == 1
