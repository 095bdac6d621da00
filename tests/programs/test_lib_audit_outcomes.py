"""programs/backup/lib.sh's audit trail on its own: one intent, then one outcome per exit status.

`audit_begin` appends `started` and installs the EXIT trap; the outcome follows from the exit
status alone (0 ok; 2, 3, 75 refused: bad backup, refused target, lock held; anything else
failed). Run in dash (Debian) and, where installed, busybox ash (the postgres:*-alpine image);
the lines are parsed with release/audit.py's own parser.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from release import audit

LIB = Path(__file__).resolve().parents[2] / "programs" / "backup" / "lib.sh"


def _shells() -> list[list[str]]:
    shells = [["/bin/sh"]]
    busybox = shutil.which("busybox")
    if busybox:
        shells.append([busybox, "sh"])
    return shells


@pytest.mark.parametrize("shell", _shells(), ids=lambda s: Path(s[0]).name)
@pytest.mark.parametrize(("status", "result"), [(0, "ok"), (2, "refused"), (3, "refused"), (75, "refused"),
                                                (1, "failed"), (5, "failed")])
def test_each_exit_status_leaves_its_outcome(
    tmp_path: Path, shell: list[str], status: int, result: str
) -> None:
    log = tmp_path / "audit.jsonl"
    script = f'. "{LIB}"; audit_begin backup; AUDIT_BACKUP_ID=postgres-x.dump; exit {status}'
    done = subprocess.run([*shell, "-c", script], env={"PATH": "/usr/bin:/bin", "AUDIT_LOG": str(log),
                                                      "AUDIT_STACK": "prod", "PAPER_TRADING_ACTOR": "alice"},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == status, done.stderr
    records = [audit.parse(line) for line in log.read_text().splitlines()]
    assert [(r["operation"], r["result"]) for r in records] == [("backup", "started"), ("backup", result)]
    outcome = records[1]
    assert (outcome["actor"], outcome["stack"], outcome["backup_id"]) == ("alice", "prod", "postgres-x.dump")
    assert outcome["error"] == (None if status == 0 else f"exit status {status}")


def test_a_run_that_ends_ok_records_no_error_even_after_a_retried_step(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    script = f'. "{LIB}"; audit_begin restore; AUDIT_ERROR="first attempt timed out"; exit 0'
    done = subprocess.run(["/bin/sh", "-c", script], env={"PATH": "/usr/bin:/bin", "AUDIT_LOG": str(log)},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    outcome = audit.parse(log.read_text().splitlines()[-1])
    assert (outcome["operation"], outcome["result"], outcome["error"]) == ("restore", "ok", None)


def _run(tmp_path: Path, body: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = f'. "{LIB}"; {body}'
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", **env})


def test_by_default_an_intent_that_cannot_be_appended_stops_the_run_before_it_acts(tmp_path: Path) -> None:
    acted = tmp_path / "acted"
    done = _run(tmp_path, f'audit_begin backup; touch "{acted}"; exit 0', AUDIT_LOG="/dev/full")
    assert done.returncode == 74, done.stderr
    assert "refused before it acted" in done.stderr and not acted.exists()


def test_an_ok_run_whose_outcome_cannot_be_appended_exits_74_unless_fail_open(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    body = 'audit_begin backup; rm -f "$AUDIT_LOG"; mkdir "$AUDIT_LOG"; exit 0'
    closed = _run(tmp_path, body, AUDIT_LOG=str(log))
    assert closed.returncode == 74 and "its record is missing" in closed.stderr
    log.rmdir()
    failed = _run(tmp_path, body.replace("exit 0", "exit 1"), AUDIT_LOG=str(log))
    assert failed.returncode == 1  # a failed run keeps its own status
    log.rmdir()
    opened = _run(tmp_path, body, AUDIT_LOG=str(log), AUDIT_FAIL_CLOSED="0")
    assert opened.returncode == 0, opened.stderr


def test_an_error_with_quotes_backslashes_and_control_characters_stays_one_valid_record(
    tmp_path: Path,
) -> None:
    log = tmp_path / "audit.jsonl"
    nasty = 'pg_dump: "db" \\\\ broke\\ttab ' + "x" * 1500
    done = _run(tmp_path, f"audit_begin backup; AUDIT_ERROR=$(printf '{nasty}'); exit 1", AUDIT_LOG=str(log))
    assert done.returncode == 1, done.stderr
    error = audit.parse(log.read_text().splitlines()[-1])["error"]
    assert error.startswith('pg_dump: "db" \\ broketab x') and len(error) == 1000
