"""loki.yml: single-binary Loki on the filesystem with retention from config.

Retention per stream: the operations audit (`{job="audit"}`) and the
proxy's request log (`{audit="access"}`, see promtail.py) are kept `security.audit.retentionDays`
days, never less than the other logs (`monitoring.logs.retention`).
"""

from __future__ import annotations

from settings import Settings

from . import layout
from ._yaml import dump

#: Stream selectors of the audit trail (operations, and the proxy's request log).
AUDIT_STREAMS = ('{job="audit"}', '{audit="access"}')


def audit_retention(settings: Settings) -> str:
    """The audit streams' retention in hours: audit.retentionDays, never shorter than other logs."""
    others = int(settings.monitoring.logs.retention.rstrip("h"))
    return f"{max(settings.security.audit.retention_days * 24, others)}h"


def loki_config(settings: Settings) -> str:
    data = layout.LOKI_DATA
    keep = audit_retention(settings)
    document = {
        "auth_enabled": False,
        "server": {"http_listen_port": layout.LOKI_PORT, "grpc_listen_port": 9096, "log_level": "warn"},
        "common": {
            "instance_addr": "127.0.0.1",
            "path_prefix": data,
            "storage": {"filesystem": {"chunks_directory": f"{data}/chunks",
                                        "rules_directory": f"{data}/rules"}},
            "replication_factor": 1,
            "ring": {"kvstore": {"store": "inmemory"}},
        },
        "schema_config": {"configs": [{
            "from": "2024-01-01", "store": "tsdb", "object_store": "filesystem", "schema": "v13",
            "index": {"prefix": "index_", "period": "24h"},
        }]},
        "limits_config": {
            "retention_period": settings.monitoring.logs.retention,
            "retention_stream": [
                {"selector": selector, "priority": 1, "period": keep} for selector in AUDIT_STREAMS
            ],
            "reject_old_samples": True,
            "reject_old_samples_max_age": "168h",
        },
        "compactor": {
            "working_directory": f"{data}/compactor",
            "retention_enabled": True,
            "delete_request_store": "filesystem",
        },
        "analytics": {"reporting_enabled": False},
    }
    return dump(document, "loki.yml")
