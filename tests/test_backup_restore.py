"""Backup and restore against a real Postgres (Debian packages), run as the container runs them.

The scripts are taken from the rendered container's uploads and run with the
rendered container's environment; only what must differ on this machine is
replaced (directories, the server address and the password file's path).
A throwaway cluster runs in a temp dir on a loopback port, as the `postgres`
user when the tests run as root.

Every refusal is asserted by its one machine-readable line (`restore: refused
check=... reason=... file=...|database=...`, docs/backup.md), so a fault test
names the check that refused the file and fails if another one did.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stack.backup import BIN_DIR
from tests.support import missing, require_tool
from tests.test_backup_render import backup_container, backup_graph, envs

pytestmark = pytest.mark.tools
PASSWORD = "s3cret-Pw:with\\odd'chars"
TIMEOUT = 120


@dataclass(frozen=True)
class Refusal:
    """The exit status and the parsed `restore: refused` line of a refused restore."""

    status: int
    check: str
    reason: str
    subject: str  # file=PATH or database=NAME


REFUSAL_PREFIX = "restore: refused "
REFUSAL_LINE = re.compile(r"restore: refused check=([a-z]+) reason=([a-z-]+) ((?:file|database)=.+)")


def refusal(result: subprocess.CompletedProcess[str]) -> Refusal:
    """The one refusal line, which must also be the last line on stderr."""
    lines = result.stderr.splitlines()
    found = [line for line in lines if line.startswith(REFUSAL_PREFIX)]
    assert len(found) == 1, f"expected one refusal line (status {result.returncode}):\n{result.stderr}"
    assert lines[-1] == found[0], f"the refusal line is not the last line on stderr:\n{result.stderr}"
    match = REFUSAL_LINE.fullmatch(found[0])
    assert match, f"malformed refusal line: {found[0]!r}"
    return Refusal(result.returncode, *match.groups())


def not_refused(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0 and REFUSAL_PREFIX not in result.stderr, result.stderr


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    preferred = [p for p in found if "/15/" in p]
    if not (preferred or found):
        missing("Postgres server binaries (apt-get install postgresql) not found")
    return Path((preferred or found)[-1]).parent


@dataclass
class Cluster:
    bin: Path
    root: Path
    port: int
    password_file: Path

    def psql(self, sql: str, db: str = "trading_bot") -> str:
        env = {**os.environ, "PGPASSWORD": PASSWORD, "PGCONNECT_TIMEOUT": "10"}
        out = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.port), "-U", "trading", "-d", db, "-c", sql],
            env=env, capture_output=True, text=True, timeout=TIMEOUT,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bin_dir = _pg_bin()
    require_tool("sha256sum")
    root = Path(tempfile.mkdtemp(prefix="pt-backup-pg-"))
    root.chmod(0o755)
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            missing("running as root but there is no `postgres` user to run the test cluster")
            raise
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    pwfile = root / "initpw"
    pwfile.write_text(PASSWORD + "\n")
    if as_user:
        shutil.chown(pwfile, "postgres", "postgres")

    def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(as_user + cmd, capture_output=True, text=True, timeout=TIMEOUT)

    init = run([str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", "trading", "--auth=scram-sha-256",
                f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C"])
    assert init.returncode == 0, init.stderr
    port = _free_port()
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    start = run([str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"), "-o", opts,
                 "-w", "-t", "60", "start"])
    assert start.returncode == 0, start.stderr + (root / "log").read_text()
    # The password file the scripts read, like the container's secret file.
    secret = Path(tempfile.mkdtemp(prefix="pt-backup-secret-")) / "postgres_password"
    secret.write_text(PASSWORD)
    secret.chmod(0o400)
    c = Cluster(bin=bin_dir, root=root, port=port, password_file=secret)
    try:
        c.psql("CREATE DATABASE trading_bot", db="postgres")
        yield c
    finally:
        run([str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "fast", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(secret.parent, ignore_errors=True)


SCHEMA = """
DROP SCHEMA IF EXISTS ledger CASCADE;
DROP VIEW IF EXISTS btc; DROP TABLE IF EXISTS trades, positions CASCADE;
CREATE TABLE trades (id bigserial PRIMARY KEY, symbol text NOT NULL, qty numeric(20,8), price numeric(20,8),
                     note text, raw bytea, at timestamptz NOT NULL DEFAULT '2026-01-01T00:00:00Z');
CREATE TABLE positions (symbol text PRIMARY KEY, qty numeric(20,8));
CREATE SCHEMA ledger;
CREATE TABLE ledger.entries (id int PRIMARY KEY, trade_id bigint REFERENCES trades(id), amount numeric);
INSERT INTO trades (symbol, qty, price, note, raw, at)
  SELECT CASE WHEN g % 3 = 0 THEN 'BTC-USDT' WHEN g % 3 = 1 THEN 'ETH-USDT' ELSE 'SOL-USDT' END,
         g / 7.0, 1000 + g * 0.25, 'paper ' || g || ' ünïcødé ✓', decode(md5(g::text), 'hex'),
         '2026-01-01T00:00:00Z'::timestamptz + g * interval '1 minute'
    FROM generate_series(1, 20000) g;
INSERT INTO positions SELECT symbol, sum(qty) FROM trades GROUP BY symbol;
INSERT INTO ledger.entries SELECT g, g, g * 1.5 FROM generate_series(1, 5000) g;
CREATE INDEX trades_symbol ON trades (symbol);
CREATE VIEW btc AS SELECT * FROM trades WHERE symbol = 'BTC-USDT';
"""
TABLES = ("public.trades", "public.positions", "ledger.entries")


def fingerprint(c: Cluster, db: str) -> dict[str, tuple[int, str]]:
    """Row count and an md5 over every row in key order, per table."""
    result = {}
    for table in TABLES:
        out = c.psql(f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                     f"FROM {table} t", db=db)
        count, digest = out.split("|")
        result[table] = (int(count), digest)
    return result


@dataclass
class Runner:
    """Runs the rendered scripts with the rendered environment, adapted to this machine."""

    cluster: Cluster
    work: Path
    env: dict[str, str]
    shell: list[str]

    @property
    def backups(self) -> Path:
        return Path(self.env["BACKUP_DIR"])

    @property
    def metrics(self) -> Path:
        return Path(self.env["BACKUP_METRICS_DIR"]) / "backup.prom"

    def run(self, script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.shell, str(self.work / "bin" / script), *args], env={**self.env, **env},
            capture_output=True, text=True, timeout=TIMEOUT,
        )

    def good(self, directory: Path | None = None) -> list[str]:
        d = directory or self.backups
        return sorted(p.name for p in d.glob("postgres-*.dump") if Path(f"{p}.sha256").exists())

    def metric(self, name: str) -> float:
        for line in self.metrics.read_text().splitlines():
            if line.split(" ")[0] == name:
                return float(line.split(" ")[1])
        raise KeyError(name)


def busybox_path(tmp: Path) -> tuple[list[str], str]:
    """An alpine-like userland: busybox ash and only busybox applets on the PATH."""
    busybox = require_tool("busybox")
    applets = tmp / "busybox"
    applets.mkdir()
    listed = subprocess.run([busybox, "--list"], capture_output=True, text=True, timeout=30).stdout.split()
    for applet in listed:
        (applets / applet).symlink_to(busybox)
    if "flock" not in listed:  # alpine's busybox has the applet (only -sxun: no -w); Debian's lacks it
        util_linux = require_tool("flock")
        (applets / "flock").write_text(
            f"#!{busybox} sh\nmode=-x; nb=\nwhile getopts sxun o; do case $o in s|x|u) mode=-$o ;; "
            f"n) nb=-n ;; *) echo 'usage: flock [-sxun] FD' >&2; exit 1 ;; esac; done\n"
            f'shift $((OPTIND - 1))\nexec {util_linux} $mode $nb "$@"\n')
        (applets / "flock").chmod(0o755)
    return [busybox, "sh"], str(applets)


def make_runner(cluster: Cluster, tmp: Path, userland: str = "debian", **config: Any) -> Runner:
    graph = backup_graph("prod", **({"backup": config} if config else {}))
    res = backup_container(graph)
    env = envs(res)
    name = res.inputs["name"]
    (tmp / "bin").mkdir()
    for file, content in graph.files().items():
        if file.startswith(f"{name}{BIN_DIR}/"):
            target = tmp / "bin" / file.rsplit("/", 1)[1]
            target.write_text(content)
            target.chmod(0o555)
    # Only machine-specific values differ from the container's environment.
    replace: dict[str, Path] = {
        "BACKUP_DIR": tmp / "backups", "BACKUP_METRICS_DIR": tmp / "metrics",
        "BACKUP_SECOND_DIR": tmp / "second", "REDIS_DATA_DIR": tmp / "redis",
    }
    for key, local in replace.items():
        if key in env:
            local.mkdir()
            env[key] = str(local)
    if env.get("AUDIT_LOG"):  # the audit volume: a local folder, same file name
        (tmp / "audit").mkdir()
        env["AUDIT_LOG"] = str(tmp / "audit" / Path(env["AUDIT_LOG"]).name)
    shell: list[str] = []
    system_path = "/usr/bin:/bin"
    if userland == "busybox":
        shell, system_path = busybox_path(tmp)
    env.update(
        PATH=f"{tmp / 'bin'}:{cluster.bin}:{system_path}",
        PGHOST="127.0.0.1", PGPORT=str(cluster.port), PGPASSWORD_FILE=str(cluster.password_file),
    )
    env.pop("RABBITMQ_API_URL", None)  # set per test where a server exists
    return Runner(cluster=cluster, work=tmp, env=env, shell=shell)


@pytest.fixture(params=["debian", "busybox"])
def runner(cluster: Cluster, tmp_path: Path, request: pytest.FixtureRequest) -> Runner:
    """Debian's dash and coreutils, and busybox as in the postgres:*-alpine image."""
    cluster.psql(SCHEMA)
    for db in cluster.psql("SELECT datname FROM pg_database WHERE datname LIKE 'inspect%' "
                           "OR datname LIKE 'restore_check%'", db="postgres").split():
        cluster.psql(f'DROP DATABASE "{db}"', db="postgres")
    return make_runner(cluster, tmp_path, str(request.param), redisSnapshot=False)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stamp(age: timedelta) -> str:
    return (datetime.now(UTC) - age).strftime("%Y%m%dT%H%M%SZ")


def _plant(runner: Runner, source: Path, age: timedelta, directory: Path | None = None) -> str:
    """An older good backup (a copy of a real one under an older name)."""
    d = directory or runner.backups
    name = f"postgres-{_stamp(age)}.dump"
    shutil.copyfile(source, d / name)
    (d / f"{name}.sha256").write_text(f"{_sha256(source)}  {name}\n")
    return name


# ---------------------------------------------------------------------------- round trip


def test_backup_then_restore_into_new_database_is_identical(runner: Runner) -> None:
    before = fingerprint(runner.cluster, "trading_bot")
    assert before["public.trades"][0] == 20000
    started = time.time()
    done = runner.run("backup", "once")
    assert done.returncode == 0, done.stderr
    [name] = runner.good()
    dump = runner.backups / name
    assert (runner.backups / f"{name}.sha256").read_text() == f"{_sha256(dump)}  {name}\n"
    assert dump.read_bytes()[:5] == b"PGDMP"  # custom format
    assert not list(runner.backups.glob(".tmp-*"))
    # Metrics: textfile format, values of this run.
    assert runner.metric("paper_trading_backup_last_size_bytes") == dump.stat().st_size
    last_success = runner.metric("paper_trading_backup_last_success_timestamp_seconds")
    assert started - 1 <= last_success <= time.time() + 1
    assert runner.metric("paper_trading_backup_failures_total") == 0
    assert runner.metric("paper_trading_backup_good_backups") == 1
    promtool = shutil.which("promtool")
    if promtool:
        check = subprocess.run([promtool, "check", "metrics"], input=runner.metrics.read_text(),
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
    # Later writes must not show up in the restored copy.
    runner.cluster.psql("INSERT INTO positions VALUES ('LATE-USDT', 1)")
    restored = runner.run("restore", "--into-new-database", "inspect_copy")
    not_refused(restored)
    assert fingerprint(runner.cluster, "inspect_copy") == before
    assert "public.trades 20000" in restored.stdout
    assert runner.cluster.psql("SELECT count(*) FROM btc", db="inspect_copy") == str(
        runner.cluster.psql("SELECT count(*) FROM trades WHERE symbol = 'BTC-USDT'"))


def test_restore_refuses_a_non_empty_database_without_force(runner: Runner) -> None:
    assert runner.run("backup", "once").returncode == 0
    at_backup = fingerprint(runner.cluster, "trading_bot")
    runner.cluster.psql("DELETE FROM ledger.entries WHERE id > 100; UPDATE positions SET qty = 0")
    changed = fingerprint(runner.cluster, "trading_bot")
    refused = runner.run("restore")
    # The backup itself is fine: the target check refused, not the checksum or the archive.
    assert refusal(refused) == Refusal(3, "target", "not-empty", "database=trading_bot")
    assert "--force" in refused.stderr
    assert fingerprint(runner.cluster, "trading_bot") == changed
    # An existing non-empty inspection database is refused too.
    not_refused(runner.run("restore", "--into-new-database", "inspect_x"))
    again = runner.run("restore", "--into-new-database", "inspect_x")
    assert refusal(again) == Refusal(3, "target", "not-empty", "database=inspect_x")
    forced = runner.run("restore", "--force")
    not_refused(forced)
    assert fingerprint(runner.cluster, "trading_bot") == at_backup


def test_restore_check_restores_and_drops_a_scratch_database(runner: Runner) -> None:
    assert runner.run("backup", "once").returncode == 0
    checked = runner.run("restore", "--check")
    assert checked.returncode == 0, checked.stderr
    assert "public.trades 20000" in checked.stderr
    assert runner.cluster.psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'restore_check%'",
                               db="postgres") == "0"
    checked_at = runner.metric("paper_trading_backup_restore_check_last_success_timestamp_seconds")
    assert checked_at > time.time() - 60


#: damage -> the (check, reason) that must refuse the file, and no other. The
#: checksum is verified first: damage it does not cover reaches the archive check.
DAMAGES = {
    "flip-byte": ("checksum", "mismatch"),
    "truncate": ("checksum", "mismatch"),
    # No checksum: nothing proves the file is the one the backup wrote.
    "no-checksum": ("checksum", "missing"),
    "empty-checksum": ("checksum", "missing"),
    "malformed-checksum": ("checksum", "malformed"),
    # The checksum recomputed over the damaged file: only the archive check can catch it.
    "truncate-and-rehash": ("archive", "data"),
    "flip-byte-and-rehash": ("archive", "data"),
    "header-only-and-rehash": ("archive", "toc"),
}


@pytest.fixture(scope="module")
def pristine_dump(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """One real backup (dash), damaged per test below."""
    cluster.psql(SCHEMA)
    maker = make_runner(cluster, tmp_path_factory.mktemp("pristine"), redisSnapshot=False)
    done = maker.run("backup", "once")
    assert done.returncode == 0, done.stderr
    [name] = maker.good()
    not_refused(maker.run("restore", "--verify", "--backup", name))
    return (maker.backups / name).read_bytes()


def _damage(dump: Path, damage: str) -> None:
    data = bytearray(dump.read_bytes())
    checksum = Path(f"{dump}.sha256")
    if damage.startswith("flip-byte"):
        data[len(data) // 2] ^= 0xFF
    elif damage.startswith("truncate"):
        data = data[: len(data) * 2 // 3]
    elif damage.startswith("header-only"):
        data = data[:64]  # the magic and the start of the header: no table of contents
    dump.write_bytes(bytes(data))
    if damage.endswith("-and-rehash"):
        checksum.write_text(f"{_sha256(dump)}  {dump.name}\n")
    elif damage == "no-checksum":
        checksum.unlink()
    elif damage == "empty-checksum":
        checksum.write_text("")
    elif damage == "malformed-checksum":
        checksum.write_text(f"{_sha256(dump)[:40]}  {dump.name}\n")  # a sha1-sized value


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_backup_is_refused_by_the_check_that_catches_it(
    runner: Runner, pristine_dump: bytes, damage: str
) -> None:
    name = f"postgres-{_stamp(timedelta(0))}.dump"
    dump = runner.backups / name
    dump.write_bytes(pristine_dump)
    (runner.backups / f"{name}.sha256").write_text(f"{_sha256(dump)}  {name}\n")
    not_refused(runner.run("restore", "--verify", "--backup", name))  # intact before the damage
    _damage(dump, damage)
    check, reason = DAMAGES[damage]
    expected = Refusal(2, check, reason, f"file={dump}")
    assert refusal(runner.run("restore", "--verify", "--backup", name)) == expected
    result = runner.run("restore", "--backup", name, "--into-new-database", "inspect_bad")
    assert refusal(result) == expected
    assert runner.cluster.psql("SELECT count(*) FROM pg_database WHERE datname = 'inspect_bad'",
                               db="postgres") == "0"


def test_missing_backup_or_database_is_named(runner: Runner, pristine_dump: bytes) -> None:
    nothing = runner.run("restore", "--into-new-database", "inspect_none")
    assert refusal(nothing) == Refusal(2, "file", "none", f"file={runner.backups}")
    absent = runner.run("restore", "--backup", "postgres-20260101T000000Z.dump")
    assert refusal(absent) == Refusal(2, "file", "not-found", "file=postgres-20260101T000000Z.dump")
    dump = runner.backups / f"postgres-{_stamp(timedelta(0))}.dump"
    dump.write_bytes(pristine_dump)
    Path(f"{dump}.sha256").write_text(f"{_sha256(dump)}  {dump.name}\n")
    no_db = runner.run("restore", PGDATABASE="no_such_db")
    assert refusal(no_db) == Refusal(3, "target", "absent", "database=no_such_db")
    assert runner.cluster.psql("SELECT count(*) FROM pg_database WHERE datname IN "
                               "('inspect_none', 'no_such_db')", db="postgres") == "0"


# ---------------------------------------------------------------------------- failures and retention


def test_failed_backup_deletes_nothing_and_counts_a_failure(runner: Runner) -> None:
    assert runner.run("backup", "once").returncode == 0
    [real] = runner.good()
    planted = [_plant(runner, runner.backups / real, timedelta(days=d)) for d in (40, 50, 60)]
    before = {p.name: _sha256(p) for p in runner.backups.iterdir() if not p.name.startswith(".")}
    last_success = runner.metric("paper_trading_backup_last_success_timestamp_seconds")
    dead_port = str(_free_port())
    failed = runner.run("backup", "once", PGPORT=dead_port, BACKUP_MAX_AGE_DAYS="1", BACKUP_KEEP_COUNT="1")
    assert failed.returncode == 1
    after = {p.name: _sha256(p) for p in runner.backups.iterdir() if not p.name.startswith(".")}
    assert after == before and set(planted) <= set(after)
    assert not list(runner.backups.glob(".tmp-*"))
    assert runner.metric("paper_trading_backup_failures_total") == 1
    assert runner.metric("paper_trading_backup_last_run_success") == 0
    assert runner.metric("paper_trading_backup_last_success_timestamp_seconds") == last_success
    # A wrong password fails the same way.
    bad = runner.work / "wrong"
    bad.write_text("nope")
    assert runner.run("backup", "once", PGPASSWORD_FILE=str(bad)).returncode == 1
    assert runner.metric("paper_trading_backup_failures_total") == 2
    assert {p.name for p in runner.backups.iterdir() if not p.name.startswith(".")} == set(before)


@pytest.mark.parametrize("broken", ["mv", "sha256sum"])
def test_failed_move_publishes_nothing_and_prunes_nothing(
    cluster: Cluster, tmp_path: Path, broken: str
) -> None:
    """`if ! publish` turns `set -e` off inside it: a failed move or an empty checksum fails the backup."""
    runner = make_runner(cluster, tmp_path)
    assert runner.run("backup", "once").returncode == 0
    [real] = runner.good()
    planted = [_plant(runner, runner.backups / real, timedelta(days=d)) for d in (40, 50, 60)]
    before = {p.name: _sha256(p) for p in runner.backups.iterdir() if not p.name.startswith(".")}
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    if broken == "mv":  # `mv` refuses to put a dump in place (the checksum's move still works)
        script = ('#!/bin/sh\nfor a; do last=$a; done\n'
                  'case "$last" in *.dump) exit 1 ;; esac\nexec /bin/mv "$@"\n')
    else:  # a hashing tool that prints nothing for a file: an empty checksum (the audit trail's
        # hash chain hashes stdin and still works, else the run would stop before it dumps: exit 74)
        script = f'#!/bin/sh\n[ "$#" -gt 0 ] || exec {shutil.which("sha256sum")}\nexit 0\n'
    (stubs / broken).write_text(script)
    (stubs / broken).chmod(0o755)
    failed = runner.run("backup", "once", PATH=f"{stubs}:{runner.env['PATH']}",
                        BACKUP_MAX_AGE_DAYS="1", BACKUP_KEEP_COUNT="1")
    assert failed.returncode == 1
    after = {p.name: _sha256(p) for p in runner.backups.iterdir() if not p.name.startswith(".")}
    assert after == before and set(planted) <= set(after)  # nothing new, nothing pruned
    assert runner.metric("paper_trading_backup_last_run_success") == 0
    assert "could not publish" in failed.stdout + failed.stderr


def test_retention_from_config_keeps_newest_by_count_and_age(cluster: Cluster, tmp_path: Path) -> None:
    cluster.psql(SCHEMA)
    runner = make_runner(cluster, tmp_path, retention={"keepCount": 4, "maxAgeDays": 10}, redisSnapshot=False)
    assert runner.env["BACKUP_KEEP_COUNT"] == "4" and runner.env["BACKUP_MAX_AGE_DAYS"] == "10"
    assert runner.run("backup", "once").returncode == 0
    [real] = runner.good()
    young = [_plant(runner, runner.backups / real, timedelta(days=d, hours=1)) for d in (1, 2, 3, 4, 5)]
    old = [_plant(runner, runner.backups / real, timedelta(days=d)) for d in (11, 20)]
    unrelated = runner.backups / "notes.txt"
    unrelated.write_text("operator file")
    time.sleep(1.1)
    assert runner.run("backup", "once").returncode == 0
    kept = runner.good()
    newest = kept[-1]
    # count 4: the new one, the previous real one, and the two youngest planted.
    assert sorted(kept) == sorted([newest, real, young[0], young[1]])
    assert not set(old) & set(kept)
    assert unrelated.exists()
    assert not [p for p in runner.backups.glob("*.sha256") if not Path(str(p)[:-7]).exists()]
    assert runner.metric("paper_trading_backup_good_backups") == 4


def test_retention_never_removes_the_newest_good_backup(runner: Runner) -> None:
    assert runner.run("backup", "once").returncode == 0
    [real] = runner.good()
    old = [_plant(runner, runner.backups / real, timedelta(days=d)) for d in (40, 41)]
    (runner.backups / real).unlink()
    (runner.backups / f"{real}.sha256").unlink()
    lib = runner.work / "bin" / "lib.sh"
    pruned = subprocess.run([*(runner.shell or ["sh"]), "-c", f'. "{lib}"; prune "$BACKUP_DIR" none'],
                            env={**runner.env, "BACKUP_MAX_AGE_DAYS": "1", "BACKUP_KEEP_COUNT": "1"},
                            capture_output=True, text=True, timeout=30)
    assert pruned.returncode == 0, pruned.stderr
    assert runner.good() == [max(old)]


def test_stamp_epoch_matches_python(runner: Runner) -> None:
    lib = runner.work / "bin" / "lib.sh"
    stamps = ["19700101T000000Z", "20000229T235959Z", "20260101T080910Z", "20261231T235959Z",
              "21000301T000000Z"]
    script = f'. "{lib}"; for s in {" ".join(stamps)}; do stamp_epoch $s; done'
    out = subprocess.run([*(runner.shell or ["sh"]), "-c", script],
                         env=runner.env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    expected = [int(datetime.strptime(s, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp())
                for s in stamps]
    assert [int(x) for x in out.stdout.split()] == expected


# ---------------------------------------------------------------------------- second target and redis


def test_second_target_gets_a_verified_copy(cluster: Cluster, tmp_path: Path) -> None:
    cluster.psql(SCHEMA)
    runner = make_runner(cluster, tmp_path, secondTarget="/srv/backups", redisSnapshot=False)
    second = Path(runner.env["BACKUP_SECOND_DIR"])
    assert runner.run("backup", "once").returncode == 0
    [name] = runner.good()
    assert runner.good(second) == [name]
    assert _sha256(second / name) == _sha256(runner.backups / name)
    assert runner.metric("paper_trading_backup_second_target_last_success_timestamp_seconds") > 0
    # The second target broken: the run fails, the primary backup still lands.
    shutil.rmtree(second)
    (tmp_path / "second").write_text("not a directory")
    time.sleep(1.1)
    failed = runner.run("backup", "once")
    assert failed.returncode == 1
    assert len(runner.good()) == 2
    assert runner.metric("paper_trading_backup_failures_total") == 1


def test_redis_snapshot_is_copied(cluster: Cluster, tmp_path: Path) -> None:
    server = require_tool("redis-server")
    cli = require_tool("redis-cli")
    cluster.psql(SCHEMA)
    runner = make_runner(cluster, tmp_path)
    data = Path(runner.env["REDIS_DATA_DIR"])
    port = str(_free_port())
    proc = subprocess.Popen([server, "--port", port, "--bind", "127.0.0.1", "--dir", str(data), "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            ping = subprocess.run([cli, "-p", port, "ping"], capture_output=True, text=True)
            if ping.stdout.strip() == "PONG":
                break
            time.sleep(0.1)
        wrote = subprocess.run([cli, "-p", port, "set", "paper:mode", "true"], capture_output=True)
        assert wrote.returncode == 0
        assert subprocess.run([cli, "-p", port, "save"], capture_output=True).returncode == 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert runner.run("backup", "once").returncode == 0
    [rdb] = list(runner.backups.glob("redis-*.rdb"))
    assert rdb.read_bytes() == (data / "dump.rdb").read_bytes()
    assert (runner.backups / f"{rdb.name}.sha256").read_text().split()[0] == _sha256(rdb)
    redis_ok = 'paper_trading_backup_component_last_success_timestamp_seconds{component="redis"}'
    assert runner.metric(redis_ok) > 0


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
