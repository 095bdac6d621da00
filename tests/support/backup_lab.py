"""A real Postgres cluster and the product's backup scripts run against it (Debian's and busybox's
userlands): one cluster for the session, a fresh runner per test."""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stack.backup import BIN_DIR
from tests.support import missing, require_tool
from tests.support.backup_render import backup_container, backup_graph, envs

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


@pytest.fixture(scope="session")
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
