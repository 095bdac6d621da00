"""The validation CLI run as a user runs it, and its JSON report read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.fakes.validation_servers import ROOT


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("VALIDATION_", "BINANCE_", "KUCOIN_"))
    }
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "validation", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )

def run_report(
    tmp: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run the CLI with `--report` and return the process and the parsed JSON report."""
    report_file = tmp / "report.json"
    report_file.unlink(missing_ok=True)
    result = run_cli(*args, "--report", str(report_file), env=env)
    assert report_file.exists(), result.stdout + result.stderr
    return result, json.loads(report_file.read_text())
