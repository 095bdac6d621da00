"""backup/bin/lib.sh's audit trail on its own: one intent, then one outcome per exit status.

`audit_begin` appends `started` and installs the EXIT trap; the outcome follows from the exit
status alone (0 ok; 2, 3, 75 refused: bad backup, refused target, lock held; anything else
failed). Run in dash (Debian) and, where installed, busybox ash (the postgres:*-alpine image);
the lines are parsed with components/audit.py's own parser.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from components import audit

LIB = Path(__file__).resolve().parent.parent / "backup" / "bin" / "lib.sh"


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
