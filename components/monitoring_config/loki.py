"""loki.yml: single-binary Loki on the filesystem with retention from config."""

from __future__ import annotations

from ..config import Settings
from . import layout
from ._yaml import dump


def loki_config(settings: Settings) -> str:
    data = layout.LOKI_DATA
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
