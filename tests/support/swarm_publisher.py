"""Publishes numbered orders to the work queue from inside the lab swarm (a one-off service on the
data node, tests/support/swarm_work.py): `<RUN>-<i>` for i < COUNT at PER_S a second, each
confirmed by the broker (publisher confirms), then prints `published=<COUNT>`. Any failure exits 1
with `error=...`: the test counts only what the broker confirmed. With MODE=consume it is a
consumer of another program instead (tag `reporting-tool-1`, nothing acknowledged), until stopped:
what the handoff must refuse to count as the live color's.

Runs in the reference app's image (its python3-pika); the password is the apps' own secret file.
"""

from __future__ import annotations

import json
import os
import sys
import time

import pika


def main() -> int:
    run, count, per_s = os.environ["RUN"], int(os.environ["COUNT"]), float(os.environ["PER_S"])
    queue = os.environ.get("QUEUE", "paper-trading.orders")
    with open(os.environ["PASSWORD_FILE"], encoding="utf-8") as handle:
        password = handle.read().strip()
    credentials = pika.PlainCredentials("trading", password)
    params = pika.ConnectionParameters(host="rabbitmq", credentials=credentials, heartbeat=10,
                                       connection_attempts=30, retry_delay=1)
    try:
        connection = pika.BlockingConnection(params)
        channel = connection.channel()
        if os.environ.get("MODE") == "consume":
            channel.basic_consume(queue, lambda *_: None, consumer_tag="reporting-tool-1")
            print("consuming", flush=True)
            channel.start_consuming()
        channel.confirm_delivery()
        began = time.monotonic()
        for i in range(count):
            body = json.dumps({"id": f"{run}-{i:05d}", "side": "buy", "qty": 1}).encode()
            channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2), mandatory=True)
            ahead = (i + 1) / per_s - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
        connection.close()
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        print(f"error={exc!r}", flush=True)
        return 1
    print(f"published={count}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
