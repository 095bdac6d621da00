"""Live: the real Prometheus (Debian package) with the product's rendered config and rules pages on
paper mode off, delivered to the real Alertmanager with the rendered basic-auth web config.

Prometheus runs the prod `prometheus.yml` and rule files as the program renders them
(tests/support/fidelity_prometheus.py: intervals 1 s, the app job's blue-1 replica mapped to the
reference app on loopback, the other replicas and jobs dropped). After Prometheus has scraped
`paper_trading_mode 1` (and the alert is silent) the app's `paper_mode_off` fault is switched on
and the test polls `/api/v1/alerts` until PaperTradingModeOff is firing. Bar: within two
evaluation intervals plus one scrape interval. The measured seconds are printed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from render.monitoring import rules
from tests.support.fakes.validation_servers import reference_app
from tests.support.fidelity_prometheus import (
    INTERVAL_S,
    alertmanager,
    alertmanager_password,
    app_targets,
    prometheus,
)

SCRAPE_S = INTERVAL_S
EVAL_S = INTERVAL_S
POLL_S = 0.05
REPLICA = "paper-trading-app-blue-1"


def _firing(client: httpx.Client, base: str, name: str) -> list[dict[str, Any]]:
    alerts = client.get(f"{base}/api/v1/alerts", timeout=2).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"].get("alertname") == name and a["state"] == "firing"]


def _query(client: httpx.Client, base: str, expr: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = client.get(f"{base}/api/v1/query", params={"query": expr},
                                              timeout=2).json()["data"]["result"]
    return result


@pytest.mark.tools
def test_paper_mode_off_fires_within_two_evaluations(tmp_path: Path) -> None:
    with reference_app(color="blue") as app:
        targets: dict[str, str | None] = {t: None for t in app_targets()}
        (replica,) = [t for t in targets if t == REPLICA]
        targets[replica] = f"127.0.0.1:{app.port}"
        with alertmanager(tmp_path / "am") as am, prometheus(tmp_path, targets, am) as base, \
                httpx.Client() as client:
            # Scraped paper mode 1, rules evaluated, and the alert silent on a healthy app.
            values = _query(client, base, 'paper_trading_mode{job="app"}')
            assert [v["value"][1] for v in values] == ["1"], values
            time.sleep(EVAL_S)  # one more evaluation on top of the two waited for
            assert _firing(client, base, "PaperTradingModeOff") == []
            assert _query(client, base, rules.PAPER_MODE_MIN)[0]["value"][1] == "1"

            app.set_faults("paper_mode_off")
            flipped = time.monotonic()
            bar = 2 * EVAL_S + SCRAPE_S
            while not (firing := _firing(client, base, "PaperTradingModeOff")):
                assert time.monotonic() - flipped < bar + 10, "PaperTradingModeOff never fired"
                time.sleep(POLL_S)
            latency = time.monotonic() - flipped
            print(f"\nPaperTradingModeOff firing {latency:.2f}s after the flip "
                  f"(bar {bar:g}s = 2 x evaluation {EVAL_S:g}s + scrape {SCRAPE_S:g}s)")
            assert firing[0]["labels"]["severity"] == "critical"
            assert firing[0]["labels"]["color"] == "blue"
            assert firing[0]["labels"]["instance"] == REPLICA
            assert latency <= bar + POLL_S, f"fired after {latency:.2f}s, bar {bar:g}s"
            # Delivered: Prometheus authenticates to the rendered Alertmanager (basic auth from the
            # rendered password file); Alertmanager refuses to list alerts without credentials.
            assert client.get(f"{am}/api/v2/alerts", timeout=2).status_code == 401
            auth = ("prometheus", alertmanager_password())
            deadline = time.monotonic() + 15
            while not [a for a in client.get(f"{am}/api/v2/alerts", auth=auth, timeout=2).json()
                       if a["labels"].get("alertname") == "PaperTradingModeOff"]:
                assert time.monotonic() < deadline, "Prometheus did not deliver the alert to Alertmanager"
                time.sleep(0.2)
