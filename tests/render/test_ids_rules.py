# ruff: noqa: E501 -- the cases are a table of series.
"""The IDS's alerts under the real promtool (issue 14, part 2): `IdsBanStorm` and `IdsDetectorDown`
fire when they should and stay silent otherwise.

The cases join tests/render/test_monitoring_rules.py's table (`CASES`), so its guard (every alert has a
case) and its promtool run cover them; `test_ids_alert_cases_run_under_promtool` runs them alone
too, with silent-only groups (a quiet IDS, a healthy one) that must produce no alert at all.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from render.monitoring import rules
from tests.support import require_tool
from tests.support.ids_rule_cases import DOWN, IDS, bans, ids_case_rows, threshold
from tests.support.monitoring import stack_settings, write_prometheus_tree
from tests.support.rule_cases import Case, _group, _sel


def _bans(jail: str) -> str:
    return bans(jail)


def _threshold() -> int:
    return threshold()


def ids_cases() -> list[Case]:
    return [Case(*row) for row in ids_case_rows()]


#: Silent-only groups: a steady trickle of bans under the threshold; a healthy detector for 30m.
QUIET = [
    Case("IdsBanStorm", [(_bans("probe"), "0+1x30"), (_bans("auth"), "0+1x30")], ["10m", "20m", "30m"], "", {}, ""),
    Case("IdsDetectorDown", [(_sel("up", IDS), "1x30"),
                             (_sel("paper_trading_ids_heartbeat_timestamp_seconds", IDS), "0+60x30")],
         ["10m", "20m", "30m"], "", {}, ""),
]


def _run(tmp_path: Path, cases: list[Case]) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool")
    settings = stack_settings("prod")
    config = write_prometheus_tree(tmp_path, settings, "prod")
    by_name = {a.name: a for a in rules.alerts(settings)}
    groups: list[dict[str, Any]] = [_group(c, by_name) for c in cases]
    document = {
        "rule_files": [config.parent.joinpath(p).name for p in ("recording.rules.yml", "alerts.rules.yml")],
        "evaluation_interval": "1m",
        "tests": groups,
    }
    path = config.parent / "ids.test.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=300)


def test_ids_alerts_exist_with_the_configured_threshold() -> None:
    found = {a.name: a for a in rules.alerts(stack_settings("prod"))}
    assert found["IdsBanStorm"].expr.endswith(f") > {_threshold()}")
    assert 'job="ids"' in found["IdsDetectorDown"].expr


@pytest.mark.tools
def test_ids_alert_cases_run_under_promtool(tmp_path: Path) -> None:
    result = _run(tmp_path, [*ids_cases(), *QUIET])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.tools
def test_ids_detector_that_never_answered_fires(tmp_path: Path) -> None:
    """The target answers but fail2ban never did (no heartbeat sample at all)."""
    case = Case("IdsDetectorDown", [(_sel("up", IDS), "1x10")], ["1m"], "3m", IDS,
                DOWN)
    result = _run(tmp_path, [case])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.tools
def test_ids_alerts_without_the_target_fire(tmp_path: Path) -> None:
    """No `ids` target at all (the scrape job lost, the container gone): the detector is down."""
    case = Case("IdsDetectorDown", [(_sel("up", {"job": "node", "instance": "n"}), "1x10")], ["1m"], "3m",
                {"job": "ids"}, DOWN)
    result = _run(tmp_path, [case])
    assert result.returncode == 0, result.stdout + result.stderr
