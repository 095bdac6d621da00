"""The Swarm auto-scaler's signal config and queries, checked by the real promtool.

The config is what stack/swarm/signal.py ships as a Swarm config; the queries are what
release/swarm/autoscale.py asks (written as recording rules, which promtool parses).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from render.monitoring.signal import replicas_query, signal_config, signal_query
from tests.support import require_tool

SERVICES = {"blue": "paper-trading-lab-app-blue", "green": "paper-trading-lab-app-green"}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("promtool"), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.tools
def test_the_signal_config_passes_promtool(tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(signal_config(SERVICES, 3000, "swarmlab"))
    result = _promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {job["job_name"]: job for job in yaml.safe_load(config.read_text())["scrape_configs"]}
    assert jobs["app-green"]["dns_sd_configs"][0]["names"] == ["tasks.paper-trading-lab-app-green"]
    assert jobs["app-blue"]["relabel_configs"] == [{"target_label": "color", "replacement": "blue"}]


@pytest.mark.tools
def test_the_queries_parse(tmp_path: Path) -> None:
    rules = tmp_path / "queries.yml"
    queries = [signal_query(c) for c in SERVICES] + [replicas_query(c) for c in SERVICES]
    rules.write_text(yaml.safe_dump({"groups": [{"name": "signal", "rules": [
        {"record": f"signal:q{i}", "expr": q} for i, q in enumerate(queries)]}]}))
    result = _promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    # ... and the check can fail: a broken query is refused.
    rules.write_text(rules.read_text().replace("avg(", "avg((", 1))
    assert _promtool("check", "rules", str(rules)).returncode != 0
