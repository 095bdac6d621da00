"""The backup service as the program deploys it, on the real Docker Engine (issue 13, item 6).

The rendered ci stack's postgres, redis, rabbitmq and backup containers are started from
their rendered inputs (tests/docker/test_ci_images.py's CiStack: user, command, uploads, volumes,
capabilities, read-only root, ...) with FRESH named volumes, as on a first deploy. Then:

- the backup runs as the image's `postgres` user, not root, and owns both of its volumes
  (Docker's copy-up from the ownership donor mounts), with the modes its start narrows;
- a backup (`backup once`) and a restore into a new database (`docker exec ... restore`)
  work as that user, and the restored rows equal the source;
- an old root-owned backups volume stops the service with one line naming the fix.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stack.backup import BACKUP_DIR, BACKUP_USER, METRICS_DIR
from tests.support import require_docker
from tests.support.ci_stack import CiStack

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"postgres", "redis", "rabbitmq", "backup"}
# Its own label: test_ci_images removes every leftover with its label when it starts.
LABEL = "paper-trading.backup-docker-test"
TIMEOUT = 120.0


class _Subset:
    """The rendered ci graph restricted to the datastores and the backup."""

    def __init__(self, graph: Any) -> None:
        self._graph = graph
        self.containers = [r for r in graph.containers
                           if r.label_map.get("paper-trading.service") in SERVICES]

    def of_type(self, type_: str) -> list[Any]:
        return list(self._graph.of_type(type_))


@pytest.fixture(scope="module")
def stack() -> Iterator[CiStack]:
    require_docker()
    import docker

    from tools.render import evaluate

    graph = _Subset(evaluate("ci"))
    client = docker.from_env(timeout=120)
    for image in sorted({r.inputs["image"] for r in graph.containers}):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            proc = subprocess.run([str(ROOT / "scripts" / "build-test-images"), "--ci"],
                                  capture_output=True, text=True, timeout=1800)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            break
    ci = CiStack(client, graph)
    ci.labels = {LABEL: ci.prefix}
    try:
        deadline = time.monotonic() + TIMEOUT
        ci.create_networks()
        ci.start_all(deadline)
        pending = list(graph.containers)
        while pending and time.monotonic() < deadline:
            pending = [r for r in pending if ci.status(r) is not True]
            time.sleep(0.5)
        assert not pending, "not healthy:\n" + "\n".join(ci.describe(r) for r in pending)
        yield ci
    finally:
        _remove(client, ci.prefix)
        client.close()


def _remove(client: Any, prefix: str) -> None:
    selector = {"label": f"{LABEL}={prefix}"}
    for container in client.containers.list(all=True, filters=selector):
        with contextlib.suppress(Exception):
            container.remove(force=True, v=True)
    for network in client.networks.list(filters=selector):
        with contextlib.suppress(Exception):
            network.remove()
    for volume in client.volumes.list(filters=selector):
        with contextlib.suppress(Exception):
            volume.remove(force=True)


def _container(stack: CiStack, service: str) -> Any:
    [res] = [r for r in stack.graph.containers if r.label_map.get("paper-trading.service") == service]
    return stack.started[res.inputs["name"]]


def _exec(container: Any, *cmd: str) -> tuple[int, str]:
    code, output = container.exec_run(list(cmd), demux=False)
    return int(code), output.decode(errors="replace").strip()


def _psql(stack: CiStack, sql: str, db: str = "trading_bot") -> str:
    # From the backup container: its environment names the server, user and password file.
    code, out = _exec(_container(stack, "backup"), "sh", "-c",
                      'PGPASSWORD="$(cat "$PGPASSWORD_FILE")" '
                      'exec psql -v ON_ERROR_STOP=1 -XAtq -d "$0" -c "$1"', db, sql)
    assert code == 0, out
    return out


def test_backup_runs_as_the_images_postgres_user_and_owns_its_volumes(stack: CiStack) -> None:
    backup = _container(stack, "backup")
    code, ids = _exec(backup, "sh", "-c", "id -un; id -u")
    assert code == 0
    user, uid = ids.split()
    assert user == BACKUP_USER and int(uid) != 0
    code, modes = _exec(backup, "stat", "-c", "%n %u %a", BACKUP_DIR, METRICS_DIR)
    assert code == 0
    assert {line.split()[0]: tuple(line.split()[1:]) for line in modes.splitlines()} == {
        BACKUP_DIR: (uid, "700"), METRICS_DIR: (uid, "755")}


def test_backup_and_restore_work_as_that_user(stack: CiStack) -> None:
    _psql(stack, "CREATE TABLE IF NOT EXISTS e_probe (id int primary key, note text);"
                 "INSERT INTO e_probe SELECT g, md5(g::text) FROM generate_series(1, 500) g "
                 "ON CONFLICT DO NOTHING")
    source = _psql(stack, "SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM e_probe")
    backup = _container(stack, "backup")
    code, out = _exec(backup, "backup", "once")
    assert code == 0, out
    code, listing = _exec(backup, "sh", "-c", f"cd {BACKUP_DIR} && stat -c '%n %U' *")
    assert code == 0, listing
    owners = dict(line.rsplit(" ", 1) for line in listing.splitlines())
    dumps = sorted(name for name in owners if name.startswith("postgres-") and name.endswith(".dump"))
    assert dumps and f"{dumps[-1]}.sha256" in owners
    assert set(owners.values()) == {BACKUP_USER}
    code, out = _exec(backup, "restore", "--into-new-database", "e_probe_copy")
    assert code == 0, out
    assert _psql(stack, "SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM e_probe",
                 db="e_probe_copy") == source


def test_an_old_root_owned_volume_is_named_with_the_fix(stack: CiStack) -> None:
    """The upgrade case: a volume filled by the earlier root backup is not the user's."""
    import docker

    client = stack.client
    volume = client.volumes.create(f"{stack.prefix}-old-backups", labels=stack.labels)
    client.containers.run("paper-trading-base:test", ["sh", "-c", "touch /v/old.dump"], remove=True,
                          volumes={volume.name: {"bind": "/v", "mode": "rw"}}, labels=stack.labels)
    backup = _container(stack, "backup")
    attrs = backup.attrs
    try:
        run = client.containers.run(
            attrs["Config"]["Image"], attrs["Config"]["Cmd"], entrypoint=attrs["Config"]["Entrypoint"],
            user=attrs["Config"]["User"], environment=attrs["Config"]["Env"], labels=stack.labels,
            volumes={volume.name: {"bind": BACKUP_DIR, "mode": "rw"}}, network_mode="none",
            cap_drop=["ALL"], security_opt=["no-new-privileges:true"], detach=True)
        status = run.wait(timeout=60)
        logs = run.logs().decode(errors="replace").strip().splitlines()
        run.remove(force=True)
    except docker.errors.APIError as exc:  # pragma: no cover - surfaced as a failure
        pytest.fail(str(exc))
    assert status["StatusCode"] == 78
    assert logs[-1].startswith(f"backup: {BACKUP_DIR} and {METRICS_DIR} must be owned by {BACKUP_USER}")
    assert "docs/backup.md" in logs[-1]


def _audit_records(stack: CiStack) -> list[dict[str, Any]]:
    from release import audit

    code, out = _exec(_container(stack, "backup"), "sh", "-c", 'cat "$AUDIT_LOG" 2>/dev/null || true')
    assert code == 0, out
    return [audit.parse(line) for line in out.splitlines()]


def test_backup_and_restore_leave_an_intent_and_one_outcome_record_each(stack: CiStack) -> None:
    """Issue 14, part 3: in the real container, on the real (fresh) audit volume; issue 20: the
    intent (`started`) first."""
    from release import audit

    backup = _container(stack, "backup")
    before = len(_audit_records(stack))
    code, out = _exec(backup, "backup", "once", "--actor", "ops-alice")
    assert code == 0, out
    intent, rec = _audit_records(stack)[before:]
    assert (intent["operation"], intent["result"], intent["actor"]) == ("backup", "started", "ops-alice")
    assert tuple(rec) == audit.FIELDS
    assert (rec["actor"], rec["operation"], rec["result"], rec["from"], rec["to"], rec["error"]) == (
        "ops-alice", "backup", "ok", None, None, None)
    assert rec["stack"] == "ci" and rec["time"].endswith("Z") and rec["duration_ms"] >= 0
    dump = rec["backup_id"]
    assert dump.startswith("postgres-") and dump.endswith(".dump")
    # A restore, then the same restore refused (the target is no longer empty).
    code, out = _exec(backup, "restore", "--backup", dump, "--into-new-database", "h_audit_copy",
                      "--actor", "ops-alice")
    assert code == 0, out
    code, out = _exec(backup, "restore", "--backup", dump, "--into-new-database", "h_audit_copy")
    assert code == 3, out
    started, ok, started_again, refused = _audit_records(stack)[before + 2:]
    assert [r["result"] for r in (started, started_again)] == ["started", "started"]
    assert (ok["operation"], ok["result"], ok["backup_id"], ok["actor"], ok["error"]) == (
        "restore", "ok", dump, "ops-alice", None)
    assert (refused["operation"], refused["result"], refused["backup_id"], refused["actor"]) == (
        "restore", "refused", dump, BACKUP_USER)
    assert "not empty" in refused["error"]
    # The file belongs to the non-root writer, readable by the log collector.
    code, out = _exec(backup, "sh", "-c", 'stat -c "%U %a" "$AUDIT_LOG"')
    assert (code, out) == (0, f"{BACKUP_USER} 644")


def test_fail_closed_backup_in_the_container_is_refused_when_the_trail_is_full(stack: CiStack) -> None:
    """Issue 20: the rendered container runs with AUDIT_FAIL_CLOSED=1; a trail that cannot take the
    intent (/dev/full: ENOSPC on every write) refuses the backup before it dumps (exit 74)."""
    backup = _container(stack, "backup")
    code, env = _exec(backup, "sh", "-c", 'printf %s "$AUDIT_FAIL_CLOSED"')
    assert (code, env) == (0, "1")
    code, before = _exec(backup, "sh", "-c", 'ls "$BACKUP_DIR"')
    code, out = _exec(backup, "sh", "-c", 'AUDIT_LOG=/dev/full exec backup once')
    assert code == 74, out
    assert any("ERROR: audit: backup refused before it acted" in line for line in out.splitlines()), out
    assert _exec(backup, "sh", "-c", 'ls "$BACKUP_DIR"')[1] == before
