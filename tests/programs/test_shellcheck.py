"""Every shell script in the repository is clean under `shellcheck -x` (issue 13, bar).

The scripts are found, not listed: every file git knows (tracked or new, not ignored) whose
name ends in .sh/.bash or whose shebang names sh, bash, dash or ksh. Sourced files are
followed (`-x`) through the scripts' own `# shellcheck source=` directives.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.support import require_tool

pytestmark = pytest.mark.tools
ROOT = Path(__file__).resolve().parents[2]
SHEBANG = re.compile(rb"^#!\s*(?:/usr)?/bin/(?:env\s+(?:-\S+\s+)*)?(?:ba|da|k)?sh\b")


def is_shell_script(path: Path) -> bool:
    if path.suffix in (".sh", ".bash"):
        return True
    try:
        with path.open("rb") as handle:
            first = handle.readline(200)
    except OSError:
        return False
    return bool(SHEBANG.match(first))


def shell_scripts(root: Path = ROOT) -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    return sorted(n for n in listed if n and (root / n).is_file() and is_shell_script(root / n))


def test_discovery_finds_the_scripts_by_shebang_and_extension() -> None:
    found = set(shell_scripts())
    # One of each kind, so a broken finder cannot pass by finding nothing.
    assert {"scripts/dev-up", "scripts/test", ".ci/run", "programs/backup/backup", "programs/backup/lib.sh",
            "programs/routing/swap.sh"} <= found
    assert any(name.startswith("images/") and name.endswith(".sh") for name in found)
    assert not any(name.endswith(".py") for name in found)


def test_every_shell_script_is_shellcheck_clean() -> None:
    shellcheck = require_tool("shellcheck")
    scripts = shell_scripts()
    result = subprocess.run(
        [shellcheck, "-x", "--format=json1", *scripts], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode in (0, 1), result.stderr
    comments = json.loads(result.stdout or '{"comments": []}')["comments"]
    findings = sorted(
        f"{c['file']}:{c['line']}: SC{c['code']} ({c['level']}) {c['message']}" for c in comments
    )
    assert findings == [], f"shellcheck -x findings in {len(scripts)} scripts:\n" + "\n".join(findings)
    assert result.returncode == 0
