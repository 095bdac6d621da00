"""The broker as the program deploys it, on the real Docker Engine (issue 15, part C).

The rendered ci stack's RabbitMQ container (`paper-trading-ci/rabbitmq:3.10`, Debian's
rabbitmq-server) is started from its rendered inputs (tests/docker/test_ci_images.py's CiStack:
conf.d file, definitions, plugins, user, read-only root, capabilities, networks) on a FRESH
data volume, as on a first deploy. Then, against the broker itself:

- every configured work queue exists, durable, with `x-single-active-consumer: true`
  (`rabbitmqctl list_queues`), and the broker really delivers to one consumer at a time;
- our user (from the definitions: RabbitMQ seeds no default user when definitions are
  configured) is the only user, is an administrator, and logs in over AMQP and the
  management API with the rendered password; guest does not exist;
- the per-object metrics the queue alert reads exist per queue on `/metrics`;
- a rotated password reaches an existing node (definitions are applied at every boot);
- the management API publishes no host port.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from settings import parse_settings
from stack.datastores import RABBITMQ_DEFINITIONS, RABBITMQ_USER, rabbitmq_definitions
from tests.support import require_docker
from tests.support.ci_stack import CiStack
from tools.render import stack_config

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
LABEL = "paper-trading.rabbitmq-docker-test"
TIMEOUT = 120.0
PASSWORD_UPLOAD = "/run/secrets/rabbitmq_password"


class _Subset:
    """The rendered ci graph restricted to RabbitMQ."""

    def __init__(self, graph: Any) -> None:
        self._graph = graph
        service = [(r, r.label_map.get("paper-trading.service")) for r in graph.containers]
        self.containers = [r for r, name in service if name == "rabbitmq"]
        # The blue app's files are its never-started carrier's uploads (stack/carrier.py).
        self.apps = [r for r, name in service
                     if name == "app-blue" and "paper-trading.carrier-for" in r.label_map]

    def of_type(self, type_: str) -> list[Any]:
        return list(self._graph.of_type(type_))


@dataclass
class Broker:
    ci: CiStack
    container: Any
    rendered: Any
    password: str
    queues: tuple[str, ...]

    @property
    def address(self) -> str:
        self.container.reload()
        networks = self.container.attrs["NetworkSettings"]["Networks"]
        backend = next(name for name in networks if name.endswith("-backend"))
        return str(networks[backend]["IPAddress"])


def _ci_queues() -> tuple[str, ...]:
    config, secrets = stack_config("ci")
    raw = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("paper-trading:")}
    return parse_settings(raw, frozenset(k.split(":", 1)[1] for k in secrets)).workers.queues


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    require_docker()
    import docker

    from tools.render import evaluate

    graph = _Subset(evaluate("ci"))
    [rendered] = graph.containers
    # The password the apps receive (the same RandomPassword the definitions hash).
    [app] = graph.apps
    [password] = [u["content"] for u in app.inputs["uploads"] if u["file"] == PASSWORD_UPLOAD]
    client = docker.from_env(timeout=120)
    try:
        client.images.get(rendered.inputs["image"])
    except docker.errors.ImageNotFound:
        proc = subprocess.run([str(ROOT / "scripts" / "build-test-images"), "--ci"],
                              capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    ci = CiStack(client, graph)
    ci.labels = {LABEL: ci.prefix}
    try:
        ci.create_networks()
        ci.start_all(time.monotonic() + TIMEOUT)
        _wait_healthy(ci, rendered)
        yield Broker(ci, ci.started[rendered.inputs["name"]], rendered, password, _ci_queues())
    finally:
        _remove(client, ci.prefix)
        client.close()


def _wait_healthy(ci: CiStack, rendered: Any) -> None:
    deadline = time.monotonic() + TIMEOUT
    while ci.status(rendered) is not True:
        assert time.monotonic() < deadline, "not healthy:\n" + ci.describe(rendered)
        time.sleep(0.5)


def _remove(client: Any, prefix: str) -> None:
    selector = {"label": f"{LABEL}={prefix}"}
    for container in client.containers.list(all=True, filters=selector):
        with contextlib.suppress(Exception):
            container.remove(force=True, v=True)
    for network in client.networks.list(filters=selector):
        with contextlib.suppress(Exception):
            network.remove()
    for volume in client.volumes.list(filters=selector):
        with contextlib.suppress(Exception):
            volume.remove(force=True)


def _ctl(broker: Broker, *args: str) -> tuple[int, str]:
    code, output = broker.container.exec_run(["rabbitmqctl", "-q", *args], demux=False)
    return int(code), output.decode(errors="replace").strip()


def _ctl_json(broker: Broker, *args: str) -> Any:
    code, out = _ctl(broker, *args, "--formatter", "json")
    assert code == 0, out
    return json.loads(out)


def _api(broker: Broker, path: str, password: str | None = None, method: str = "GET",
         body: dict[str, Any] | None = None) -> Any:
    """The management API, from the backend network's side (the switch's view)."""
    token = base64.b64encode(f"{RABBITMQ_USER}:{password or broker.password}".encode()).decode()
    request = urllib.request.Request(
        f"http://{broker.address}:15672{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def _amqp(broker: Broker, password: str | None = None) -> Any:
    import pika

    credentials = pika.PlainCredentials(RABBITMQ_USER, password or broker.password)
    return pika.BlockingConnection(pika.ConnectionParameters(
        host=broker.address, port=5672, credentials=credentials, connection_attempts=3, retry_delay=1,
        socket_timeout=10, blocked_connection_timeout=10))


#: One sample line of the Prometheus text format (no timestamps: rabbitmq_prometheus writes none).
_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>[^}]*)\} (?P<value>\S+)$')
_LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _metrics(broker: Broker) -> dict[tuple[str, str], float]:
    """`rabbitmq_queue_*{vhost, queue}` samples from the broker's own /metrics."""
    with urllib.request.urlopen(f"http://{broker.address}:15692/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = dict(_LABEL_PAIR.findall(match.group("labels")))
            if "queue" in labels:
                found[(match.group("name"), labels["queue"])] = float(match.group("value"))
    return found


# --------------------------------------------------------------------------- the queues


def test_each_work_queue_is_durable_with_single_active_consumer(broker: Broker) -> None:
    queues = {q["name"]: q for q in _ctl_json(broker, "list_queues", "name", "durable", "arguments")}
    assert set(queues) == set(broker.queues)
    for name in broker.queues:
        assert queues[name]["durable"] is True, name
        # rabbitmqctl's JSON: [name, AMQP type, value] per argument.
        arguments = {arg[0]: (arg[1], arg[2]) for arg in queues[name]["arguments"]}
        assert arguments == {"x-single-active-consumer": ("bool", True)}, name
    # The management API (what the switch reads) says the same.
    by_api = {q["name"]: q for q in _api(broker, "/api/queues/%2F")}
    assert {n: (q["durable"], q["arguments"]) for n, q in by_api.items()} == {
        n: (True, {"x-single-active-consumer": True}) for n in broker.queues}


def _collector(into: list[bytes]) -> Any:
    def on_message(channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        into.append(body)
        channel.basic_ack(method.delivery_tag)

    return on_message


def test_the_broker_delivers_a_queue_to_one_consumer_at_a_time(broker: Broker) -> None:
    """Two consumers (as two colors would be): one gets everything; when it goes, the other takes over."""
    queue = broker.queues[0]
    got: dict[str, list[bytes]] = {"first": [], "second": []}
    first, second = _amqp(broker), _amqp(broker)
    try:
        channels = {"first": first.channel(), "second": second.channel()}
        for who, channel in channels.items():
            channel.basic_qos(prefetch_count=5)
            channel.queue_declare(queue, passive=True)
            channel.basic_consume(queue, _collector(got[who]))
        publisher = _amqp(broker)
        try:
            out = publisher.channel()
            for i in range(20):
                out.basic_publish("", queue, f"m{i}".encode())
            deadline = time.monotonic() + 15
            while len(got["first"]) + len(got["second"]) < 20 and time.monotonic() < deadline:
                first.process_data_events(0.1)
                second.process_data_events(0.1)
            assert sorted(map(len, got.values())) == [0, 20], {k: len(v) for k, v in got.items()}
            active = "first" if got["first"] else "second"
            standby = "second" if active == "first" else "first"
            # The broker's live view: one active, one waiting consumer on the queue.
            live = [c for c in _ctl_json(broker, "list_consumers", "queue_name", "active")
                    if c["queue_name"] == queue]
            assert sorted(c["active"] for c in live) == [False, True]
            # The management API (the switch's view) shows the same once its statistics catch up
            # (they are collected every 5 s: collect_statistics_interval).
            deadline = time.monotonic() + 15
            while True:
                seen = [c["active"] for c in _api(broker, "/api/consumers") if c["queue"]["name"] == queue]
                if sorted(seen) == [False, True] or time.monotonic() > deadline:
                    break
                first.process_data_events(0.5)
                second.process_data_events(0.5)
            assert sorted(seen) == [False, True]
            # The active consumer goes away (a standby color cancels): the other one takes over.
            channels[active].close()
            got[standby].clear()
            for i in range(5):
                out.basic_publish("", queue, f"n{i}".encode())
            deadline = time.monotonic() + 15
            while len(got[standby]) < 5 and time.monotonic() < deadline:
                (second if standby == "second" else first).process_data_events(0.1)
            assert sorted(got[standby]) == [f"n{i}".encode() for i in range(5)]
        finally:
            publisher.close()
    finally:
        for connection in (first, second):
            with contextlib.suppress(Exception):
                connection.close()


def test_per_queue_metrics_for_the_backlog_alert(broker: Broker) -> None:
    """Ready messages with no consumer show on /metrics per queue (what QueueBacklogWithoutConsumer reads)."""
    queue = broker.queues[0]
    publisher = _amqp(broker)
    try:
        channel = publisher.channel()
        for i in range(7):
            channel.basic_publish("", queue, f"backlog{i}".encode())
    finally:
        publisher.close()
    deadline = time.monotonic() + 30
    metrics: dict[tuple[str, str], float] = {}
    while time.monotonic() < deadline:
        metrics = _metrics(broker)
        if metrics.get(("rabbitmq_queue_messages_ready", queue)) == 7:
            break
        time.sleep(1)
    assert metrics.get(("rabbitmq_queue_messages_ready", queue)) == 7, metrics
    assert metrics.get(("rabbitmq_queue_consumers", queue)) == 0, metrics
    for name in broker.queues:
        assert ("rabbitmq_queue_consumers", name) in metrics, name


# --------------------------------------------------------------------------- the user


def test_our_user_is_the_only_one_and_logs_in(broker: Broker) -> None:
    users = _ctl_json(broker, "list_users")
    assert [(u["user"], sorted(u["tags"])) for u in users] == [(RABBITMQ_USER, ["administrator"])]
    assert _ctl(broker, "authenticate_user", RABBITMQ_USER, broker.password)[0] == 0
    assert _ctl(broker, "authenticate_user", RABBITMQ_USER, broker.password + "x")[0] != 0
    # AMQP and the management API (the switch's handoff check) with the rendered password.
    _amqp(broker).close()
    assert _api(broker, "/api/whoami")["name"] == RABBITMQ_USER
    with pytest.raises(urllib.error.HTTPError) as refused:
        _api(broker, "/api/whoami", password="guest")
    assert refused.value.code == 401


def test_a_rotated_password_reaches_an_existing_node(broker: Broker) -> None:
    """Definitions apply at every boot: a new password works on the old data volume, the old one not."""
    new = broker.password[::-1] + "R0tated"
    content = rabbitmq_definitions(broker.queues, new).encode()
    directory, file = RABBITMQ_DEFINITIONS.rsplit("/", 1)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(file)
        info.size, info.mode, info.mtime = len(content), 0o444, int(time.time())
        archive.addfile(info, io.BytesIO(content))
    container = broker.container
    container.stop(timeout=30)
    assert container.put_archive(directory, buffer.getvalue())
    container.start()
    try:
        _wait_healthy(broker.ci, broker.rendered)
        deadline = time.monotonic() + 60
        while _ctl(broker, "authenticate_user", RABBITMQ_USER, new)[0] != 0:
            assert time.monotonic() < deadline, _ctl(broker, "authenticate_user", RABBITMQ_USER, new)
            time.sleep(1)
        assert _ctl(broker, "authenticate_user", RABBITMQ_USER, broker.password)[0] != 0
        assert {q["name"] for q in _ctl_json(broker, "list_queues", "name")} == set(broker.queues)
    finally:
        broker.password = new


def test_no_port_is_published(broker: Broker) -> None:
    assert not broker.rendered.inputs.get("ports")
    assert not broker.rendered.inputs.get("publishAllPorts")
    broker.container.reload()
    bindings = broker.container.attrs["HostConfig"].get("PortBindings") or {}
    assert bindings == {}
    networks = {n["name"].rsplit("-", 1)[-1] for n in broker.rendered.inputs["networksAdvanced"]}
    assert networks == {"backend", "metrics"}


def test_memory_watermark_is_a_share_of_the_container_limit(broker: Broker) -> None:
    """RabbitMQ does not read its cgroup limit: without an absolute watermark it allows itself
    40% of the host's memory and the kernel OOM-kills it first. The rendered conf sets it."""
    from stack.datastores import RABBITMQ_MEMORY_SHARE

    broker.container.reload()
    limit_bytes = broker.container.attrs["HostConfig"]["Memory"]
    assert limit_bytes > 0, "the rendered broker has no memory limit"
    # A node that just (re)started lists itself before its first stats sample carries mem_limit.
    deadline = time.monotonic() + 60
    while "mem_limit" not in (node := _api(broker, "/api/nodes")[0]):
        assert time.monotonic() < deadline, f"the broker never reported mem_limit: {sorted(node)}"
        time.sleep(1)
    assert node["mem_limit"] == int(limit_bytes // 2**20 * RABBITMQ_MEMORY_SHARE) * 2**20
