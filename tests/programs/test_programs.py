"""Every in-container program is a file in programs/ that the linters see (issue 23).

Components load them with `programs.text()`; nothing hands a container a program written in a
Python string (`sh -c "<literal>"`, `python3 -c f"..."`). The shell programs are POSIX `sh`
(the images run dash or busybox), the Python ones are checked by ruff and mypy --strict
(scripts/test), and programs/README.md names each one.
"""

from __future__ import annotations

import ast
import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

import programs
from release import audit, audit_seal, handoff
from release.routing import docker_side
from render.ids import RUN_DIR, bundle
from stack import ids, proxy
from stack.backup import SCRIPTS, SCRIPTS_DIR, service_command
from stack.firewall import supervisor_source
from tests.support import rendered
from tests.support.docker_render import test_settings as settings_for

ROOT = Path(__file__).resolve().parents[2]
SHELLS = ("sh", "/bin/sh", "bash", "/bin/bash", "dash", "ash", "python3", "python", "erl")


def program_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "programs"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    return sorted(ROOT / name for name in listed if name and (ROOT / name).is_file())


def test_the_components_run_the_files() -> None:
    loaded = {
        "routing/swap.sh": docker_side.SWAP_SCRIPT, "routing/release.sh": docker_side.RELEASE_SCRIPT,
        "handoff/publish.sh": handoff._REDIS_SCRIPT, "handoff/consumers.sh": handoff._RABBITMQ_SCRIPT,
        "handoff/consumers.erl": handoff._BROKER_PROBE, "audit/append.sh": audit.APPEND_SCRIPT,
        "audit/seal.sh": audit_seal.SEAL_SCRIPT, "proxy/nginx-rotating-log.sh": proxy.LOG_ROTATION,
        "backup/service.sh": service_command()[-1], "ids/bootstrap.py": ids.BOOTSTRAP,
        "host-guard/host_guard.py": supervisor_source(),
        **{f"backup/{name}": (SCRIPTS_DIR / name).read_text() for name in SCRIPTS},
        **{f"ids/{name}": bundle(settings_for("paper-trading-programs"))[name]
           for name in ("decide.py", "supervise.py")},
    }
    for name, text in loaded.items():
        assert text == (ROOT / "programs" / name).read_text(), name
    everything = {path.relative_to(ROOT / "programs").as_posix() for path in program_files()}
    assert everything - set(loaded) == {"__init__.py", "README.md"}, "a program nobody loads (or untested)"


def test_the_loader_reads_only_programs() -> None:
    assert programs.text("routing/swap.sh").startswith("#!/bin/sh\n")
    for wrong in ("routing/nothing.sh", "../release/audit.py", "/etc/passwd", "routing"):
        with pytest.raises(FileNotFoundError):
            programs.text(wrong)


def test_shell_programs_are_posix_sh_and_python_programs_are_checked() -> None:
    kinds: dict[str, int] = {}
    for path in program_files():
        first = path.read_text().split("\n", 1)[0]
        if first.startswith("#!"):
            assert first == "#!/bin/sh", f"{path}: the images run dash or busybox: POSIX sh only"
        kinds[path.suffix or "sh"] = kinds.get(path.suffix or "sh", 0) + 1
        if path.suffix == ".sh":  # a program (#!/bin/sh) or a library it sources (lib.sh)
            assert first in ("#!/bin/sh", "# shellcheck shell=sh"), f"{path}: POSIX sh, as shellcheck sees it"
    assert kinds[".py"] >= 4 and kinds[".sh"] >= 8
    lint = (ROOT / "scripts" / "test").read_text()
    assert "venv/bin/ruff check .\n" in lint
    (mypy,) = [line for line in lint.splitlines() if line.startswith("venv/bin/mypy --strict ")]
    assert {"programs", "components", "tests", "tools"} <= set(mypy.split()[2:])


def test_the_readme_names_every_program() -> None:
    readme = (ROOT / "programs" / "README.md").read_text()
    for path in program_files():
        name = path.relative_to(ROOT / "programs").as_posix()
        if name not in ("README.md", "__init__.py"):
            assert f"`{name}`" in readme, f"programs/README.md does not name {name}"


def _stringish(node: ast.AST) -> bool:
    """A program written in Python: a literal, an f-string, a concatenation or `"...".replace(...)`."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp):
        return _stringish(node.left) or _stringish(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return _stringish(node.func.value)
    return False


def _program_literals(tree: ast.AST) -> list[int]:
    """Lines where a list hands a shell/interpreter `-c` a program written as a Python string
    (directly, or through a name assigned one). Healthchecks (`CMD ...`) are Docker's, not looked at."""
    written = {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign) and _stringish(node.value)
               for target in node.targets if isinstance(target, ast.Name)}

    def program(node: ast.AST) -> bool:
        return _stringish(node) or (isinstance(node, ast.Name) and node.id in written)

    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.List) or not node.elts:
            continue
        items = node.elts
        if isinstance(items[0], ast.Constant) and items[0].value in ("CMD", "CMD-SHELL"):
            continue
        for i in range(len(items) - 1):
            head = items[i - 1] if i else None
            flag, body = items[i], items[i + 1]
            after_shell = head is None or (isinstance(head, ast.Constant) and head.value in SHELLS)
            if (after_shell and isinstance(flag, ast.Constant) and flag.value in ("-c", "-eval")
                    and program(body)):
                found.append(node.lineno)
    return found


def test_no_component_writes_a_program_in_a_string() -> None:
    """The issue's bar: a `sh -c`/`python3 -c` program is a file's text, never a literal in a component.

    Healthcheck one-liners (`CMD-SHELL` tests, stack/common.py `http_probe`, the monitoring
    checks) are Docker's healthcheck commands, not programs: they are not looked at here.
    """
    offenders = []
    for path in sorted((ROOT / "components").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        offenders += [f"{path.relative_to(ROOT)}:{line}" for line in _program_literals(tree)]
        for node in ast.walk(tree):
            if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id.endswith("_SCRIPT")
                                                     for t in node.targets)
                    and isinstance(node.value, (ast.Constant, ast.JoinedStr, ast.BinOp))):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} (a *_SCRIPT string)")
    assert offenders == []
    # The check itself finds what the issue named.
    sample = ast.parse('X = ["sh", "-c", f"cd {D}"]\nY = ["-c", "import os"]\nZ = ["sh", "-c", TEXT]\n'
                       'loop = "while sleep 1; do :; done"\nW = ["sh", "-c", loop, "x"]\n'
                       'V = ["CMD", "bash", "-c", loop]\nU = ["sh", "-c", "a".replace("a", "b")]\n')
    assert _program_literals(sample) == [1, 2, 5, 7]


def test_the_ids_bootstrap_writes_the_bundle_and_runs_the_supervisor(tmp_path: Path) -> None:
    """programs/ids/bootstrap.py as the rendered container runs it (`python3 -c <text> <run dir>
    <env name>`), here with the run directory in a temp dir and a stand-in supervisor."""
    container = next(r for r in rendered("prod").containers if r.name == "ids")
    command = container.inputs["command"]
    assert container.inputs["entrypoints"] == ["python3"]
    assert command == ["-c", ids.BOOTSTRAP, RUN_DIR, ids.BUNDLE_ENV]
    run = tmp_path / "run"
    supervisor = "import sys\nprint('supervised', sys.argv[1:])\n"
    files = {"conf/jail.conf": "[DEFAULT]\n", "supervise.py": supervisor}
    encoded = base64.b64encode(json.dumps(files).encode()).decode()
    done = subprocess.run(
        [sys.executable, *command[:2], str(run), command[3]],
        env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", ids.BUNDLE_ENV: encoded},
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "supervised []\n"
    assert (run / "conf" / "jail.conf").read_text() == "[DEFAULT]\n"
