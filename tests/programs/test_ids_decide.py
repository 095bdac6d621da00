"""decide.py, fail2ban's ban action, run as fail2ban runs it (python3, from the bundle's directory).

fail2ban's `ignoreip` already spares allow-listed addresses, so tests/render/test_ids_real.py cannot
tell whether decide.py itself refuses them; and two jails banning one address never race
there. Here the generated bundle is written to a temp dir and decide.py is called directly:
an allow-listed address gets no decision file, a shorter ban from another jail does not cut
a longer one short, an unban by another jail leaves the standing ban.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from render.ids import IdsPaths, bundle
from tests.support.fidelity_nginx import prod_settings


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    settings = prod_settings()
    ids = settings.security.ids.model_copy(update={"allow_list": ("198.51.100.0/24",)})
    settings = settings.model_copy(update={"security": settings.security.model_copy(update={"ids": ids})})
    paths = IdsPaths(run_dir=str(tmp_path / "run"), decisions_dir=str(tmp_path / "decisions"),
                     access_log=str(tmp_path / "access.log"))
    for name, text in bundle(settings, paths, public_listeners=(443,)).items():
        target = tmp_path / "run" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (tmp_path / "decisions").mkdir()
    return tmp_path


def decide(run_dir: Path, *argv: str) -> None:
    done = subprocess.run([sys.executable, str(run_dir / "run" / "decide.py"), *argv],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def decision(run_dir: Path, name: str) -> tuple[int, str] | None:
    path = run_dir / "decisions" / name
    if not path.exists():
        return None
    until, jail = path.read_text().split()
    return int(until), jail


def test_a_ban_writes_one_decision_file(run_dir: Path) -> None:
    before = int(time.time())
    decide(run_dir, "ban", "203.0.113.7", "600", "probe")
    found = decision(run_dir, "203.0.113.7")
    assert found is not None and found[1] == "probe" and before + 600 <= found[0] <= int(time.time()) + 600


@pytest.mark.parametrize("address", ["198.51.100.20", "127.0.0.1", "::1"])
def test_an_allow_listed_address_gets_no_decision(run_dir: Path, address: str) -> None:
    decide(run_dir, "ban", address, "600", "probe")
    assert list((run_dir / "decisions").iterdir()) == []


def test_a_shorter_ban_by_another_jail_keeps_the_longer_one(run_dir: Path) -> None:
    decide(run_dir, "ban", "203.0.113.8", "86400", "injection")
    longer = decision(run_dir, "203.0.113.8")
    decide(run_dir, "ban", "203.0.113.8", "60", "errors")
    assert decision(run_dir, "203.0.113.8") == longer


def test_an_unban_by_another_jail_leaves_the_standing_ban(run_dir: Path) -> None:
    decide(run_dir, "ban", "2001:db8::9", "86400", "injection")
    standing = decision(run_dir, "2001_db8__9")
    assert standing is not None
    decide(run_dir, "unban", "2001:db8::9", "60", "errors")
    assert decision(run_dir, "2001_db8__9") == standing
    decide(run_dir, "unban", "2001:db8::9", "86400", "injection")
    assert decision(run_dir, "2001_db8__9") is None


@pytest.mark.parametrize("jail", ["default", "evil", "probe x"])
def test_a_jail_the_bundle_does_not_generate_is_refused(run_dir: Path, jail: str) -> None:
    program = str(run_dir / "run" / "decide.py")
    done = subprocess.run([sys.executable, program, "ban", "203.0.113.9", "60", jail],
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, list((run_dir / "decisions").iterdir())) == (2, []), done.stderr
