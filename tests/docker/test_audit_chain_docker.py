"""The hash chain on the real Docker Engine (issue 21, item 6).

A real audit volume; records appended by the real one-shot writer (components/audit.VolumeSink:
the ci stack's postgres image as its `postgres` user) and by the real programs/backup/lib.sh inside
that image as the same user, the way the long-running backup container runs it; the deploy
record's provider keeps the chain head (`auditHead`) in its state. Then the backup container's
uid forges the trail in place (edit, truncate, rewrite with a recomputed chain) and the real
validation CLI must fail `security.audit_log`, naming the first broken line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from release import audit, audit_seal
from release.record import DEPLOY_RECORD_KIND, DeployRecordProvider
from stack.backup import BIN_DIR
from tests.support import require_docker

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]
WRITER_IMAGE = "paper-trading-ci/postgres:15"
TRAIL = f"{audit.AUDIT_DIR}/{audit.AUDIT_FILE}"


@pytest.fixture()
def volume() -> Iterator[tuple[Any, str]]:
    require_docker()
    import docker

    client = docker.from_env(timeout=60)
    try:
        client.images.get(WRITER_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{WRITER_IMAGE} missing: run scripts/build-test-images --ci")
    name = f"ptd-audit-chain-{uuid.uuid4().hex[:8]}"
    client.volumes.create(name, labels={"paper-trading.test": "audit-chain"})
    try:
        yield client, name
    finally:
        with suppress(Exception):
            client.volumes.get(name).remove(force=True)
        client.close()


def as_backup_uid(client: Any, name: str, script: str, **env: str) -> str:
    """Run `script` in the backup image as its `postgres` user (the backup service's uid) with the
    audit volume mounted read-write where the backup container mounts it, and lib.sh at BIN_DIR."""
    return str(client.containers.run(
        WRITER_IMAGE, ["sh", "-c", script], entrypoint=[], user=audit.WRITER_USER, remove=True,
        network_mode="none", environment=env,
        volumes=[f"{name}:{audit.AUDIT_DIR}:rw", f"{ROOT / 'programs' / 'backup'}:{BIN_DIR}:ro"],
    ).decode())


def read_trail(client: Any, name: str, tmp: Path) -> Path:
    """A copy of the volume's audit.jsonl, as the operator takes one for the check."""
    out = client.containers.run(WRITER_IMAGE, ["cat", TRAIL], entrypoint=[], remove=True, network_mode="none",
                                volumes=[f"{name}:{audit.AUDIT_DIR}:ro"])
    path = tmp / "copy.jsonl"
    path.write_bytes(out)
    return path


def check(tmp: Path, log: Path, anchor: str | None = None) -> dict[str, Any]:
    report = tmp / "report.json"
    extra = ["--audit-anchor", anchor] if anchor else []
    subprocess.run(
        [sys.executable, "-m", "validation", "--base-url", "http://127.0.0.1:9", "--color", "green",
         "--timeout", "5", "--audit-log-file", str(log), "--report", str(report), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    checks = {c["name"]: c for c in json.loads(report.read_text())["checks"]}
    found: dict[str, Any] = checks["security.audit_log"]
    return found


def build_trail(client: Any, name: str) -> str:
    """gate and switch by the one-shot writer, a backup by lib.sh in the image, then the deploy
    record through its provider; returns the provider's `auditHead` (kept in Pulumi state)."""
    target = audit.AuditTarget("prod", name, WRITER_IMAGE, actor="ci")
    auditor = audit.Auditor.for_target(target, client=client)
    assert auditor is not None
    auditor.begin("gate", to="green")
    auditor.record("gate", "ok", 5, to="green")
    assert auditor.head == audit.ChainHead(2, auditor.head.sha256 if auditor.head else "")
    auditor.begin("switch", to="green")
    auditor.record("switch", "ok", 9, from_="blue", to="green")
    as_backup_uid(client, name, f". {BIN_DIR}/lib.sh; audit_begin backup; AUDIT_BACKUP_ID=postgres-x.dump; "
                  "exit 0", AUDIT_LOG=TRAIL, AUDIT_STACK="prod")
    outs = DeployRecordProvider().create({
        "kind": DEPLOY_RECORD_KIND, "stack": "prod", "fingerprint": "f" * 64, "liveColor": "green",
        "startedAt": time.time() - 1, "audit": target.props(), "recordedAt": None, "auditHead": None,
    }).outs
    assert outs is not None
    head: str = outs["auditHead"]
    return head


def test_every_real_writer_extends_one_chain_and_the_deploy_record_keeps_its_head(
        volume: tuple[Any, str], tmp_path: Path) -> None:
    client, name = volume
    head = build_trail(client, name)
    copy = read_trail(client, name, tmp_path)
    lines = copy.read_text().split("\n")[:-1]
    assert [(audit.parse(line)["operation"], audit.parse(line)["result"]) for line in lines] == [
        ("gate", "started"), ("gate", "ok"), ("switch", "started"), ("switch", "ok"),
        ("backup", "started"), ("backup", "ok"), ("deploy", "ok")]
    assert [json.loads(line)["prev"] for line in lines] == [
        audit.GENESIS, *(audit.line_hash(line) for line in lines[:-1])]
    assert head == f"7:{audit.line_hash(lines[6])}"
    found = check(tmp_path, copy, anchor=head)
    assert found["status"] == "passed", found
    assert found["details"]["chain"]["status"] == "ok"
    assert found["details"]["chain"]["head"] == head


FORGERIES = {
    # what the backup container's uid runs on the trail, the first broken line, with the anchor?
    "edit the gate verdict in place": (
        f"sed -i 's/\"duration_ms\":5.0/\"duration_ms\":6.0/' {TRAIL}", 3, False),
    "delete the switch intent": (f"sed -i 3d {TRAIL}", 3, False),
    "truncate the newest records": (f"head -n 4 {TRAIL} > /tmp/t && cat /tmp/t > {TRAIL}", 5, True),
}


@pytest.mark.parametrize("name", list(FORGERIES))
def test_a_forgery_by_the_backup_uid_is_detected(volume: tuple[Any, str], tmp_path: Path, name: str) -> None:
    client, vol = volume
    head = build_trail(client, vol)
    script, broken_at, needs_anchor = FORGERIES[name]
    as_backup_uid(client, vol, script)  # the backup container's uid can write the file: it succeeds
    copy = read_trail(client, vol, tmp_path)
    found = check(tmp_path, copy, anchor=head)
    assert found["status"] == "failed", found
    chain = found["details"]["chain"]
    assert (chain["status"], chain["first_broken_line"]) == ("broken", broken_at), chain
    if needs_anchor:
        assert check(tmp_path, copy)["details"]["chain"]["status"] == "ok"  # the chain alone: the limit


def test_a_recomputed_chain_by_the_backup_uid_fails_against_the_deploy_record_anchor(
        volume: tuple[Any, str], tmp_path: Path) -> None:
    client, vol = volume
    head = build_trail(client, vol)
    lines = read_trail(client, vol, tmp_path).read_text().split("\n")[:-1]
    forged: list[str] = []
    for line in lines:  # the gate's verdict for green turned into a refusal, every prev recomputed
        record = json.loads(line.replace('"operation":"gate","from":null,"to":"green","backup_id":null,'
                                         '"result":"ok"', '"operation":"gate","from":null,"to":"green",'
                                         '"backup_id":null,"result":"refused"'))
        record["prev"] = audit.line_hash(forged[-1]) if forged else audit.GENESIS
        forged.append(json.dumps(record, separators=(",", ":")))
    assert forged[1] != lines[1]
    as_backup_uid(client, vol, f'printf "%s" "$FORGED" > {TRAIL}', FORGED="".join(f + "\n" for f in forged))
    copy = read_trail(client, vol, tmp_path)
    assert check(tmp_path, copy)["details"]["chain"]["status"] == "ok"  # a consistent chain...
    found = check(tmp_path, copy, anchor=head)
    assert found["status"] == "failed", found  # ...but not the one Pulumi state anchored
    assert found["details"]["chain"]["first_broken_line"] == 7
    assert "does not match the anchor" in found["details"]["chain"]["reason"]


# ------------------------------------------------------------------ kernel append-only (opt-in seal)


def test_sealed_the_backup_uid_can_only_append(volume: tuple[Any, str], tmp_path: Path) -> None:
    """`python -m release.audit seal`: chattr +a by a one-shot container with only
    CAP_LINUX_IMMUTABLE and CAP_FOWNER. Then the backup uid cannot truncate, rewrite, delete,
    rename or unseal the trail, while lib.sh and the one-shot writer still append to the chain."""
    import docker.errors

    client, name = volume
    head = build_trail(client, name)
    said = audit_seal.seal(name, WRITER_IMAGE, client=client)
    try:
        flags, path = said.split()
        assert "a" in flags and path == TRAIL, said
        for forgery in (f": > {TRAIL}", f"sed -i 3d {TRAIL}", f"printf x > {TRAIL}", f"rm -f {TRAIL}",
                        f"mv {TRAIL} {TRAIL}.old", f"chattr -a {TRAIL}"):
            with pytest.raises(docker.errors.ContainerError):
                as_backup_uid(client, name, forgery)
        as_backup_uid(client, name, f". {BIN_DIR}/lib.sh; audit_begin restore; exit 0",
                      AUDIT_LOG=TRAIL, AUDIT_STACK="prod")
        auditor = audit.Auditor.for_target(audit.AuditTarget("prod", name, WRITER_IMAGE, actor="ci"),
                                           client=client)
        assert auditor is not None
        auditor.record("deploy", "ok", 1, to="green")
        assert auditor.head is not None and auditor.head.line == 10
        found = check(tmp_path, read_trail(client, name, tmp_path), anchor=head)
        assert found["status"] == "passed", found
        assert (found["details"]["chain"]["chained_lines"], found["details"]["chain"]["head"]) == (
            10, str(auditor.head))
    finally:
        audit_seal.seal(name, WRITER_IMAGE, client=client, on=False)
