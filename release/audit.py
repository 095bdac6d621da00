"""The audit trail of operations: one JSON line per operation, append-only.

Every writer builds its record here (the backup scripts use `programs/backup/lib.sh`'s
`audit_record`, which writes the same fields in the same order):

    {"time": "2025-01-01T12:00:00.123Z", "actor": "alice", "stack": "prod",
     "operation": "switch", "from": "blue", "to": "green", "backup_id": null,
     "result": "ok", "duration_ms": 812.4, "error": null, "reason": null, "checks": null}

Intent first: an operation that acts (gate, switch, emergency switch,
backup, restore) appends a `started` record before it does anything (`Auditor.begin`), then
its outcome (`ok`, `refused`, `failed`). Under `security.audit.failClosed` (the default) an
intent that cannot be appended refuses the operation with `AuditUnavailable` before it acts,
and an outcome that cannot be appended raises `AuditUnavailable` after it (the operation is
not undone, but it never ends silently). Without it, a failed append is a warning and the
operation goes on. `reason` and `checks` are set by the emergency CLI (`--reason`; what it
verified: none, confirm, post-promotion); records from before them have neither key (`parse`
fills in null).

Where the lines go: the named volume `<prefix>-audit-data`, file `audit.jsonl`. The gate and the
routing switch run in the Pulumi engine's dynamic-provider process on the operator's machine,
not in a container, so they append through the Docker Engine API: a one-shot container of the
backup image (the image's `postgres` user, the same uid the backup service writes as; no
network, read-only rootfs, every capability dropped, no-new-privileges) mounts only the audit
volume and runs APPEND_SCRIPT (programs/audit/append.sh): the shell opens the file with
O_APPEND, takes an exclusive flock, chains the record (`prev`, the hash chain: GENESIS) and
writes the line with one write(2). A record is at most MAX_LINE bytes (< PIPE_BUF), so
concurrent writers never interleave inside a line. Tampering is detectable (`security.audit_log`
verifies the chain; the deploy record keeps the head, `auditHead`, in Pulumi state as the
anchor), and `seal` makes the file append-only in the kernel (opt-in; docs/security.md, "Who can
write"). No long-running container exists only to hold the volume, and nothing reachable from a
network can write to it (the log collector mounts it read-only).

Nothing secret goes into a record: the fields are names, colors, backup ids and numbers; the
error is the operation's own one-line message, with every secret the writer knows replaced
by `***` and `key=value` pairs whose key looks secret masked.
"""

from __future__ import annotations

import argparse
import fcntl
import getpass
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

import docker
import docker.errors

import programs
from contract import AUDIT_DIR as AUDIT_DIR  # where the trail lives: part of this module's face
from contract import AUDIT_FILE as AUDIT_FILE
from contract import AUDIT_OWNERSHIP_DONOR as OWNERSHIP_DONOR  # the one-shot writer mounts it too
from contract import AUDIT_PATH as AUDIT_PATH
from contract import ROLE_LABEL
from release.audit_seal import seal

if TYPE_CHECKING:
    from settings import Settings

Operation = Literal["deploy", "gate", "switch", "rollback", "emergency-switch", "backup", "restore", "scale"]
#: `started`: the intent record, appended before the operation acts; the others are outcomes.
Result = Literal["started", "ok", "refused", "failed"]
#: What an emergency switch verified: nothing; the public listener serves the color; and the
#: post-promotion checks passed.
Checks = Literal["none", "confirm", "post-promotion"]
OPERATIONS: tuple[str, ...] = get_args(Operation)
RESULTS: tuple[str, ...] = get_args(Result)
CHECKS: tuple[str, ...] = get_args(Checks)
#: Every record has exactly these keys, in this order (tests and lib.sh hold to it).
FIELDS = ("time", "actor", "stack", "operation", "from", "to", "backup_id", "result", "duration_ms", "error",
          "reason", "checks")
#: The keys of records written before `reason` and `checks` existed (still read, never written).
LEGACY_FIELDS = FIELDS[:10]

WRITER_USER = "postgres"
#: One record is one write(2) of at most this many bytes (PIPE_BUF is 4096 on Linux).
MAX_LINE = 4000
#: The hash chain: every line a writer appends ends with
#: `"prev":"<sha256 hex of the previous line>"` (the line's bytes without its newline), computed
#: by the writer under an exclusive flock(2) on the file at append time; the first line of a
#: trail chains onto GENESIS. `security.audit_log` verifies it. The key is not part of FIELDS:
#: `parse` checks and drops it.
PREV_KEY = "prev"
GENESIS = "0" * 64
#: Room for `,"prev":"<64 hex>"` inside MAX_LINE.
CHAIN_SUFFIX_LEN = len(',"prev":""') + 64
MAX_ERROR = 1000
MAX_REASON = 500
ACTOR_ENV = "PAPER_TRADING_ACTOR"
#: Label on the one-shot writer containers (tests and cleanup find them by it).
WRITER_ROLE = "audit-writer"

_SECRET_PAIR = re.compile(
    r"(?i)\b([\w.-]*(?:password|passwd|secret|token|api[_-]?key|passphrase|authorization)[\w.-]*)"
    r"(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)"
)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_BASIC_AUTH_URL = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s:@]+):([^/\s@]+)@")


def volume_name(name_prefix: str) -> str:
    """The audit volume's Docker name (stack/volumes.py creates it)."""
    return f"{name_prefix}-audit-data"


def default_actor(configured: str | None = None) -> str:
    """`PAPER_TRADING_ACTOR`, else the configured default, else the OS user."""
    for candidate in (os.environ.get(ACTOR_ENV), configured):
        if candidate and candidate.strip():
            return candidate.strip()
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """One line of at most MAX_ERROR characters; known secrets and secret-looking pairs masked."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    text = _BASIC_AUTH_URL.sub(lambda m: f"{m.group(1)}{m.group(2)}:***@", text)
    line = " ".join(text.split())
    return line if len(line) <= MAX_ERROR else line[: MAX_ERROR - 1] + "…"


def utc_now() -> str:
    """RFC 3339, UTC, milliseconds, `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class AuditRecord:
    """One operation. `from_`/`to` are colors (or none); `backup_id` names a backup file."""

    actor: str
    stack: str
    operation: Operation
    result: Result
    duration_ms: float
    from_: str | None = None
    to: str | None = None
    backup_id: str | None = None
    error: str | None = None
    #: Why the operator did it (the emergency CLI's `--reason`), one line.
    reason: str | None = None
    #: What an emergency switch verified before it reported success (None: not an emergency switch).
    checks: Checks | None = None
    time: str = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(f"audit: unknown operation {self.operation!r} (one of {', '.join(OPERATIONS)})")
        if self.result not in RESULTS:
            raise ValueError(f"audit: unknown result {self.result!r} (one of {', '.join(RESULTS)})")
        if self.checks is not None and self.checks not in CHECKS:
            raise ValueError(f"audit: unknown checks {self.checks!r} (one of {', '.join(CHECKS)})")
        if self.reason is not None and (not self.reason.strip() or len(self.reason) > MAX_REASON):
            raise ValueError(f"audit: a reason is one non-empty line of at most {MAX_REASON} characters")
        if not self.actor or not self.stack:
            raise ValueError("audit: a record needs an actor and a stack")

    def as_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["from"] = raw.pop("from_")
        raw["duration_ms"] = round(float(raw["duration_ms"]), 1)
        return {key: raw[key] for key in FIELDS}

    def line(self) -> str:
        """The JSON line (no newline), at most MAX_LINE bytes."""
        text = json.dumps(self.as_dict(), separators=(",", ":"), ensure_ascii=True)
        if len(text.encode()) > MAX_LINE - CHAIN_SUFFIX_LEN:  # only the error can be long; it is cut above
            raise ValueError(f"audit: record longer than {MAX_LINE} bytes")
        return text


def line_hash(line: str | bytes) -> str:
    """sha256 hex of one line's bytes, without its newline (what the next line's `prev` holds)."""
    data = line.encode("utf-8", "surrogateescape") if isinstance(line, str) else line
    return hashlib.sha256(data.rstrip(b"\n")).hexdigest()


def chained(line: str, prev: str) -> str:
    """`line` (a record's JSON object) with `"prev":"<prev>"` as its last key."""
    if not line.endswith("}") or not _HEX64.fullmatch(prev):
        raise ValueError("audit: cannot chain this line (not a JSON object, or prev is not a sha256)")
    return f'{line[:-1]},"{PREV_KEY}":"{prev}"}}'


def parse(line: str) -> dict[str, Any]:
    """A record back from its line (a legacy one gets null `reason`/`checks`); anything else fails.

    A chained line's `prev` (a sha256 hex, the last key) is checked and dropped: the result
    always has FIELDS. `security.audit_log` verifies the chain itself.
    """
    record = json.loads(line)
    if isinstance(record, dict) and list(record)[-1:] == [PREV_KEY]:
        prev = record.pop(PREV_KEY)
        if not isinstance(prev, str) or not _HEX64.fullmatch(prev):
            raise ValueError(f"not an audit record (prev {prev!r} is not a sha256)")
    if isinstance(record, dict) and tuple(record) == LEGACY_FIELDS:
        return {**record, "reason": None, "checks": None}
    if not isinstance(record, dict) or tuple(record) != FIELDS:
        keys = list(record) if isinstance(record, dict) else record
        raise ValueError(f"not an audit record (keys {keys!r})")
    return record


@dataclass(frozen=True)
class ChainHead:
    """The line a writer just appended: its 1-based number in the file and its sha256 (the anchor)."""

    line: int
    sha256: str

    def __str__(self) -> str:
        return f"{self.line}:{self.sha256}"


class Sink(Protocol):
    def append(self, line: str) -> ChainHead | None:
        """Chain and append one record line; the head it wrote, when the writer says."""
        ...

    def describe(self) -> str:
        """Where the records go, for error messages (`volume X`, `file Y`)."""
        ...


class AuditUnavailable(RuntimeError):
    """A record could not be appended while `failClosed` is on.

    `started` (the intent): the operation was refused and did nothing. Any other `result`:
    the operation ran (ok/failed) or was refused, and only its record is missing.
    """

    def __init__(self, operation: str, result: str, where: str, cause: str, error: str | None = None) -> None:
        self.operation, self.result, self.where, self.cause = operation, result, where, cause
        self.error = error
        self.acted = result in ("ok", "failed")
        if result == "started":
            message = (f"audit: {operation} refused before it acted: its intent record cannot be appended to "
                       f"{where} ({cause}); nothing was done (security.audit.failClosed)")
        else:
            outcome = f"ended {result}" + (f" ({error})" if error else "")
            after = ("it was not undone: add its record by hand (docs/security.md, \"Audit trail\")"
                     if self.acted else "nothing was changed")
            message = (f"audit: the {operation} {outcome}, but its record cannot be appended to {where} "
                       f"({cause}); {after}")
        super().__init__(message)


def _last_line(fd: int) -> bytes | None:
    """The file's last line (without its newline), None when it is empty; reads from the end."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    chunk, end = 4096, size
    tail = b""
    while end > 0:
        start = max(0, end - chunk)
        tail = os.pread(fd, end - start, start) + tail
        end = start
        body = tail[:-1] if tail.endswith(b"\n") else tail
        if b"\n" in body or end == 0:
            return body.rsplit(b"\n", 1)[-1]
    return tail  # pragma: no cover - the loop returns at end == 0


@dataclass(frozen=True)
class FileSink:
    """Appends to a local file: flock, chain, O_APPEND, one write(2) per record (tests, host paths)."""

    path: str

    def describe(self) -> str:
        return f"file {self.path}"

    def append(self, line: str) -> ChainHead:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by close
            last = _last_line(fd)
            text = chained(line, GENESIS if last is None else line_hash(last))
            data = (text + "\n").encode()
            if os.write(fd, data) != len(data):
                raise OSError(f"short write to {self.path}")
            os.lseek(fd, 0, os.SEEK_SET)
            with open(fd, "rb", closefd=False) as handle:
                count = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 16), b""))
            return ChainHead(count, line_hash(text))
        finally:
            os.close(fd)


#: The one-shot writer's script (programs/audit/append.sh; lib.sh `audit_append` is the same in
#: the backup container): flock, chain onto the last line (GENESIS for an empty file), append
#: in one write, print `<line number> <sha256 of the new line>` (the head); anything it cannot
#: do exits non-zero (fail closed). Its parameters: `append_env`.
APPEND_SCRIPT = programs.text("audit/append.sh")
#: Where the writers append: the audit volume's file.


def append_env(line: str, path: str = AUDIT_PATH) -> dict[str, str]:
    """The environment APPEND_SCRIPT reads: the file (`path`: tests use a local one), GENESIS, the record."""
    return {"AUDIT_LOG": path, "AUDIT_GENESIS": GENESIS, "AUDIT_RECORD": line}


@dataclass(frozen=True)
class VolumeSink:
    """Appends to `audit.jsonl` in a Docker volume through a one-shot, hardened container; through
    `client`, else the engine at `endpoint` (Swarm: the data node's), else the environment's."""

    volume: str
    image: str
    user: str = WRITER_USER
    client: Any = None
    endpoint: str | None = None

    def describe(self) -> str:
        where = f" on {self.endpoint}" if self.endpoint else ""
        return f"volume {self.volume}{where} (writer image {self.image})"

    def append(self, line: str) -> ChainHead | None:
        client = self.client or (docker.DockerClient(base_url=self.endpoint, timeout=30) if self.endpoint
                                 else docker.from_env(timeout=30))
        try:
            out = client.containers.run(
                self.image, ["sh", "-c", APPEND_SCRIPT], entrypoint=[], user=self.user,
                environment=append_env(line),
                # Also at the donor directory: a new volume gets the writer's owner (copy-up).
                volumes=[f"{self.volume}:{AUDIT_DIR}:rw", f"{self.volume}:{OWNERSHIP_DONOR}:rw"],
                network_mode="none", read_only=True, cap_drop=["ALL"],
                security_opt=["no-new-privileges"], labels={ROLE_LABEL: WRITER_ROLE},
                mem_limit="32m", remove=True, stdout=True, stderr=False,
            )
        except docker.errors.ContainerError as exc:  # the shell's own words: full disk, read-only, ...
            raw = exc.stderr
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw or "")
            said = " ".join(text.split())
            raise OSError(f"the writer exited {exc.exit_status}: {said or 'no message'}") from None
        finally:
            if self.client is None:
                client.close()
        return parse_head(out.decode(errors="replace") if isinstance(out, bytes) else str(out or ""))


def parse_head(output: str) -> ChainHead | None:
    """The writer's `<line number> <sha256>` (its last output line), None when it said nothing usable."""
    words = output.strip().rsplit("\n", 1)[-1].split()
    if len(words) == 2 and words[0].isdigit() and _HEX64.fullmatch(words[1]):
        return ChainHead(int(words[0]), words[1])
    return None


@dataclass(frozen=True)
class AuditTarget:
    """What a writer needs, as plain data (dynamic-provider props, CLI options)."""

    stack: str
    volume: str
    image: str
    user: str = WRITER_USER
    actor: str | None = None
    enabled: bool = True
    #: `security.audit.failClosed`: refuse an operation whose record cannot be appended.
    fail_closed: bool = True
    #: The Docker Engine that holds the volume (None: the environment's; on Swarm the data node's).
    endpoint: str | None = None

    def props(self) -> dict[str, Any]:
        return {"stack": self.stack, "volume": self.volume, "image": self.image, "user": self.user,
                "actor": self.actor, "enabled": self.enabled, "failClosed": self.fail_closed,
                "endpoint": self.endpoint}

    @staticmethod
    def from_props(props: Mapping[str, Any] | None) -> AuditTarget | None:
        """The target back from props; `failClosed` missing (state written before it) means on."""
        if not props or not props.get("volume") or not props.get("image"):
            return None
        fail_closed = props.get("failClosed", True)
        if not isinstance(fail_closed, bool):
            raise ValueError(f"audit target: failClosed must be true or false, not {fail_closed!r}")
        return AuditTarget(
            stack=str(props.get("stack") or "unknown"), volume=str(props["volume"]),
            image=str(props["image"]),
            user=str(props.get("user") or WRITER_USER), actor=props.get("actor") or None,
            enabled=bool(props.get("enabled", True)), fail_closed=fail_closed,
            endpoint=str(props["endpoint"]) if props.get("endpoint") else None,
        )


class Auditor:
    """Builds and appends records for one stack and actor.

    `fail_closed` (the default): a record that cannot be appended raises `AuditUnavailable`;
    off, it is reported to `warn` (else stderr) and the operation goes on. `reason` and
    `checks` go into every record this auditor writes (the emergency CLI's one operation).
    """

    def __init__(self, stack: str, sink: Sink, actor: str | None = None,
                 secrets: Iterable[str] = (), warn: Any = None, *, fail_closed: bool = True,
                 reason: str | None = None, checks: Checks | None = None) -> None:
        self.stack, self.sink = stack, sink
        self.actor = actor or default_actor()
        self.secrets = tuple(s for s in secrets if s)
        self.warn = warn
        self.fail_closed = fail_closed
        self.reason = scrub(reason, self.secrets)[:MAX_REASON] if reason else None
        self.checks = checks
        #: The chain head after this auditor's last successful append (the anchor to keep).
        self.head: ChainHead | None = None

    @staticmethod
    def for_target(target: AuditTarget | None, actor: str | None = None, client: Any = None,
                   secrets: Iterable[str] = (), warn: Any = None, *, reason: str | None = None,
                   checks: Checks | None = None) -> Auditor | None:
        if target is None or not target.enabled:
            return None
        sink = VolumeSink(target.volume, target.image, target.user, client, target.endpoint)
        return Auditor(target.stack, sink, actor or default_actor(target.actor), secrets, warn,
                       fail_closed=target.fail_closed, reason=reason, checks=checks)

    def begin(self, operation: Operation, *, from_: str | None = None, to: str | None = None,
              backup_id: str | None = None) -> AuditRecord:
        """The intent record (`started`), before the operation acts.

        Fail closed: raises `AuditUnavailable` when it cannot be appended, so the caller stops
        before doing anything. Otherwise a failed append is a warning.
        """
        return self.record(operation, "started", 0.0, from_=from_, to=to, backup_id=backup_id)

    def record(self, operation: Operation, result: Result, duration_ms: float, *, from_: str | None = None,
               to: str | None = None, backup_id: str | None = None, error: str | None = None) -> AuditRecord:
        """Append one record. A failed append raises `AuditUnavailable` (fail closed), else warns."""
        rec = AuditRecord(
            actor=self.actor, stack=self.stack, operation=operation, result=result, duration_ms=duration_ms,
            from_=from_, to=to, backup_id=backup_id,
            error=scrub(error, self.secrets) if error else None, reason=self.reason, checks=self.checks,
        )
        try:
            self.head = self.sink.append(rec.line()) or self.head
        except Exception as exc:  # noqa: BLE001 - whatever broke the append, say so (or refuse)
            why = f"{type(exc).__name__}: {scrub(str(exc), self.secrets)}"
            if self.fail_closed:
                raise AuditUnavailable(operation, result, self.sink.describe(), why, rec.error) from exc
            message = f"audit: could not append the {operation} record to {self.sink.describe()} ({why})"
            if self.warn is not None:
                self.warn(message)
            else:

                print(message, file=sys.stderr)
        return rec


def audit_target(settings: Settings, stack: str) -> dict[str, Any] | None:
    """Where the gate, the routing switch and the deploy record append their records (None: off);
    on Swarm a local volume on the first `data` node (never moved), written through its engine."""
    audit = settings.security.audit
    if not audit.enabled:
        return None
    endpoint = None
    if settings.target == "swarm" and settings.swarm is not None:
        endpoint = settings.swarm.labelled("data")[0].endpoint
    return AuditTarget(
        stack=stack, volume=volume_name(settings.name_prefix), image=settings.images.postgres,
        user=WRITER_USER, actor=audit.actor, fail_closed=audit.fail_closed, endpoint=endpoint,
    ).props()


def main(argv: list[str] | None = None) -> int:
    """`python -m release.audit seal|unseal --volume V --image I` (docs/security.md)."""

    parser = argparse.ArgumentParser(prog="python -m release.audit")
    parser.add_argument("action", choices=["seal", "unseal"])
    parser.add_argument("--volume", required=True, help="the audit volume (<prefix>-audit-data)")
    parser.add_argument("--image", required=True, help="the backup image (has chattr/lsattr)")
    args = parser.parse_args(argv)

    try:
        print(seal(args.volume, args.image, on=args.action == "seal"))
    except OSError as exc:
        print(f"audit: {args.action} failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
