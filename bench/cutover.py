"""Cutover benchmark: blue -> green -> blue under sustained load, on the local Docker Engine.

    python bench/cutover.py [--requests 24000] [--concurrency 50] [--runs 3] [--keepalive]

Starts the test stack (tests/support/docker_env.py: the reference app as blue and green, the
program's generated nginx.conf in the proxy), promotes blue, then drives HTTP/1.1 load
(a new connection per request; `--keepalive` reuses connections) at the proxy's public
listener from `--concurrency` workers while the real routing code (`release.routing.switch`,
the same code the Pulumi resource and the emergency CLI run) switches to green after 25% of
the requests and back to blue after 60%.

Every response is recorded with its completion time and `X-Deployment-Color`. A request
fails if it raises (connection reset, timeout, ...) or answers anything but 200. A switch
is timed from the moment it starts until every response completing from then on carries
the new color: max(first new-color response, last old-color response) - start.

With Redis and RabbitMQ in the test stack (`docker_env(work=True)`, when tests/support/docker_env.py
offers it), each switch also hands the background work over (`handoff=`), and the handoff's
own time (publish -> the new color holds the lease and the old has no consumer) is reported.

Last line: `cutover: requests=N failed=M switch_ms=X rollback_ms=Y handoff_ms=Z` (medians over
--runs; `handoff_ms=n/a` without Redis/RabbitMQ). Exit 0 only with no failed request and
switch and rollback each under 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from release import routing  # noqa: E402
from settings import Color  # noqa: E402


@dataclass
class Load:
    """Per-response records (completion time, color or None for a failure)."""

    done: list[tuple[float, str | None]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    retries: int = 0

    def record(self, color: str | None, error: str | None = None) -> None:
        self.done.append((time.monotonic(), color))
        if error:
            self.errors[error] = self.errors.get(error, 0) + 1


@dataclass
class Switch:
    to: Color
    start: float = 0.0
    end: float = 0.0
    error: str | None = None
    steps: dict[str, float] = field(default_factory=dict)
    handoff_ms: float | None = None


#: The bar (issue 15): each median under this, with no failed request.
BAR_MS = 250.0


def handoff_target(env: Any) -> Any:
    """The stack's Redis/RabbitMQ as a HandoffTarget (the CLI's naming), or None when absent."""
    import docker.errors

    from release.handoff import HandoffTarget

    names = (f"{env.prefix}-redis", f"{env.prefix}-rabbitmq")
    try:
        for name in names:
            env.client.containers.get(name)
    except docker.errors.NotFound:
        return None
    return HandoffTarget(*names)


class Closed(Exception):
    """The server closed the connection (before or during a response)."""


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response: status, headers (lower-case names) and body."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise Closed("closed before a response" if not exc.partial else "closed mid-response") from None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += (await reader.readexactly(size + 2))[:-2]
            if size == 0:
                break
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def _worker(host: str, port: int, path: str, load: Load, budget: list[int], keepalive: bool) -> None:
    """A keep-alive HTTP/1.1 client; reconnects when the server says `Connection: close`.

    Like browsers, curl and Go's net/http (RFC 9112 section 9.3.1), a GET sent on a *reused*
    connection that the server closed before sending a single byte of response is sent
    again once on a new connection: that is the old nginx worker closing an idle keep-alive
    connection at a reload. Such retries are counted and reported; anything else that does
    not end in a 200 (a reset mid-response, a timeout, a 502/503) is a failed request.
    """
    close = "" if keepalive else "Connection: close\r\n"
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: cutover-bench\r\n{close}\r\n".encode()
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    reused = False
    while budget[0] > 0:
        budget[0] -= 1
        for attempt in (1, 2):
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
                    reused = False
                assert reader is not None and writer is not None
                writer.write(request)
                status, headers, body = await asyncio.wait_for(_read_response(reader), 10)
            except (TimeoutError, OSError, Closed, asyncio.IncompleteReadError, ValueError) as exc:
                stale = reused and isinstance(exc, (Closed, ConnectionResetError, BrokenPipeError)) and (
                    str(exc) != "closed mid-response"
                )
                if writer is not None:
                    writer.close()
                reader = writer = None
                if stale and attempt == 1:
                    load.retries += 1
                    continue
                load.record(None, f"{type(exc).__name__}: {exc}"[:80])
                break
            reused = True
            if status != 200:
                color = headers.get(routing.COLOR_HEADER.lower())
                load.record(None, f"status {status} ({color}): {body[:50]!r}")
            else:
                load.record(headers.get(routing.COLOR_HEADER.lower()))
            if not keepalive or headers.get("connection", "").lower() == "close":
                assert writer is not None
                writer.close()
                reader = writer = None
            break
    if writer is not None:
        writer.close()


def _switcher(
    env: Any, load: Load, total: int, plan: list[Switch], stop: threading.Event, handoff: Any = None
) -> None:
    """Trigger each switch when its share of the requests has completed."""
    marks = [int(total * share) for share in (0.25, 0.60)]
    for mark, step in zip(marks, plan, strict=True):
        while len(load.done) < mark and not stop.is_set():
            time.sleep(0.002)
        if stop.is_set():
            return
        preview: Color = "blue" if step.to == "green" else "green"
        step.start = time.monotonic()
        endpoint = routing.Endpoint(env.live_url)
        try:
            result = routing.switch(env.proxy_name, step.to, preview, endpoint, client=env.client,
                                    handoff=handoff)
            step.steps, step.handoff_ms = result.steps, result.handoff_ms
        except routing.RoutingError as exc:
            step.error = str(exc)
        step.end = time.monotonic()


def switch_ms(load: Load, step: Switch, old: str) -> float:
    """From the switch's start until every later response carries the new color."""
    after = [(t, c) for t, c in load.done if t >= step.start and c is not None]
    first_new = next((t for t, c in after if c == step.to), None)
    if first_new is None:
        return float("inf")
    # The next switch's window is not this one's business.
    last_old = max((t for t, c in after if c == old), default=step.start)
    return (max(first_new, last_old) - step.start) * 1000


def one_run(
    env: Any, total: int, concurrency: int, keepalive: bool = True, handoff: Any = None
) -> tuple[int, int, float, float, Load, list[Switch]]:
    routing.switch(env.proxy_name, "blue", "green", routing.Endpoint(env.live_url), client=env.client,
                   handoff=handoff)
    load = Load()
    plan = [Switch("green"), Switch("blue")]
    stop = threading.Event()
    thread = threading.Thread(target=_switcher, args=(env, load, total, plan, stop, handoff), daemon=True)
    parts = urlsplit(env.live_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80

    async def drive() -> None:
        budget = [total]
        workers = (_worker(host, port, "/health", load, budget, keepalive) for _ in range(concurrency))
        await asyncio.gather(*workers)

    started = time.monotonic()
    thread.start()
    try:
        asyncio.run(drive())
    finally:
        stop.set()
        thread.join(timeout=60)
    elapsed = time.monotonic() - started
    for step in plan:
        if step.error:
            raise SystemExit(f"cutover: switch to {step.to} failed: {step.error}")
    # Only the responses before the rollback count for the first switch.
    first = Load([(t, c) for t, c in load.done if t < plan[1].start])
    switch = switch_ms(first, plan[0], "blue")
    rollback = switch_ms(load, plan[1], "green")
    failed = sum(1 for _, c in load.done if c is None)
    print(
        f"run: requests={len(load.done)} failed={failed} rps={len(load.done) / elapsed:.0f} "
        f"switch_ms={switch:.0f} rollback_ms={rollback:.0f} "
        f"handoff_ms={'/'.join(f'{p.handoff_ms:.0f}' if p.handoff_ms is not None else 'n/a' for p in plan)} "
        f"stale-keepalive-retries={load.retries} errors={load.errors or '{}'} "
        f"steps_ms={plan[0].steps}/{plan[1].steps}",
        flush=True,
    )
    return len(load.done), failed, switch, rollback, load, plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cutover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=24000, help="requests per run (>= 20000 for the bar)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3, help="runs on one stack; the summary is the median")
    parser.add_argument("--keepalive", action="store_true",
                        help="reuse connections (a GET caught by a reload on an idle connection is "
                             "resent once, as browsers do; counted as stale-keepalive-retries). "
                             "Default: a new connection per request, so nothing is ever resent")
    args = parser.parse_args(argv)
    import inspect

    from tests.support.docker_env import docker_env

    results = []
    # Redis and RabbitMQ in the stack when the test environment can start them (issue 15, part B).
    with docker_env(work="work" in inspect.signature(docker_env).parameters) as env:
        handoff = handoff_target(env)
        moves = f"to {handoff.redis_container}" if handoff else "n/a (no Redis/RabbitMQ in the stack)"
        print(f"stack: proxy {env.proxy_name} at {env.live_url}, app image {env.app_image}, handoff {moves}",
              flush=True)
        for _ in range(args.runs):
            results.append(one_run(env, args.requests, args.concurrency, keepalive=args.keepalive,
                                   handoff=handoff))
    requests = min(r[0] for r in results)
    failed = sum(r[1] for r in results)
    switch = statistics.median(r[2] for r in results)
    rollback = statistics.median(r[3] for r in results)
    handoffs = [s.handoff_ms for r in results for s in r[5] if s.handoff_ms is not None]
    handoff_ms = f"{statistics.median(handoffs):.0f}" if handoffs else "n/a"
    print(f"cutover: requests={requests} failed={failed} switch_ms={switch:.0f} rollback_ms={rollback:.0f} "
          f"handoff_ms={handoff_ms}")
    return 0 if failed == 0 and requests >= 20000 and switch < BAR_MS and rollback < BAR_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
