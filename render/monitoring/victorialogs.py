"""VictoriaLogs + vlagent (`monitoring.logs.backend: victorialogs`): their whole configuration as flags.

Both are Apache-2.0 programs from one Go module (github.com/VictoriaMetrics/VictoriaLogs), built on
the host from the Go module proxy (images/_go), so log aggregation runs where no registry answers
(docs/monitoring.md, "Log aggregation on machines without a registry"). Neither takes a config file:
no uploads, so both containers keep a read-only root.

What vlagent ships, the same two sources promtail ships (promtail.py):

- `containers`: every `/var/lib/docker/containers/*/*-json.log` (mounted read-only). Each line is
  Docker's JSON (`log`, `stream`, `time`, `attrs`); vlagent parses it, `log` becomes the message,
  `time` the timestamp, and the container labels the json-file driver copies into `attrs`
  (`log-opts labels=paper-trading.service,...`, stack/common.py) arrive flattened as the fields
  `attrs.paper-trading.service` / `attrs.paper-trading.color`, which are stream fields (labels).
  `file` (the container's log path, so its id) stays on every record.
- `audit`: the operations audit file (release/audit.py, its volume mounted read-only), one
  record a line: `job="audit"`, `operation` and `result` as stream fields (few values each), the
  record's own `time` as the timestamp, every other field kept.

Retention: VictoriaLogs has one retention for the whole store (no per-stream retention like Loki's
`retention_stream`), so it keeps everything as long as the audit trail must be kept
(`loki.audit_retention`: `security.audit.retentionDays`, never less than `monitoring.logs.retention`).
"""

from __future__ import annotations

import json
from typing import Final

from contract import AUDIT_PATH
from settings import Settings

from . import layout
from .loki import audit_retention

#: Where vlagent sends: VictoriaLogs' native ingestion endpoint (same release on both ends).
INSERT_PATH: Final = "/internal/insert"
#: The fields that make a stream (Loki's labels): the job, the stack, Docker's stream and the
#: container labels, and for the audit trail its operation and result.
SERVICE_FIELD: Final = "attrs.paper-trading.service"
COLOR_FIELD: Final = "attrs.paper-trading.color"
STREAM_FIELDS: Final = ("job", "stack", SERVICE_FIELD, COLOR_FIELD, "stream", "operation", "result")
#: `_msg` of an audit record (it has no message field of its own; Docker's lines always carry `log`).
AUDIT_MESSAGE: Final = "audit record"
CONTAINER_LOGS_GLOB: Final = f"{layout.DOCKER_CONTAINERS_DIR}/*/*-json.log"
#: How often vlagent looks for new containers' log files.
REFRESH_INTERVAL: Final = "5s"

#: LogsQL: the audit trail, and the proxy's JSON request log (what promtail labels `audit="access"`).
AUDIT_QUERY: Final = '{job="audit"}'
ACCESS_LOG_QUERY: Final = f'{{job="containers", "{SERVICE_FIELD}"="proxy"}} _msg:~"^\\\\{{" | unpack_json'


def server_args(settings: Settings) -> list[str]:
    """VictoriaLogs' flags: data on its volume, one retention (the audit trail's), quiet logs."""
    return [
        f"-storageDataPath={layout.VICTORIALOGS_DATA}",
        f"-httpListenAddr=:{layout.VICTORIALOGS_PORT}",
        f"-retentionPeriod={audit_retention(settings)}",
        "-loggerLevel=WARN",
    ]


def collector_args(stack: str, *, audit: bool = True) -> list[str]:
    """vlagent's flags. `-fileCollector.glob` and `-fileCollector.extraFields` pair up by position."""
    sources: list[tuple[str, dict[str, str]]] = [
        (CONTAINER_LOGS_GLOB, {"job": "containers", "stack": stack}),
    ]
    if audit:
        # The record carries its own `stack`; a second one would be a duplicate field.
        sources.append((AUDIT_PATH, {"job": "audit"}))
    args = [
        f"-remoteWrite.url=http://{layout.ALIASES['victorialogs']}:{layout.VICTORIALOGS_PORT}{INSERT_PATH}",
        f"-tmpDataPath={layout.VLAGENT_DATA}",
        f"-httpListenAddr=:{layout.VLAGENT_PORT}",
    ]
    for glob, fields in sources:
        args += [f"-fileCollector.glob={glob}",
                 f"-fileCollector.extraFields={json.dumps(fields, separators=(',', ':'))}"]
    args += [
        f"-fileCollector.streamFields={','.join(STREAM_FIELDS)}",
        "-fileCollector.msgField=log",
        "-fileCollector.timeField=time",
        # The collector's own hostname (a container name) says nothing; `file` is kept.
        "-fileCollector.hostnameField=",
        f"-fileCollector.refreshInterval={REFRESH_INTERVAL}",
        f"-defaultMsgValue={AUDIT_MESSAGE}",
        "-loggerLevel=WARN",
    ]
    return args


def flags(args: list[str]) -> dict[str, list[str]]:
    """`-name=value` flags as {name: [values in order]} (repeated flags keep every value)."""
    parsed: dict[str, list[str]] = {}
    for arg in args:
        if not arg.startswith("-") or "=" not in arg:
            raise ValueError(f"not a -name=value flag: {arg!r}")
        name, value = arg[1:].split("=", 1)
        parsed.setdefault(name, []).append(value)
    return parsed
