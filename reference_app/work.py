"""Background work of the reference app (issue 15): a RabbitMQ consumer and a scheduler that
run only while this instance holds the work lease of the live color (contract/work.py).

Threads: a control loop (reads LIVE_KEY, takes/renews/releases the lease, starts and stops
the work; woken by the pub/sub listener, and polling every TTL/3 because pub/sub can be
missed), a consumer thread (pika's BlockingConnection is not thread-safe: every AMQP call
happens on it) and a scheduler thread. Stopping is ordered: cancel the consumers, nack
(requeue) what is unacknowledged, close the channel and connection, stop the scheduler, and
only then release the lease, so the next holder never overlaps this one.

Every effect is committed by the contract's COMMIT script (fence, then id); the fault
`ignore_lease` runs the work without the lease and commits without the fence.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from contract import work as wc

#: How long a simulated paper order takes (`WORK_PROCESS_MS`; tests slow it down to catch a
#: holder mid-message).
DEFAULT_PROCESS_MS = 2


def _log(message: str) -> None:
    print(f"work: {message}", file=sys.stderr, flush=True)


class WorkSettings:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        e = os.environ if env is None else env
        self.enabled = e.get("WORK_ENABLED", "").strip().lower() in ("1", "true", "yes", "on")
        self.queues = [q.strip() for q in e.get("WORK_QUEUES", wc.DEFAULT_QUEUE).split(",") if q.strip()]
        self.lease_ttl_ms = int(e.get("WORK_LEASE_TTL_MS") or wc.DEFAULT_LEASE_TTL_MS)
        self.prefetch = int(e.get("WORK_PREFETCH") or wc.DEFAULT_PREFETCH)
        self.tick_ms = int(e.get("WORK_TICK_MS") or wc.DEFAULT_TICK_MS)
        self.process_ms = max(0, int(e.get("WORK_PROCESS_MS") or DEFAULT_PROCESS_MS))
        self.redis_host = e.get("REDIS_HOST", "redis")
        self.redis_port = int(e.get("REDIS_PORT") or 6379)
        # The password files are read only when the work is on: a stack without Redis/RabbitMQ
        # (workers.enabled false) gives the app none.
        self.redis_password = _read(e.get("REDIS_PASSWORD_FILE")) if self.enabled else None
        self.amqp_host = e.get("RABBITMQ_HOST", "rabbitmq")
        self.amqp_port = int(e.get("RABBITMQ_PORT") or 5672)
        self.amqp_user = e.get("RABBITMQ_USER", "paper_trading")
        self.amqp_password = _read(e.get("RABBITMQ_PASSWORD_FILE")) if self.enabled else None


def _read(path: str | None) -> str | None:
    if not path:
        return None
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


class Counters:
    """The work metrics, by (metric, label value); one lock."""

    NAMES = (
        ("paper_trading_messages_processed_total", "queue"),
        ("paper_trading_messages_duplicate_total", "queue"),
        ("paper_trading_messages_redelivered_total", "queue"),
        ("paper_trading_messages_fenced_total", "queue"),
        ("paper_trading_scheduler_ticks_total", "job"),
        ("paper_trading_scheduler_duplicate_ticks_total", "job"),
    )

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[tuple[str, str], int] = {}

    def inc(self, name: str, label: str) -> None:
        with self.lock:
            self.values[(name, label)] = self.values.get((name, label), 0) + 1

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self.lock:
            return dict(self.values)


class Worker:
    """Holds the lease for the live color, and runs consumers and schedulers only then."""

    def __init__(self, color: str, settings: WorkSettings, has_fault: Callable[[str], bool]) -> None:
        import redis  # Debian's python3-redis in the image; only needed with WORK_ENABLED

        self.color = color
        self.s = settings
        self.has_fault = has_fault
        self.hostname = socket.gethostname()
        self.instance = f"{self.hostname}-{uuid.uuid4().hex[:8]}"
        self.counters = Counters()
        self.lock = threading.Lock()
        self.live_color: str | None = None
        self.live_epoch: int | None = None
        self.token: str | None = None  # the lease we hold, or None
        self.work_epoch: int | None = None
        self.consumers: list[str] = []
        self.schedulers: list[str] = []
        self.unfenced = False  # running under the ignore_lease fault
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.work_stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.redis: Any = redis.Redis(
            host=settings.redis_host, port=settings.redis_port, password=settings.redis_password,
            socket_timeout=2, socket_connect_timeout=2, decode_responses=True,
        )
        self.acquire = self.redis.register_script(wc.ACQUIRE_LEASE)
        self.release = self.redis.register_script(wc.RELEASE_LEASE)
        self.commit_script = self.redis.register_script(wc.COMMIT)

    # ------------------------------------------------------------------ reporting

    def role(self) -> str:
        with self.lock:
            running = bool(self.consumers or self.schedulers) or self.token is not None
        return wc.ROLE_ACTIVE if running else wc.ROLE_STANDBY

    def detailed(self) -> dict[str, Any]:
        with self.lock:
            return {
                "epoch": self.work_epoch if self.token or self.unfenced else self.live_epoch,
                "liveColor": self.live_color,
                "consumers": list(self.consumers),
                "schedulers": list(self.schedulers),
            }

    # ------------------------------------------------------------------ control loop

    def start(self) -> None:
        for target in (self._control, self._listen):
            thread = threading.Thread(target=target, daemon=True, name=target.__name__)
            thread.start()

    def shutdown(self) -> None:
        self.stopping.set()
        self.wake.set()
        self._stop_work()

    def _listen(self) -> None:
        while not self.stopping.is_set():
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(wc.CHANNEL)
                while not self.stopping.is_set():
                    if pubsub.get_message(timeout=1.0):
                        self.wake.set()
            except Exception as exc:  # noqa: BLE001 - reconnect on any client error
                _log(f"pub/sub: {exc}")
                time.sleep(0.5)

    def _control(self) -> None:
        period = max(0.05, self.s.lease_ttl_ms / 3000.0)
        while not self.stopping.is_set():
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - Redis down: we cannot prove the lease
                _log(f"control: {exc}; stopping the work")
                self._stop_work()
                with self.lock:
                    self.token = None
            self.wake.wait(period)
            self.wake.clear()

    def _step(self) -> None:
        live = self.redis.hgetall(wc.LIVE_KEY)
        color = live.get("color")
        epoch = int(live["epoch"]) if str(live.get("epoch", "")).isdigit() else None
        with self.lock:
            self.live_color, self.live_epoch = color, epoch
            token = self.token
        if self.has_fault("ignore_lease"):
            # The mutation the tests prove the fence against: work without the lease.
            if not any(thread.is_alive() for thread in self.threads):
                self._stop_work()
                with self.lock:
                    self.unfenced = True
                    self.work_epoch = epoch or 0
                self._start_work()
            return
        if self.unfenced:
            self._stop_work()
            with self.lock:
                self.unfenced = False
        mine = color == self.color and epoch is not None
        if token is not None:
            parsed = wc.parse_token(token)
            current = parsed is not None and mine and epoch is not None and parsed[1] == epoch
            if current and epoch is not None and self.acquire(keys=[wc.LIVE_KEY, wc.LEASE_KEY],
                                        args=[self.color, epoch, token, self.s.lease_ttl_ms]) == 1:
                if self.work_stop.is_set():  # a worker thread saw the fence: start over
                    self._drop(token)
                return
            self._drop(token)
            token = None
        if mine and epoch is not None:
            candidate = wc.make_token(self.color, epoch, self.instance)
            if self.acquire(keys=[wc.LIVE_KEY, wc.LEASE_KEY],
                            args=[self.color, epoch, candidate, self.s.lease_ttl_ms]) == 1:
                with self.lock:
                    self.token, self.work_epoch = candidate, epoch
                _log(f"holding the lease {candidate}")
                self._start_work()

    def _drop(self, token: str) -> None:
        """Stop all work (consumers cancelled, unacked requeued, channel closed), then release."""
        self._stop_work()
        with self.lock:
            self.token = None
        try:
            if self.release(keys=[wc.LEASE_KEY], args=[token]) == 1:
                self.redis.publish(wc.CHANNEL, f"released:{token}")  # wakes the next holder now
        finally:
            _log(f"released the lease {token}")

    # ------------------------------------------------------------------ work threads

    def _start_work(self) -> None:
        self.work_stop.clear()
        self.threads = [
            threading.Thread(target=self._consume, daemon=True, name="consumer"),
            threading.Thread(target=self._schedule, daemon=True, name="scheduler"),
        ]
        for thread in self.threads:
            thread.start()

    def _stop_work(self) -> None:
        self.work_stop.set()
        for thread in self.threads:
            thread.join(timeout=10)
        self.threads = []
        with self.lock:
            self.consumers, self.schedulers = [], []

    def _commit(self, record: str, item: str, redelivered: bool) -> str:
        with self.lock:
            token, epoch, unfenced = self.token, self.work_epoch or 0, self.unfenced
        value = wc.record_value(self.color, epoch)
        if unfenced:
            if self.redis.hsetnx(record, item, value):
                return wc.COMMIT_OK
            if not redelivered:
                self.redis.rpush(wc.DUPLICATES_KEY, f"{item}|{self.redis.hget(record, item)}|{value}")
            return wc.COMMIT_DUPLICATE
        if token is None:
            return wc.COMMIT_FENCED
        return str(self.commit_script(keys=[wc.LEASE_KEY, record, wc.DUPLICATES_KEY],
                                      args=[token, item, value, "1" if redelivered else "0"]))

    def _consume(self) -> None:
        import pika  # Debian's python3-pika in the image

        params = pika.ConnectionParameters(
            host=self.s.amqp_host, port=self.s.amqp_port,
            credentials=pika.PlainCredentials(self.s.amqp_user, self.s.amqp_password or ""),
            client_properties={"connection_name": wc.connection_name(self.color, self.hostname)},
            heartbeat=10, blocked_connection_timeout=5, connection_attempts=1, socket_timeout=3,
        )
        while not self.work_stop.is_set():
            try:
                connection = pika.BlockingConnection(params)
            except Exception as exc:  # noqa: BLE001 - broker not up yet: retry while we hold the lease
                _log(f"amqp connect: {exc}")
                self.work_stop.wait(0.5)
                continue
            try:
                self._consume_on(connection)
            except Exception as exc:  # noqa: BLE001 - connection lost: unacked messages go back
                _log(f"amqp: {exc}")
            finally:
                with self.lock:
                    self.consumers = []
                try:
                    if connection.is_open:
                        connection.close()
                except Exception:  # noqa: BLE001, S110 - already gone
                    pass

    def _consume_on(self, connection: Any) -> None:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=self.s.prefetch)
        tags = []
        for queue in self.s.queues:
            channel.queue_declare(queue=queue, passive=True)  # the stack's definitions declare it

            def on_message(ch: Any, method: Any, _props: Any, body: bytes, queue: str = queue) -> None:
                self._on_message(ch, method, body, queue)

            tag = f"{wc.connection_name(self.color, self.hostname)}-{queue}"
            tags.append(channel.basic_consume(queue=queue, on_message_callback=on_message, consumer_tag=tag))
            with self.lock:
                self.consumers.append(queue)
        while not self.work_stop.is_set():
            connection.process_data_events(time_limit=0.05)
        # Standing down: cancel, requeue what is unacked, close.
        for tag in tags:
            channel.basic_cancel(tag)
        with self.lock:
            self.consumers = []
        channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
        channel.close()
        connection.close()

    def _on_message(self, ch: Any, method: Any, body: bytes, queue: str) -> None:
        if self.work_stop.is_set():
            ch.basic_nack(delivery_tag=method.delivery_tag, requeue=True)
            return
        try:
            doc = json.loads(body)
            item = str(doc["id"])
        except (ValueError, KeyError, TypeError):
            _log(f"dropping a message without an id on {queue}")
            ch.basic_ack(delivery_tag=method.delivery_tag)
            return
        time.sleep(self.s.process_ms / 1000.0)  # a simulated paper order
        result = self._commit(wc.PROCESSED_KEY, item, bool(method.redelivered))
        if result == wc.COMMIT_OK:
            self.counters.inc("paper_trading_messages_processed_total", queue)
        elif result == wc.COMMIT_DUPLICATE:
            kind = "redelivered" if method.redelivered else "duplicate"
            self.counters.inc(f"paper_trading_messages_{kind}_total", queue)
        else:
            self.counters.inc("paper_trading_messages_fenced_total", queue)
            ch.basic_nack(delivery_tag=method.delivery_tag, requeue=True)
            self.work_stop.set()  # not the holder any more: the control loop stands down
            self.wake.set()
            return
        ch.basic_ack(delivery_tag=method.delivery_tag)

    def _schedule(self) -> None:
        with self.lock:
            self.schedulers = [wc.JOB_STRATEGY_TICK, wc.JOB_EOD_PNL]
        last: dict[str, str] = {}
        try:
            while not self.work_stop.is_set():
                now_ms = int(time.time() * 1000)
                slots = {wc.JOB_STRATEGY_TICK: wc.tick_slot(wc.JOB_STRATEGY_TICK, now_ms, self.s.tick_ms)}
                if time.gmtime(now_ms / 1000).tm_hour >= 21:  # after the US close: one P&L a day
                    slots[wc.JOB_EOD_PNL] = f"{wc.JOB_EOD_PNL}:{time.strftime('%Y-%m-%d', time.gmtime())}"
                for job, slot in slots.items():
                    if last.get(job) == slot:
                        continue
                    # The first slot after taking over may be the one the previous holder just
                    # ran: like a broker redelivery, already there is expected, not a duplicate.
                    first = job not in last
                    last[job] = slot
                    result = self._commit(wc.TICKS_KEY, slot, first)
                    if result == wc.COMMIT_OK:
                        self.counters.inc("paper_trading_scheduler_ticks_total", job)
                    elif result == wc.COMMIT_DUPLICATE:
                        # Expected for the first slot (the previous holder's); a duplicate otherwise.
                        if not first:
                            self.counters.inc("paper_trading_scheduler_duplicate_ticks_total", job)
                    else:  # fenced: not the holder any more
                        self.work_stop.set()
                        self.wake.set()
                        return
                wait_ms = self.s.tick_ms - now_ms % max(1, self.s.tick_ms)
                self.work_stop.wait(max(0.01, wait_ms / 1000.0))
        except Exception as exc:  # noqa: BLE001 - Redis lost: stand down
            _log(f"scheduler: {exc}")
            self.work_stop.set()
            self.wake.set()
        finally:
            with self.lock:
                self.schedulers = []

    def metrics(self) -> list[str]:
        active = 1 if self.role() == wc.ROLE_ACTIVE else 0
        with self.lock:
            epoch = self.work_epoch if self.work_epoch is not None else (self.live_epoch or 0)
        lines = [
            "# HELP paper_trading_worker_active 1 while this color runs background work.",
            "# TYPE paper_trading_worker_active gauge",
            f'paper_trading_worker_active{{color="{self.color}"}} {active}',
            "# TYPE paper_trading_worker_epoch gauge",
            f'paper_trading_worker_epoch{{color="{self.color}"}} {epoch}',
        ]
        values = self.counters.snapshot()
        for name, label in Counters.NAMES:
            lines.append(f"# TYPE {name} counter")
            keys = sorted(k for k in values if k[0] == name)
            defaults = self.s.queues if label == "queue" else [wc.JOB_STRATEGY_TICK, wc.JOB_EOD_PNL]
            seen = {k[1] for k in keys}
            for value in defaults:
                if value not in seen:
                    lines.append(f'{name}{{color="{self.color}",{label}="{value}"}} 0')
            for key in keys:
                lines.append(f'{name}{{color="{self.color}",{label}="{key[1]}"}} {values[key]}')
        return lines
