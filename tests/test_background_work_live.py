"""Background work moves with the handoff, exactly once (issue 15, part B), on real parts:
Redis and RabbitMQ from the ci images (paper-trading-ci/redis:7.0, paper-trading-ci/rabbitmq:3.10),
the reference app as blue and green (python3 -m reference_app, Debian's python3-pika/-redis),
and the real `components.handoff.hand_over` (docker exec in the two containers).

Not yet the full bar of the brief (docker_env(work=True), the real traffic switch under HTTP load,
>= 10,000 messages): see the part B report.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components import work_contract as wc
from components.handoff import HandoffTarget, hand_over
from tests.fakes.validation_servers import PYTHON3, ROOT, free_port, wait_port
from tests.support import missing, require_docker, stop_process

pytestmark = pytest.mark.docker
redis_lib = pytest.importorskip("redis")
pika = pytest.importorskip("pika")

PASSWORD = "work-test-" + uuid.uuid4().hex[:12]
QUEUE = wc.DEFAULT_QUEUE
MESSAGES = 3000


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


def _port(name: str, inner: int) -> int:
    return int(_docker("port", name, f"{inner}/tcp").splitlines()[0].rpartition(":")[2])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_docker()
    for image in ("paper-trading-ci/redis:7.0", "paper-trading-ci/rabbitmq:3.10"):
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
            missing(f"{image} is not built (scripts/build-test-images --ci)")
    folder: Path = tmp_path_factory.mktemp("work")
    (folder / "redis.conf").write_text(f"requirepass {PASSWORD}\n")
    (folder / "rabbit.conf").write_text(f"default_user = trading\ndefault_pass = {PASSWORD}\n")
    (folder / "plugins").write_text("[rabbitmq_management].\n")
    (folder / "password").write_text(PASSWORD + "\n")
    for f in folder.iterdir():
        f.chmod(0o644)
    tag = uuid.uuid4().hex[:6]
    redis_name, rabbit_name = f"b15-redis-{tag}", f"b15-rabbit-{tag}"
    try:
        _docker("run", "-d", "--name", redis_name, "-p", "127.0.0.1::6379",
                "-v", f"{folder / 'redis.conf'}:/run/secrets/redis.conf:ro",
                "paper-trading-ci/redis:7.0", "redis-server", "/run/secrets/redis.conf")
        _docker("run", "-d", "--name", rabbit_name, "-p", "127.0.0.1::5672",
                "-v", f"{folder / 'rabbit.conf'}:/etc/rabbitmq/conf.d/20-paper-trading.conf:ro",
                "-v", f"{folder / 'plugins'}:/etc/paper-trading/enabled_plugins:ro",
                "-e", "RABBITMQ_ENABLED_PLUGINS_FILE=/etc/paper-trading/enabled_plugins",
                "paper-trading-ci/rabbitmq:3.10")
        redis_port, amqp_port = _port(redis_name, 6379), _port(rabbit_name, 5672)
        r = redis_lib.Redis(port=redis_port, password=PASSWORD, decode_responses=True)
        deadline = time.monotonic() + 120
        channel = None
        while channel is None:
            try:
                r.ping()
                conn = pika.BlockingConnection(pika.ConnectionParameters(
                    port=amqp_port, credentials=pika.PlainCredentials("trading", PASSWORD)))
                channel = conn.channel()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        # What the stack's RabbitMQ definitions declare (the apps only declare passively).
        channel.queue_declare(QUEUE, durable=True, arguments={"x-single-active-consumer": True})
        conn.close()
        yield {"redis": r, "redis_port": redis_port, "amqp_port": amqp_port, "folder": folder,
               "target": HandoffTarget(redis_name, rabbit_name, timeout_s=15)}
    finally:
        subprocess.run(["docker", "rm", "-f", redis_name, rabbit_name], capture_output=True)


class App:
    def __init__(self, stack: dict[str, Any], color: str, faults: str = "") -> None:
        self.color, self.port = color, free_port()
        env = {"PATH": "/usr/bin:/bin", "FAULTS": faults, "WORK_ENABLED": "true", "WORK_QUEUES": QUEUE,
               "WORK_LEASE_TTL_MS": "1500", "WORK_TICK_MS": "100",
               "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(stack["redis_port"]),
               "REDIS_PASSWORD_FILE": str(stack["folder"] / "password"),
               "RABBITMQ_HOST": "127.0.0.1", "RABBITMQ_PORT": str(stack["amqp_port"]),
               "RABBITMQ_USER": "trading", "RABBITMQ_PASSWORD_FILE": str(stack["folder"] / "password")}
        self.log = stack["folder"] / f"{color}-{self.port}.log"
        self.proc = subprocess.Popen(
            [PYTHON3, "-m", "reference_app", "--host", "127.0.0.1", "--port", str(self.port),
             "--color", color],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log.open("w"))
        wait_port(self.port)

    def detailed(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health/detailed", timeout=5) as resp:
            return dict(json.loads(resp.read()))

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        lines = text.splitlines()
        return sum(float(line.rpartition(" ")[2]) for line in lines if line.startswith(name + "{"))

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)


def _publish(port: int, ids: list[str]) -> None:
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        port=port, credentials=pika.PlainCredentials("trading", PASSWORD)))
    channel = conn.channel()
    for item in ids:
        channel.basic_publish("", QUEUE, json.dumps({"id": item, "side": "buy", "qty": 1}).encode(),
                              pika.BasicProperties(delivery_mode=2))
    conn.close()


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def test_work_moves_with_the_handoff_exactly_once(stack: dict[str, Any]) -> None:
    r = stack["redis"]
    r.flushall()
    blue, green = App(stack, "blue"), App(stack, "green")
    results = []
    try:
        # Nothing published yet: both stand by, neither consumes.
        time.sleep(1)
        assert [blue.detailed()["role"], green.detailed()["role"]] == ["standby", "standby"]
        results.append(hand_over(stack["target"], "blue", None))
        ids = [f"order-{i}" for i in range(MESSAGES)]
        third = MESSAGES // 3
        _publish(stack["amqp_port"], ids[:third])
        assert green.detailed()["consumers"] == []  # the candidate holds nothing before promotion
        results.append(hand_over(stack["target"], "green", "blue"))
        green_epoch = results[-1].epoch
        assert blue.detailed()["consumers"] == [] and results[-1].consumers.get("blue") == 0
        _publish(stack["amqp_port"], ids[third:2 * third])
        # Crash the holder (no release, no requeue by the app): the lease expires, the broker
        # requeues the unacked messages; a new green instance takes over the same epoch.
        green.proc.kill()
        green.proc.wait()
        green = App(stack, "green")
        _publish(stack["amqp_port"], ids[2 * third:])
        results.append(hand_over(stack["target"], "blue", "green"))
        _wait(lambda: r.hlen(wc.PROCESSED_KEY) >= MESSAGES, 90, f"{MESSAGES} messages committed")
        processed = r.hgetall(wc.PROCESSED_KEY)
        assert set(processed) == set(ids)  # none missing, nothing else
        assert r.lrange(wc.DUPLICATES_KEY, 0, -1) == []  # no id, no slot committed twice
        green_before = [i for i, v in processed.items()
                        if v.startswith("green:") and int(v[6:]) < green_epoch]
        assert green_before == []
        ticks = r.hgetall(wc.TICKS_KEY)
        assert ticks and {v.split(":")[0] for v in ticks.values()} == {"blue", "green"}
        assert blue.metric("paper_trading_scheduler_duplicate_ticks_total") == 0
        assert green.metric("paper_trading_scheduler_duplicate_ticks_total") == 0
        print("handoff_ms=" + ",".join(str(x.handoff_ms) for x in results))
    finally:
        blue.stop()
        green.stop()


def test_without_the_lease_check_duplicates_appear(stack: dict[str, Any]) -> None:
    """The mutation: the candidate ignores the lease; its scheduler ticks collide with the live one's."""
    r = stack["redis"]
    r.flushall()
    blue, green = App(stack, "blue"), App(stack, "green", faults="ignore_lease")
    try:
        hand_over(stack["target"], "blue", None)
        _wait(lambda: r.llen(wc.DUPLICATES_KEY) > 0, 10, "a duplicate tick")
        assert green.detailed()["role"] == "active"
        assert green.metric("paper_trading_scheduler_duplicate_ticks_total") \
            + blue.metric("paper_trading_scheduler_duplicate_ticks_total") > 0
    finally:
        blue.stop()
        green.stop()
