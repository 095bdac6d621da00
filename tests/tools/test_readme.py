"""The README stays true: its config table matches the models, its two commands exist."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tools.config_reference import BEGIN, END, embed

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_config_reference_matches_models() -> None:
    assert BEGIN in README and END in README
    assert embed(README) == README, \
        "README config table is stale: run `python -m tools.config_reference --write`"


def test_quickstart_has_exactly_two_commands_that_exist() -> None:
    section = README.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in section.strip().splitlines() if line.strip()]
    assert commands == ["scripts/dev-up", "scripts/test"]
    for command in commands:
        path = ROOT / command
        assert path.is_file() and os.access(path, os.X_OK), command


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^scripts/test\b", ci, re.M), ".ci/run must call the README's test command"
