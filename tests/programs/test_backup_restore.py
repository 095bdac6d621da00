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

import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support import require_tool
from tests.support.backup_lab import (
    SCHEMA,
    Cluster,
    Refusal,
    Runner,
    _free_port,
    _plant,
    _sha256,
    _stamp,
    fingerprint,
    make_runner,
    not_refused,
    refusal,
)

pytestmark = pytest.mark.tools

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


