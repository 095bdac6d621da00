"""Log aggregation on VictoriaLogs + vlagent, run for real (issue 22, item 1).

The ci stack (`monitoring.logs.backend: victorialogs`) is rendered with `tools.render.evaluate`,
and its log store and collector are started by `tests.docker.test_ci_images.CiStack` from their rendered
inputs (image, user, command, read-only root, capabilities, security options, limits, healthcheck,
networks and aliases, the host mount of Docker's logs and the audit volume, both read-only), under
their own name prefix `paper-trading-logs-<hex>`. Then:

- a container logging through json-file with the program's own log options and service label
  prints a unique line, and the store's query API must return it with the labels the collector
  gives it (`job`, `stack`, `attrs.paper-trading.service`, `stream`) as stream fields;
- a record written by the real audit writer (release/audit.py `FileSink`) is put into the
  audit volume, and must arrive as `{job="audit", operation, result}` with the record's own time;
- the collector, root with every capability dropped, cannot write the audit volume.

Needs the ci images (`scripts/build-test-images --ci`, which builds both from the Go module proxy).
"""

from __future__ import annotations

import io
import json
import secrets
import subprocess
import tarfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import contract
from contract import SERVICE_LABEL
from release.audit import AUDIT_DIR, AUDIT_FILE, Auditor, FileSink
from render.monitoring import layout, victorialogs
from stack.common import log_options
from tests.support import missing, require_docker
from tests.support.ci_stack import CiStack, remove_labelled

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ("paper-trading-ci/victoria-logs:1.52.2", "paper-trading-ci/vlagent:1.52.2")
PROBE_IMAGE = "paper-trading-base:test"
SERVICES = ("victorialogs", "log-collector")
TIMEOUT = 90.0


@pytest.fixture(scope="module")
def stack() -> Iterator[CiStack]:
    require_docker()
    import docker

    from tools.render import evaluate

    client = docker.from_env(timeout=120)
    for image in (*IMAGES, PROBE_IMAGE):
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
            missing(f"{image} not built (scripts/build-test-images --ci)")
    graph = evaluate("ci")
    ci = CiStack(client, graph)
    # Our own prefix (never paper-trading-ci*/-dev*); CiStack's labels still mark every object.
    ci.prefix = f"paper-trading-logs-{secrets.token_hex(3)}"
    ci.labels = {**ci.labels, "paper-trading.ci-images-test": ci.prefix}
    try:
        ci.create_networks()
        for service in SERVICES:
            ci.start(_rendered(graph, service).inputs)
        deadline = time.monotonic() + TIMEOUT
        pending = [_rendered(graph, s) for s in SERVICES]
        while pending and time.monotonic() < deadline:
            pending = [r for r in pending if ci.status(r) is not True]
            time.sleep(0.5)
        assert not pending, "not healthy:\n  " + "\n  ".join(ci.describe(r) for r in pending)
        yield ci
    finally:
        remove_labelled(client, ci.prefix)
        client.close()


def _rendered(graph: Any, service: str) -> Any:
    [res] = [r for r in graph.containers if r.label_map.get(SERVICE_LABEL) == service]
    return res


def _store_url(ci: CiStack) -> str:
    inputs = _rendered(ci.graph, "victorialogs").inputs
    container = ci.started[inputs["name"]]
    container.reload()
    [address] = [n["IPAddress"] for n in container.attrs["NetworkSettings"]["Networks"].values()]
    return f"http://{address}:{layout.VICTORIALOGS_PORT}"


def _query(ci: CiStack, logsql: str) -> list[dict[str, Any]]:
    """VictoriaLogs' /select/logsql/query: one JSON object per line."""
    body = urllib.parse.urlencode({"query": logsql}).encode()
    with urllib.request.urlopen(f"{_store_url(ci)}/select/logsql/query", data=body, timeout=10) as response:
        return [json.loads(line) for line in response.read().decode().splitlines() if line.strip()]


def _until(ci: CiStack, logsql: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _query(ci, logsql)
        if rows:
            return rows
        time.sleep(1)
    collector = _rendered(ci.graph, "log-collector")
    raise AssertionError(f"nothing for {logsql!r} after {timeout:.0f}s\n  {ci.describe(collector)}")


def test_a_container_line_arrives_with_its_service_label(stack: CiStack) -> None:
    token = f"logs-probe-{secrets.token_hex(6)}"
    service = f"{stack.prefix}-writer"
    opts = log_options()
    # Kept until the line arrived: Docker deletes a container's log file with the container.
    run = ["docker", "run", "-d", "--network", "none", "--label", f"{SERVICE_LABEL}={service}",
           *[f"--label={k}={v}" for k, v in stack.labels.items()],
           "--log-driver", "json-file", *[a for k, v in opts.items() for a in ("--log-opt", f"{k}={v}")],
           PROBE_IMAGE, "sh", "-c", f"echo {token}; sleep 120"]
    writer = subprocess.run(run, check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    try:
        [row] = _until(stack, f'{{job="containers", "{victorialogs.SERVICE_FIELD}"="{service}"}} "{token}"')
    finally:
        subprocess.run(["docker", "rm", "-f", writer], capture_output=True, timeout=60)
    assert row["_msg"].strip() == token
    assert (row["job"], row["stack"], row["stream"], row[victorialogs.SERVICE_FIELD]) == (
        "containers", "ci", "stdout", service)
    stream = row["_stream"]
    for label in ('job="containers"', 'stack="ci"', 'stream="stdout"',
                  f'{victorialogs.SERVICE_FIELD}="{service}"'):
        assert label in stream, (label, stream)
    assert row["file"].startswith(f"{layout.DOCKER_CONTAINERS_DIR}/") and row["file"].endswith("-json.log")


def _millis(stamp: str) -> str:
    """An RFC 3339 UTC time to the millisecond: VictoriaLogs drops trailing zeros of the fraction."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return f"{whole}.{fraction[:3].ljust(3, '0')}"


def test_an_audit_record_arrives_with_its_labels(stack: CiStack, tmp_path: Path) -> None:
    actor = f"logs-test-{secrets.token_hex(4)}"
    Auditor("ci", FileSink(str(tmp_path / AUDIT_FILE)), actor=actor).record(
        "switch", "ok", 12.5, from_="blue", to="green")
    record = json.loads((tmp_path / AUDIT_FILE).read_text())
    _put_audit_file(stack, (tmp_path / AUDIT_FILE).read_bytes())
    [row] = _until(stack, f'{{job="audit"}} actor:="{actor}"')
    assert (row["job"], row["operation"], row["result"], row["stack"]) == ("audit", "switch", "ok", "ci")
    assert (row["from"], row["to"]) == ("blue", "green")
    assert row["_stream"] == '{job="audit",operation="switch",result="ok",stack="ci"}'
    # Timestamped by the record itself, not by the time it was read.
    assert _millis(row["_time"]) == _millis(record["time"])
    assert row["file"] == contract.AUDIT_PATH


def test_the_collector_cannot_write_the_audit_volume(stack: CiStack) -> None:
    inputs = _rendered(stack.graph, "log-collector").inputs
    collector = stack.started[inputs["name"]]
    for attempt in (f"echo forged >> {AUDIT_DIR}/{AUDIT_FILE}", f"touch {AUDIT_DIR}/forged",
                    f"rm -f {AUDIT_DIR}/{AUDIT_FILE}"):
        code, output = collector.exec_run(["sh", "-c", attempt], user=inputs["user"])
        assert code != 0, f"the collector could: {attempt}"
        assert b"Read-only file system" in output, output
    # And it is root with nothing else: no capability in any set.
    code, status = collector.exec_run(["sh", "-c", "grep ^Cap /proc/1/status"])
    assert code == 0
    caps = dict(line.split(":\t") for line in status.decode().splitlines())
    sets = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
    assert {caps[k].strip() for k in sets} == {"0000000000000000"}


def test_the_store_and_the_collector_expose_metrics(stack: CiStack) -> None:
    """What Prometheus scrapes (prometheus.py jobs `victorialogs` and `vlagent`)."""
    with urllib.request.urlopen(f"{_store_url(stack)}/metrics", timeout=10) as response:
        assert "vl_rows_ingested_total" in response.read().decode()
    inputs = _rendered(stack.graph, "log-collector").inputs
    code, out = stack.started[inputs["name"]].exec_run(
        ["wget", "-q", "-O", "-", f"http://127.0.0.1:{layout.VLAGENT_PORT}/metrics"])
    assert code == 0 and b'vl_rows_ingested_total{type="file_logs"}' in out


def _put_audit_file(ci: CiStack, content: bytes) -> None:
    """The file into the test's audit volume through a never-started helper (nothing else writes)."""
    volume = ci.volume(next(v["volumeName"] for v in _rendered(ci.graph, "log-collector").inputs["volumes"]
                            if v.get("containerPath") == AUDIT_DIR))
    helper = ci.client.containers.create(PROBE_IMAGE, command=["true"], labels=ci.labels,
                                         volumes=[f"{volume}:{AUDIT_DIR}:rw"], network_mode="none")
    try:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            info = tarfile.TarInfo(AUDIT_FILE)
            info.size, info.mode, info.mtime = len(content), 0o640, int(time.time())
            archive.addfile(info, io.BytesIO(content))
        assert helper.put_archive(AUDIT_DIR, buffer.getvalue())
    finally:
        helper.remove(force=True)
