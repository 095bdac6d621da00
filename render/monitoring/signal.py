"""The Swarm auto-scaler's signal: a prometheus.yml that scrapes every task of both colors.

On Swarm the app tasks are found by DNS (`tasks.<service>` on the overlay names every running
task: dnsrr services, no VIP), each job labels its series with the color it scrapes, and the
decision rule (release/swarm/autoscale.py) reads `SIGNAL_METRIC` averaged over the live color's
tasks: requests in flight per replica.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._yaml import dump

#: The app's gauge of requests being served (probes and scrapes aside): part of the app contract
#: when auto-scaling is on (the reference app exports it).
SIGNAL_METRIC = "http_requests_in_flight"
#: How often each task is scraped: a decision reads a value at most this old.
SCRAPE_INTERVAL = "2s"
#: Prometheus's port inside its task (published on the manager node's `signalPort`).
SIGNAL_PORT = 9090


def signal_query(color: str) -> str:
    """Requests in flight per replica of `color`: the gauge averaged over its scraped tasks."""
    return f'avg({SIGNAL_METRIC}{{job="app-{color}"}})'


def replicas_query(color: str) -> str:
    """How many of `color`'s tasks answered the last scrape (the denominator of the average)."""
    return f'count(up{{job="app-{color}"}} == 1)'


def signal_config(services: Mapping[str, str], app_port: int, stack: str) -> str:
    """prometheus.yml for the signal: one job per color, its tasks found by DNS on the overlay."""
    jobs: list[dict[str, Any]] = [
        {
            "job_name": f"app-{color}",
            "metrics_path": "/metrics",
            "dns_sd_configs": [{"names": [f"tasks.{service}"], "type": "A", "port": app_port,
                                "refresh_interval": "5s"}],
            "relabel_configs": [{"target_label": "color", "replacement": color}],
        }
        for color, service in sorted(services.items())
    ]
    document = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": "1s",
                   "external_labels": {"stack": stack, "purpose": "autoscale-signal"}},
        "scrape_configs": jobs,
    }
    return dump(document, "prometheus.yml (the Swarm auto-scaler's signal)")
