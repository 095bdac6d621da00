"""The `deploy` audit record (issue 14, part 3): one record per changed deployment, on real Docker.

The provider is driven the way the engine drives it (create, diff, update) against a real audit
volume written by the real one-shot writer; the render test checks the program registers it last,
after every other component, with the audit target the gate and switch use.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from release import audit
from release.record import DEPLOY_RECORD_KIND, DeployRecordProvider, fingerprint, program_sources
from tests.support import require_docker

ROOT = Path(__file__).resolve().parents[2]
WRITER_IMAGE = "paper-trading-ci/postgres:15"


@pytest.fixture()
def target() -> Iterator[dict[str, Any]]:
    require_docker()
    import docker

    client = docker.from_env(timeout=60)
    try:
        client.images.get(WRITER_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{WRITER_IMAGE} missing: run scripts/build-test-images --ci")
    name = f"ptd-deploy-audit-{uuid.uuid4().hex[:8]}"
    volume = client.volumes.create(name, labels={"paper-trading.test": "deploy-record"})
    try:
        yield {"client": client, "volume": name,
               "props": audit.AuditTarget("deploy-test", name, WRITER_IMAGE, actor="ci-robot").props()}
    finally:
        with suppress(Exception):
            volume.remove(force=True)
        client.close()


def _records(t: dict[str, Any]) -> list[dict[str, Any]]:
    out = t["client"].containers.run(
        WRITER_IMAGE, ["sh", "-c", f"cat {audit.AUDIT_DIR}/{audit.AUDIT_FILE} 2>/dev/null || true"],
        entrypoint=[], remove=True, network_mode="none",
        volumes=[f"{t['volume']}:{audit.AUDIT_DIR}:ro"],
    ).decode()
    return [audit.parse(line) for line in out.splitlines()]


def _props(t: dict[str, Any], fp: str, live: str) -> dict[str, Any]:
    return {"kind": DEPLOY_RECORD_KIND, "stack": "deploy-test", "fingerprint": fp, "liveColor": live,
            "startedAt": time.time() - 2.0, "audit": t["props"], "recordedAt": None}


def test_each_changed_deployment_leaves_one_deploy_record(target: dict[str, Any]) -> None:
    provider = DeployRecordProvider()
    first = _props(target, "a" * 64, "blue")
    created = provider.create(first)
    outs = created.outs
    assert outs is not None
    [rec] = _records(target)
    assert tuple(rec) == audit.FIELDS
    assert (rec["operation"], rec["result"], rec["to"], rec["from"]) == ("deploy", "ok", "blue", None)
    assert (rec["actor"], rec["stack"], rec["error"], rec["backup_id"]) == \
        ("ci-robot", "deploy-test", None, None)
    assert rec["duration_ms"] >= 2000  # from the program's start to the end of the deployment
    assert outs["recordedAt"] == rec["time"]

    # The same program, config and live color: no change, so no second record.
    same = {**first, "startedAt": time.time()}
    assert provider.diff("id", outs, same).changes is False

    # A release (new fingerprint, live color moved): exactly one more record, from blue to green.
    second = _props(target, "b" * 64, "green")
    assert provider.diff("id", outs, second).changes is True
    provider.update("id", outs, second)
    records = _records(target)
    assert len(records) == 2
    assert (records[1]["operation"], records[1]["from"], records[1]["to"]) == ("deploy", "blue", "green")


def test_the_fingerprint_follows_the_program_and_the_settings(tmp_path: Path) -> None:
    (tmp_path / "stack").mkdir()
    main = tmp_path / "__main__.py"
    main.write_text("print('v1')\n")
    (tmp_path / "stack" / "x.py").write_text("X = 1\n")
    base = fingerprint("{}", program_sources(tmp_path))
    assert fingerprint("{}", program_sources(tmp_path)) == base
    assert fingerprint('{"a": 1}', program_sources(tmp_path)) != base
    (tmp_path / "stack" / "x.py").write_text("X = 2\n")
    assert fingerprint("{}", program_sources(tmp_path)) != base
    (tmp_path / "settings").mkdir()
    (tmp_path / "settings" / "y.py").write_text("Y = 1\n")
    changed = fingerprint("{}", program_sources(tmp_path))
    (tmp_path / "settings" / "y.py").write_text("Y = 2\n")
    assert fingerprint("{}", program_sources(tmp_path)) != changed


PROGRAMS = ("routing/swap.sh", "backup/backup", "ids/decide.py", "handoff/consumers.erl")


@pytest.mark.parametrize("program", PROGRAMS)
def test_the_fingerprint_follows_every_program_that_runs_in_a_container(tmp_path: Path, program: str) -> None:
    """Issue 23: the in-container programs live in programs/, whatever their kind: each is fingerprinted."""
    (tmp_path / "stack").mkdir()
    (tmp_path / "__main__.py").write_text("print('v1')\n")
    for name in PROGRAMS:
        (tmp_path / "programs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "programs" / name).write_text(f"# {name}\n")
    base = fingerprint("{}", program_sources(tmp_path))
    # Bytecode caches are not sources: they differ by interpreter and never reach a container.
    (tmp_path / "programs" / "ids" / "__pycache__").mkdir()
    (tmp_path / "programs" / "ids" / "__pycache__" / "decide.cpython-311.pyc").write_bytes(b"\0")
    assert fingerprint("{}", program_sources(tmp_path)) == base
    with (tmp_path / "programs" / program).open("a") as handle:
        handle.write("# a change to what runs in the container\n")
    assert fingerprint("{}", program_sources(tmp_path)) != base


def test_every_file_under_programs_is_fingerprinted() -> None:
    """Moving a program into programs/ fingerprints it; a program kept elsewhere is not a program file."""
    import subprocess

    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "programs"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    tracked = {ROOT / name for name in listed if name}
    assert {ROOT / "programs" / "routing" / "swap.sh", ROOT / "programs" / "backup" / "lib.sh"} <= tracked
    assert tracked <= set(program_sources(ROOT))


def test_every_module_the_program_is_built_from_is_fingerprinted() -> None:
    """The program's Python: __main__, contract, stack, release, settings and the config builders."""
    modules = {ROOT / "__main__.py"} | {
        path for folder in ("contract", "stack", "release", "settings", "render")
        for path in (ROOT / folder).rglob("*.py") if "__pycache__" not in path.parts}
    assert ROOT / "render" / "nginx" / "conf.py" in modules
    assert modules <= set(program_sources(ROOT))


def test_the_program_registers_the_deploy_record_after_everything() -> None:
    from tests.support import rendered

    graph = rendered("prod")
    records = [r for r in graph.resources if r.inputs.get("kind") == DEPLOY_RECORD_KIND]
    assert len(records) == 1
    rec = records[0]
    target = rec.inputs["audit"]
    assert target["volume"] == audit.volume_name("paper-trading") and target["enabled"] is True
    # Every other resource is a dependency: the engine reaches the record only at the end.
    custom = {r.urn for r in graph.resources if r.custom and r.urn != rec.urn}
    assert custom - set(rec.options["dependsOn"]) == set()
