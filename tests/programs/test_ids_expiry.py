"""The IDS supervisor's expiry sweep (programs/ids/supervise.py, `decisions`).

A decision file whose time is up must go at once: the host guard enforces every file it finds,
and fail2ban (in-memory database) forgets its bans when it restarts, so a file outliving its
ban keeps a source blocked for nothing. The real supervise.py, copied beside its own
paths.json as the renderer lays it out, judges a real decisions directory.
"""

from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path
from typing import Any

import programs

NOW = 1_800_000_000
#: The program as it is shipped into the container (it reads paths.json beside itself at import).
SUPERVISE = programs.path("ids/supervise.py")


def _sweep(tmp_path: Path, files: dict[str, str]) -> tuple[int, set[str]]:
    home = tmp_path / "ids"
    home.mkdir()
    decisions = tmp_path / "decisions"
    decisions.mkdir()
    for name, text in files.items():
        (decisions / name).write_text(text)
    shutil.copy(SUPERVISE, home / "supervise.py")
    (home / "paths.json").write_text(json.dumps({"decisions_dir": str(decisions), "run_dir": str(tmp_path),
                                                 "jails": []}))
    module: dict[str, Any] = runpy.run_path(str(home / "supervise.py"))
    active, expired = module["decisions"](NOW)
    return active, {entry.name for entry in expired}


def test_a_decision_is_expired_the_moment_its_time_is_up(tmp_path: Path) -> None:
    active, expired = _sweep(tmp_path, {
        "203.0.113.7": f"{NOW + 3600} injection\n",       # an hour to go: enforced
        "203.0.113.8": f"{NOW + 1} auth\n",               # one second to go: enforced
        "203.0.113.9": f"{NOW} auth\n",                   # up right now: removed
        "203.0.113.10": f"{NOW - 1} scanners\n",          # a second ago: removed
        "2001:db8::": f"{NOW - 30} injection\n",          # half a minute ago: removed
        "198.51.100.1": "not-a-time\n",                   # unreadable: removed (never enforced blind)
        "198.51.100.2": "",                               # empty: removed
        ".tmp-write": f"{NOW - 100} auth\n",              # a decision being written: left alone
    })
    assert active == 2
    assert expired == {"203.0.113.9", "203.0.113.10", "2001:db8::", "198.51.100.1", "198.51.100.2"}
