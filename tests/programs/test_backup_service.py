"""The backup service beyond one round trip: RabbitMQ definitions, the schedule loop, and the
audit trail failing closed (the lab: tests/support/backup_lab.py)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.backup_lab import (
    Runner,
    _sha256,
)
from tests.support.backup_render import backup_container, backup_graph

pytestmark = pytest.mark.tools

# ---------------------------------------------------------------------------- rabbitmq definitions


class _Management(BaseHTTPRequestHandler):
    """Stands in for RabbitMQ's management API on loopback: basic auth, GET /api/definitions."""

    expected_auth = ""
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.requests.append(self.path)
        if self.headers.get("Authorization") != self.expected_auth:
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps({"rabbit_version": "3.13.7", "users": [{"name": "trading"}],
                           "vhosts": [{"name": "/"}], "queues": [{"name": "orders", "vhost": "/"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_rabbitmq_definitions_exported_with_password_from_file(runner: Runner) -> None:
    password = "rmq-Pass-123"
    (runner.work / "rabbitmq_password").write_text(password)
    _Management.expected_auth = "Basic " + base64.b64encode(f"trading:{password}".encode()).decode()
    _Management.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Management)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        env = {"RABBITMQ_API_URL": url, "RABBITMQ_PASSWORD_FILE": str(runner.work / "rabbitmq_password")}
        done = runner.run("backup", "once", **env)
        assert done.returncode == 0, done.stderr
        [export] = list(runner.backups.glob("rabbitmq-definitions-*.json"))
        assert json.loads(export.read_text())["queues"][0]["name"] == "orders"
        assert (runner.backups / f"{export.name}.sha256").read_text().split()[0] == _sha256(export)
        assert _Management.requests == ["/api/definitions"]
        ok = 'paper_trading_backup_component_last_success_timestamp_seconds{component="rabbitmq"}'
        assert runner.metric(ok) > 0
        # Wrong password: counted as a component failure; the Postgres run still succeeds.
        (runner.work / "rabbitmq_password").write_text("wrong")
        time.sleep(1.1)
        again = runner.run("backup", "once", **env)
        assert again.returncode == 0, again.stderr
        assert runner.metric('paper_trading_backup_component_failures_total{component="rabbitmq"}') == 1
        assert len(list(runner.backups.glob("rabbitmq-definitions-*.json"))) == 1
        assert not list(runner.backups.glob(".tmp-*"))
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------- the service loop


def test_service_loop_backs_up_on_schedule_and_stops_on_sigterm(runner: Runner) -> None:
    """The container's command, as rendered: a backup at once, none while the newest is fresh.

    It is `/bin/sh -c '<programs/backup/service.sh: narrow the volumes' modes, exec backup loop>'`
    (stack/backup.py, service_command); run with this userland's shell, `backup` found on PATH
    as in the container.
    """
    command = backup_container(backup_graph("prod")).inputs["command"]
    assert command[:2] == ["/bin/sh", "-c"] and command[2].rstrip().endswith("exec backup loop")
    for directory in (runner.backups, runner.metrics.parent):
        directory.chmod(0o1777)  # as copy-up leaves a new volume

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*(runner.shell or command[:1]), *command[1:]], env=runner.env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )

    def stop(proc: subprocess.Popen[str]) -> str:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
            assert proc.returncode == 0, out
            return out
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)  # the backgrounded sleep

    proc = start()
    try:
        # First run: a backup, then the weekly restore check (none done yet), then sleep.
        check = "paper_trading_backup_restore_check_last_success_timestamp_seconds"
        deadline = time.time() + 90
        while time.time() < deadline and not (runner.metrics.exists() and runner.metric(check) > 0):
            time.sleep(0.2)
        assert len(runner.good()) == 1
        time.sleep(0.5)
    finally:
        out = stop(proc)
    assert "restore check: ok" in out and "next check in 21600s" in out and "stopping" in out
    # A restart with a fresh backup on disk waits for the schedule instead of dumping again.
    proc = start()
    try:
        time.sleep(3)
        assert len(runner.good()) == 1
    finally:
        out = stop(proc)
    assert "next check in" in out and "dumping" not in out
    assert {d.name: oct(d.stat().st_mode & 0o7777) for d in (runner.backups, runner.metrics.parent)} == {
        runner.backups.name: "0o700", runner.metrics.parent.name: "0o755"}
    assert runner.metrics.exists()


# ---------------------------------------------------------------------------- audit fails closed (issue 20)


def _audit(runner: Runner, path: Path | None = None) -> list[dict[str, Any]]:
    from release import audit

    log = path or Path(runner.env["AUDIT_LOG"])
    return [audit.parse(line) for line in log.read_text().splitlines()] if log.exists() else []


def _errors(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The `ERROR: ...` messages of a run's log lines (`<time> ERROR: ...`)."""
    return [line.split(" ", 1)[1] for line in done.stderr.splitlines() if " ERROR: " in f" {line}"]


def test_a_backup_writes_its_intent_then_its_outcome(runner: Runner) -> None:
    from release import audit

    assert runner.env["AUDIT_FAIL_CLOSED"] == "1"  # what the rendered container runs with
    done = runner.run("backup", "once", "--actor", "ops-alice")
    assert done.returncode == 0, done.stderr
    intent, outcome = _audit(runner)
    assert tuple(intent) == audit.FIELDS == tuple(outcome)
    assert [(r["operation"], r["result"], r["actor"]) for r in (intent, outcome)] == [
        ("backup", "started", "ops-alice"), ("backup", "ok", "ops-alice")]
    assert (intent["backup_id"], outcome["backup_id"]) == (None, runner.good()[0])
    assert (outcome["reason"], outcome["checks"]) == (None, None)


def test_fail_closed_a_backup_the_trail_cannot_take_is_refused_before_it_dumps(runner: Runner) -> None:
    """/dev/full: every write fails with ENOSPC, as on a full audit volume."""
    done = runner.run("backup", "once", AUDIT_LOG="/dev/full")
    assert done.returncode == 74, done.stderr
    assert runner.good() == [] and not list(runner.backups.iterdir())
    [error] = _errors(done)
    assert error.startswith("ERROR: audit: backup refused before it acted: its intent record cannot be "
                            "appended to /dev/full"), error


def test_fail_closed_a_restore_the_trail_cannot_take_is_refused_before_it_touches_a_database(
        runner: Runner) -> None:
    assert runner.run("backup", "once").returncode == 0
    [name] = runner.good()
    done = runner.run("restore", "--backup", name, "--into-new-database", "inspect_fc", AUDIT_LOG="/dev/full")
    assert done.returncode == 74, done.stderr
    created = runner.cluster.psql("SELECT count(*) FROM pg_database WHERE datname = 'inspect_fc'",
                                  db="postgres")
    assert created == "0"
    [error] = _errors(done)
    assert error.startswith("ERROR: audit: restore refused before it acted"), error


def test_fail_open_the_backup_warns_and_goes_on(runner: Runner) -> None:
    done = runner.run("backup", "once", AUDIT_LOG="/dev/full", AUDIT_FAIL_CLOSED="0")
    assert done.returncode == 0, done.stderr
    assert len(runner.good()) == 1
    assert _errors(done) == []
    missing = [line for line in done.stderr.splitlines()
               if "audit: could not append the backup record" in line]
    assert [m.split("record (", 1)[1].split(")", 1)[0] for m in missing] == ["started", "ok"]


def test_fail_closed_an_outcome_the_trail_cannot_take_fails_the_run_loudly(runner: Runner) -> None:
    """The intent is appended, then the file turns into a directory mid-run (as pg_dump starts): the
    backup is made and kept, but the run exits 74 and says its record is missing."""
    wrap = runner.work / "wrap"
    wrap.mkdir()
    real = shutil.which("pg_dump", path=runner.env["PATH"])
    assert real
    (wrap / "pg_dump").write_text(
        f'#!/bin/sh\nmv "$AUDIT_LOG" "$AUDIT_LOG.kept" && mkdir "$AUDIT_LOG"\nexec {real} "$@"\n')
    (wrap / "pg_dump").chmod(0o755)
    done = runner.run("backup", "once", PATH=f"{wrap}:{runner.env['PATH']}")
    assert done.returncode == 74, done.stderr
    assert len(runner.good()) == 1  # made, not undone
    [intent] = _audit(runner, Path(runner.env["AUDIT_LOG"] + ".kept"))
    assert (intent["operation"], intent["result"]) == ("backup", "started")
    [error] = _errors(done)
    assert error.startswith("ERROR: audit: the backup ended ok but its record is missing"), error
