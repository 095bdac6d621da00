"""The audit trail's hash chain (issue 21, item 6), with the real writers and the real check.

Every writer chains its line onto the last one under an exclusive flock: the Python FileSink,
the one-shot writer's script (programs/audit/append.sh, run here by dash and busybox
on a local file: tests/docker/test_audit_chain_docker.py runs it in the real writer image on a real
volume) and programs/backup/lib.sh's `audit_record` (dash and busybox, as
tests/programs/test_backup_restore.py runs the scripts). The trail is then tampered with the way the
backup container's uid could (edit, delete, insert, reorder, truncate, rewrite the whole
chain) and `security.audit_log` must fail through the real CLI, naming the first broken line
in its structured details. An append that cannot compute the chain fails closed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from release.audit import (
    APPEND_SCRIPT,
    GENESIS,
    Auditor,
    AuditRecord,
    AuditUnavailable,
    ChainHead,
    FileSink,
    append_env,
    line_hash,
    parse,
    parse_head,
)
from tests.support import require_tool
from tests.support.backup_lab import busybox_path

pytestmark = pytest.mark.tools
ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "programs" / "backup" / "lib.sh"


def _shell(kind: str, tmp: Path) -> tuple[list[str], str]:
    """(shell argv, PATH): Debian's dash and coreutils, or busybox ash with only its applets."""
    if kind == "dash":
        return [require_tool("dash")], "/usr/bin:/bin"
    return busybox_path(tmp)


class ScriptSink:
    """The one-shot writer's own script, run by a local shell on a local file (same bytes as in
    the container; only the file's path differs)."""

    def __init__(self, path: Path, shell: list[str], path_env: str) -> None:
        self.path, self.shell, self.path_env = path, shell, path_env

    def describe(self) -> str:
        return f"file {self.path} (APPEND_SCRIPT)"

    def append(self, line: str) -> ChainHead | None:
        done = subprocess.run([*self.shell, "-c", APPEND_SCRIPT],
                              env={"PATH": self.path_env, **append_env(line, str(self.path))},
                              capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise OSError(f"the writer exited {done.returncode}: {done.stderr.strip()}")
        return parse_head(done.stdout)


def lib_sh(shell: list[str], path_env: str, log: Path, body: str,
           **env: str) -> subprocess.CompletedProcess[str]:
    """Source the real lib.sh and run `body` (the backup service's environment, locally)."""
    return subprocess.run(
        [*shell, "-c", f". {LIB}; {body}"],
        env={"PATH": path_env, "AUDIT_LOG": str(log), "AUDIT_STACK": "prod", "PAPER_TRADING_ACTOR": "backup",
             **env},
        capture_output=True, text=True, timeout=60,
    )


def _lines(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1]


def _prevs(lines: list[str]) -> list[str]:
    return [json.loads(line)["prev"] for line in lines]


def _cli(tmp: Path, log: Path, color: str = "green", anchor: str | None = None) -> dict[str, Any]:
    """The real validation CLI on the file: the `security.audit_log` row of its JSON report."""
    report = tmp / "report.json"
    extra = ["--audit-anchor", anchor] if anchor else []
    subprocess.run(
        [sys.executable, "-m", "validation", "--base-url", "http://127.0.0.1:9", "--color", color,
         "--timeout", "5", "--audit-log-file", str(log), "--report", str(report), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    checks = {c["name"]: c for c in json.loads(report.read_text())["checks"]}
    found: dict[str, Any] = checks["security.audit_log"]
    return found


# ------------------------------------------------------------------ every writer, one chain


@pytest.mark.parametrize("kind", ["dash", "busybox"])
def test_every_writer_extends_one_chain(tmp_path: Path, kind: str) -> None:
    shell, path_env = _shell(kind, tmp_path)
    log = tmp_path / "audit.jsonl"
    gate = Auditor("prod", FileSink(str(log)), actor="ci")
    gate.begin("gate", to="green")
    gate.record("gate", "ok", 5, to="green")
    assert gate.head == ChainHead(2, line_hash(_lines(log)[1]))
    switch = Auditor("prod", ScriptSink(log, shell, path_env), actor="ci")
    switch.begin("switch", to="green")
    switch.record("switch", "ok", 7, from_="blue", to="green")
    assert switch.head == ChainHead(4, line_hash(_lines(log)[3]))
    backup = lib_sh(shell, path_env, log, 'audit_begin backup; AUDIT_BACKUP_ID=postgres-x.dump; exit 0')
    assert backup.returncode == 0, backup.stderr

    lines = _lines(log)
    assert len(lines) == 6
    assert _prevs(lines) == [GENESIS, *(line_hash(line) for line in lines[:-1])]
    assert [(parse(line)["operation"], parse(line)["result"]) for line in lines] == [
        ("gate", "started"), ("gate", "ok"), ("switch", "started"), ("switch", "ok"),
        ("backup", "started"), ("backup", "ok")]
    check = _cli(tmp_path, log, anchor=str(switch.head))
    assert check["status"] == "passed", check
    assert check["details"]["chain"] == {
        "status": "ok", "legacy_lines": 0, "chained_lines": 6, "first_broken_line": None, "reason": None,
        "head": f"6:{line_hash(lines[5])}", "anchor": str(switch.head)}


def _python_writer(path: str, count: int) -> None:
    auditor = Auditor("prod", FileSink(path), actor="py")
    for _ in range(count):
        auditor.record("deploy", "ok", 1, error="x" * 900)


def test_concurrent_writers_never_fork_the_chain(tmp_path: Path) -> None:
    """4 Python writers and 4 lib.sh (dash) writers, 30 records each, at once: one unbroken chain."""
    log = tmp_path / "audit.jsonl"
    shell, path_env = _shell("dash", tmp_path)
    loop = 'i=0; while [ "$i" -lt 30 ]; do audit_record backup ok 1 "" "" || exit 1; i=$((i + 1)); done'
    shells = [subprocess.Popen([*shell, "-c", f". {LIB}; {loop}"],
                               env={"PATH": path_env, "AUDIT_LOG": str(log)},
                               stderr=subprocess.PIPE, text=True) for _ in range(4)]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_python_writer, args=(str(log), 30)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    for sh in shells:
        _, err = sh.communicate(timeout=120)
        assert sh.returncode == 0, err
    lines = _lines(log)
    assert len(lines) == 240
    check = _cli(tmp_path, log, color="blue")
    assert check["details"]["chain"]["status"] == "ok", check["details"]["chain"]
    assert check["details"]["chain"]["chained_lines"] == 240


# ------------------------------------------------------------------ tampering


def _trail(tmp: Path) -> tuple[Path, list[str]]:
    """gate ok green, switch ok green (intent + outcome each), then a backup by lib.sh: 6 lines."""
    log = tmp / "audit.jsonl"
    auditor = Auditor("prod", FileSink(str(log)), actor="ci")
    for operation in ("gate", "switch"):
        auditor.begin(operation, to="green")
        auditor.record(operation, "ok", 3, from_="blue", to="green")
    done = lib_sh([require_tool("dash")], "/usr/bin:/bin", log, "audit_begin backup; exit 0")
    assert done.returncode == 0, done.stderr
    lines = _lines(log)
    assert len(lines) == 6
    return log, lines


def _rechain(lines: list[str]) -> list[str]:
    """What a forger with the file's write access does: recompute every `prev` after an edit."""
    out: list[str] = []
    for line in lines:
        record = json.loads(line)
        record["prev"] = line_hash(out[-1]) if out else GENESIS
        out.append(json.dumps(record, separators=(",", ":")))
    return out


def _forged(prev: str | None) -> str:
    line = AuditRecord(actor="ci", stack="prod", operation="gate", result="ok", duration_ms=1,
                       to="green").line()
    return line if prev is None else f'{line[:-1]},"prev":"{prev}"}}'


TAMPERING: dict[str, tuple[Callable[[list[str]], list[str]], int, str]] = {
    # name: (what the forger does to the lines, first broken line, words of the reason)
    "edit a middle line": (lambda ls: [*ls[:2], ls[2].replace('"actor":"ci"', '"actor":"bob"'), *ls[3:]],
                           4, "prev does not match line 3"),
    "delete a middle line": (lambda ls: [*ls[:2], *ls[3:]], 3, "prev does not match line 2"),
    "delete the first line": (lambda ls: ls[1:], 1, "prev does not match the genesis value"),
    "insert an unchained line": (lambda ls: [*ls[:2], _forged(None), *ls[2:]], 3, "not a chained record"),
    "insert a line chained onto its predecessor": (
        lambda ls: [*ls[:2], _forged(line_hash(ls[1])), *ls[2:]], 4, "prev does not match line 3"),
    "swap two lines": (lambda ls: [*ls[:2], ls[3], ls[2], *ls[4:]], 3, "prev does not match line 2"),
    "append an unchained line": (lambda ls: [*ls, _forged(None)], 7, "not a chained record"),
}


@pytest.mark.parametrize("name", list(TAMPERING))
def test_tampering_breaks_the_chain(tmp_path: Path, name: str) -> None:
    log, lines = _trail(tmp_path)
    assert _cli(tmp_path, log)["status"] == "passed"
    tamper, broken_at, reason = TAMPERING[name]
    log.write_text("".join(line + "\n" for line in tamper(lines)))
    check = _cli(tmp_path, log)
    assert check["status"] == "failed" and check["blocking"] is True, check
    chain = check["details"]["chain"]
    assert (chain["status"], chain["first_broken_line"]) == ("broken", broken_at), chain
    assert reason in chain["reason"], chain
    assert f"the hash chain is broken at line {broken_at}" in check["message"]


def test_truncation_and_a_recomputed_chain_need_the_anchor(tmp_path: Path) -> None:
    """The limit, measured: dropping the newest lines or rewriting and re-chaining every line leaves
    a valid chain; only the anchor kept outside the host (the deploy record's auditHead) shows it."""
    log, lines = _trail(tmp_path)
    anchor = f"6:{line_hash(lines[5])}"
    assert _cli(tmp_path, log, anchor=anchor)["status"] == "passed"

    log.write_text("".join(line + "\n" for line in lines[:4]))  # the backup's two records removed
    assert _cli(tmp_path, log)["status"] == "passed"  # the chain alone cannot tell
    check = _cli(tmp_path, log, anchor=anchor)
    assert check["status"] == "failed", check
    chain = check["details"]["chain"]
    assert (chain["status"], chain["first_broken_line"]) == ("broken", 5)
    assert "truncated" in chain["reason"]

    edited = [lines[0], lines[1].replace('"duration_ms":3.0', '"duration_ms":9.0'), *lines[2:]]
    log.write_text("".join(line + "\n" for line in _rechain(edited)))
    assert _cli(tmp_path, log)["status"] == "passed"
    check = _cli(tmp_path, log, anchor=anchor)
    assert check["status"] == "failed", check
    assert check["details"]["chain"]["first_broken_line"] == 6
    assert "does not match the anchor" in check["details"]["chain"]["reason"]


def test_legacy_lines_before_the_chain_are_accepted_and_reported(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    legacy = [_forged(None),
              AuditRecord(actor="ci", stack="prod", operation="switch", result="ok", duration_ms=1,
                          to="green").line()]
    log.write_text("".join(line + "\n" for line in legacy))
    assert _cli(tmp_path, log)["details"]["chain"]["status"] == "unchained"
    Auditor("prod", FileSink(str(log)), actor="ci").record("deploy", "ok", 1, to="green")
    lines = _lines(log)
    assert json.loads(lines[2])["prev"] == line_hash(lines[1])  # chained onto the last legacy line
    check = _cli(tmp_path, log)
    assert check["status"] == "passed", check
    chain = check["details"]["chain"]
    assert (chain["status"], chain["legacy_lines"], chain["chained_lines"]) == ("ok", 2, 1)
    assert "2 legacy lines" in check["message"]
    # The last legacy line is covered by the first chained line's prev.
    log.write_text("".join(line + "\n" for line in [lines[0], lines[1].replace('"ci"', '"bob"'), lines[2]]))
    assert _cli(tmp_path, log)["details"]["chain"]["first_broken_line"] == 3


# ------------------------------------------------------------------ fail closed


def _without(tmp: Path, kind: str, tool: str) -> tuple[list[str], str]:
    """The userland with `tool` taken away (PATH of symlinks to everything else)."""
    shell, path_env = _shell(kind, tmp)
    bare = tmp / f"no-{tool}"
    bare.mkdir()
    for folder in path_env.split(":"):
        for entry in Path(folder).iterdir():
            if entry.name != tool and not (bare / entry.name).exists():
                (bare / entry.name).symlink_to(entry.resolve())
    return shell, str(bare)


@pytest.mark.parametrize("kind", ["dash", "busybox"])
@pytest.mark.parametrize("tool", ["flock", "sha256sum"])
def test_an_append_that_cannot_chain_fails_closed(tmp_path: Path, kind: str, tool: str) -> None:
    """lib.sh refuses the backup before it acts (exit 74); the writer script's sink raises
    AuditUnavailable for the intent; fail open only warns. The trail is not even created."""
    shell, path_env = _without(tmp_path, kind, tool)
    log = tmp_path / "audit.jsonl"
    done = lib_sh(shell, path_env, log, "audit_begin backup; echo ACTED")
    assert done.returncode == 74, done.stdout + done.stderr
    assert "ACTED" not in done.stdout
    assert f"no {tool}: cannot chain the record" in done.stderr
    assert "backup refused before it acted" in done.stderr

    auditor = Auditor("prod", ScriptSink(log, shell, path_env), actor="ci")
    with pytest.raises(AuditUnavailable) as caught:
        auditor.begin("switch", to="green")
    assert (caught.value.result, caught.value.acted) == ("started", False)
    assert f"no {tool}: cannot chain the record" in caught.value.cause
    assert not log.exists()

    warned: list[str] = []
    Auditor("prod", ScriptSink(log, shell, path_env), actor="ci", warn=warned.append,
            fail_closed=False).begin("switch", to="green")
    assert len(warned) == 1 and f"no {tool}" in warned[0]
    opened = lib_sh(shell, path_env, log, "audit_begin backup; echo ACTED", AUDIT_FAIL_CLOSED="0")
    assert opened.returncode == 0 and "ACTED" in opened.stdout


def test_the_lock_is_a_real_flock_shared_by_every_writer(tmp_path: Path) -> None:
    """While another process holds the file's flock, neither lib.sh nor the writer script appends."""
    log = tmp_path / "audit.jsonl"
    log.write_text("")
    flock = require_tool("flock")
    holder = subprocess.Popen([flock, "-x", str(log), "sleep", "4"])
    try:
        while subprocess.run([flock, "-n", str(log), "true"]).returncode == 0:  # until the holder has it
            assert holder.poll() is None
        shell, path_env = _shell("dash", tmp_path)
        rec = AuditRecord(actor="ci", stack="prod", operation="deploy", result="ok", duration_ms=1).line()
        writer = subprocess.Popen([*shell, "-c", APPEND_SCRIPT],
                                  env={"PATH": path_env, **append_env(rec, str(log))},
                                  stdout=subprocess.PIPE, text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            writer.wait(1.0)
        assert log.read_text() == ""  # waiting for the lock, nothing written
        out, _ = writer.communicate(timeout=30)
        assert parse_head(out) == ChainHead(1, line_hash(_lines(log)[0]))
    finally:
        holder.wait(30)


def test_a_loki_window_is_checked_by_links_not_by_position(tmp_path: Path) -> None:
    """Loki returns a time-sorted window (the oldest lines may be past its limit): the lines need
    not start at genesis nor come in file order, but a gap or a fork is a break."""
    from validation.checks_audit import audit_chain

    log, lines = _trail(tmp_path)
    window = [lines[2], lines[4], lines[3], lines[5]]  # the first two gone, two swapped by time
    assert audit_chain(window, in_file_order=False)["status"] == "ok"
    anchor = f"6:{line_hash(lines[5])}"
    assert audit_chain(window, anchor, in_file_order=False)["status"] == "ok"
    gap = audit_chain([lines[2], lines[3], lines[5]], in_file_order=False)
    assert (gap["status"], gap["first_broken_line"]) == ("broken", 3), gap
    fork = audit_chain([*window, _forged(line_hash(lines[4]))], in_file_order=False)
    assert (fork["status"], fork["first_broken_line"]) == ("broken", 5), fork
    cut = audit_chain(window[:3], anchor, in_file_order=False)
    assert (cut["status"], cut["reason"]) == ("broken", "the anchor's line is not among the lines"), cut
