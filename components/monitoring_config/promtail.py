"""promtail.yml: ship every container's json-file log to Loki, without the Docker socket.

Reads `/var/lib/docker/containers/*/*-json.log` (mounted read-only). Container labels
arrive in each line's `attrs` when the json-file driver is told to copy them
(`log-opts labels=paper-trading.service,paper-trading.color,paper-trading.stack`).
The proxy's JSON access log is parsed as the audit trail (`stream="audit"`).
"""

from __future__ import annotations

from ..config import Settings
from . import layout
from ._yaml import dump


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
        }],
    }
    return dump(document, "promtail.yml")
