"""promtail.yml: ship every container's json-file log to Loki, without the Docker socket.

Reads `/var/lib/docker/containers/*/*-json.log` (mounted read-only). Container labels
arrive in each line's `attrs` when the json-file driver is told to copy them
(`log-opts labels=paper-trading.service,paper-trading.color,paper-trading.stack`).
The proxy's JSON access log is parsed as the audit trail (`stream="audit"`).

The operations audit file (release/audit.py) is mounted read-only at `AUDIT_DIR` and
shipped as its own job: `{job="audit", operation=..., result=...}` (few values each, so
cheap labels), timestamped with the record's own `time`, and counted in
`paper_trading_audit_records_total{operation,result}` on promtail's /metrics.
"""

from __future__ import annotations

from typing import Any

from contract import AUDIT_DIR, AUDIT_FILE
from settings import Settings

from . import layout
from ._yaml import dump

#: The counter promtail exports per audit record (`prefix` + name in the metrics stage).
AUDIT_METRIC_PREFIX = "paper_trading_"
AUDIT_METRIC = "audit_records_total"


def audit_scrape_config(stack: str) -> dict[str, Any]:
    """The audit job: one Loki line per record, labelled by operation and result, counted."""
    return {
        "job_name": "audit",
        "static_configs": [{
            "targets": ["localhost"],
            "labels": {"job": "audit", "stack": stack, "__path__": f"{AUDIT_DIR}/{AUDIT_FILE}"},
        }],
        "pipeline_stages": [
            {"json": {"expressions": {"operation": "operation", "result": "result", "time": "time"}}},
            {"labels": {"operation": None, "result": None}},
            {"timestamp": {"source": "time", "format": "RFC3339Nano"}},
            {"metrics": {AUDIT_METRIC: {
                "type": "Counter",
                "description": "Audit records of operations, by operation and result.",
                "prefix": AUDIT_METRIC_PREFIX,
                "max_idle_duration": "8760h",
                "config": {"match_all": True, "action": "inc"},
            }}},
        ],
    }


def promtail_config(settings: Settings, stack: str) -> str:
    del settings
    document = {
        "server": {"http_listen_port": layout.PROMTAIL_PORT, "grpc_listen_port": 0, "log_level": "warn"},
        "positions": {"filename": f"{layout.PROMTAIL_POSITIONS_DIR}/positions.yaml"},
        "clients": [{"url": f"http://{layout.ALIASES['loki']}:{layout.LOKI_PORT}/loki/api/v1/push"}],
        "scrape_configs": [{
            "job_name": "containers",
            "static_configs": [{
                "targets": ["localhost"],
                "labels": {"job": "containers", "stack": stack,
                           "__path__": f"{layout.DOCKER_CONTAINERS_DIR}/*/*-json.log"},
            }],
            "pipeline_stages": [
                {"json": {"expressions": {
                    "output": "log",
                    "stream": "stream",
                    "time": "time",
                    "service": 'attrs."paper-trading.service"',
                    "color": 'attrs."paper-trading.color"',
                }}},
                # `filename` (the container's log path, so its id) stays a label.
                {"labels": {"stream": None, "service": None, "color": None}},
                {"timestamp": {"source": "time", "format": "RFC3339Nano"}},
                {"output": {"source": "output"}},
                {"match": {
                    "selector": '{service="proxy"} |~ "^\\\\{"',
                    "stages": [
                        {"json": {"expressions": {"live_color": "color"}}},
                        {"labels": {"live_color": None}},
                        {"static_labels": {"audit": "access"}},
                    ],
                }},
            ],
        }, audit_scrape_config(stack)],
    }
    return dump(document, "promtail.yml")
