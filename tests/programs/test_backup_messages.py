"""Backup/restore as a first-time operator meets them (issue 13, item 10).

`--help` works with no environment at all; a missing setting or a held lock is one
readable `ERROR:` line, and the exit status is the exit code, never glued to the message.
The scripts run from backup/bin, which is what the backup container receives
(tests/stack/test_backup_render.py asserts the uploads are these files).
"""

from __future__ import annotations

import fcntl
import re
import subprocess
from pathlib import Path

import pytest

from stack.backup import SCRIPTS_DIR
from tests.support import require_tool

# `2026-01-01T00:00:00Z ERROR: message`
ERROR_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ERROR: (?P<message>.+)")


def run(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPTS_DIR / script), *args], env=env or {}, capture_output=True, text=True, timeout=60
    )


def errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The messages of the `ERROR:` lines on stderr."""
    return [m["message"] for line in result.stderr.splitlines() if (m := ERROR_LINE.fullmatch(line))]


@pytest.mark.parametrize(
    ("script", "first_line"),
    [
        ("backup", "usage: backup once|loop|metrics|status|record-check"),
        ("restore", "usage: restore [--backup FILE] [--into-new-database NAME] [--force]"),
    ],
)
def test_help_works_with_no_environment(script: str, first_line: str) -> None:
    result = run(script, "--help")  # env={}: no BACKUP_DIR, no PATH beyond the shell's default
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0] == first_line
    assert any(line.startswith("Environment: BACKUP_DIR (required)") for line in lines)
    assert any(line.startswith("Exit status: 0 ok") for line in lines)


@pytest.mark.parametrize(("script", "args"), [("backup", ("once",)), ("restore", ("--list",))])
def test_missing_backup_dir_is_one_error_line_naming_it(script: str, args: tuple[str, ...]) -> None:
    result = run(script, *args)
    assert result.returncode == 64
    assert errors(result) == [
        "BACKUP_DIR is not set: the folder holding the backups (the backup container sets it; docs/backup.md)"
    ]
    assert len(result.stderr.splitlines()) == 1


def test_unknown_argument_is_a_usage_error() -> None:
    result = run("restore", "--bogus")
    assert result.returncode == 64
    lines = result.stderr.splitlines()
    assert lines[0] == "restore: unknown argument --bogus"
    assert lines[1].startswith("usage: restore ")
    result = run("backup", "bogus")
    assert result.returncode == 64
    assert result.stderr.splitlines()[0] == "usage: backup once|loop|metrics|status|record-check"


def test_held_lock_exits_75_with_the_status_not_in_the_message(tmp_path: Path) -> None:
    require_tool("flock")
    with (tmp_path / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = run("backup", "once", env={"BACKUP_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 75
    assert errors(result) == [f"another backup or restore is running (lock {tmp_path}/.lock)"]


def test_unreadable_password_file_exits_1_naming_the_file(tmp_path: Path) -> None:
    result = run(
        "backup", "once",
        env={"BACKUP_DIR": str(tmp_path), "PGPASSWORD_FILE": "/nonexistent/pw", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert errors(result) == ["cannot read PGPASSWORD_FILE /nonexistent/pw"]
