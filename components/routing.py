"""The blue/green switch: a resource that owns which color the live proxy serves.

The proxy reaches both colors by their DNS aliases; which one is live is the
routing include inside the running proxy container (see `nginx/routing.py`).
This module writes that file, checks it with `nginx -t`, reloads nginx
gracefully, confirms through the public listener that responses carry the new
`X-Deployment-Color`, and runs the post-promotion checks; if the checks fail it
switches straight back and fails. A refused file is restored before anything
reloads, so traffic never sees it.

The same code serves three callers: the Pulumi dynamic resource (`Routing`), the
emergency CLI (`python -m components.routing switch --to blue --container X`)
for when the engine is unavailable, and the Docker tests and benchmark.

Dynamic providers are pickled with dill, so the provider class is small, refers
to module-level functions, and creates every client inside its methods.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pulumi
import pulumi.dynamic as dyn

from .audit import ACTOR_ENV, Auditor, Operation
from .config import Color
from .nginx.conf import CONF_PATH, NginxPaths
from .nginx.routing import ROUTING_DIR, ROUTING_PATH, render_routing

COLOR_HEADER = "X-Deployment-Color"
NGINX_PID = NginxPaths().pid
#: The value the live listener reports while nothing is promoted.
NONE = "none"
#: Consecutive fresh-connection responses that must show the new color, over at least
#: CONFIRM_SETTLE_S seconds (longer than nginx's 100 ms old/new worker overlap on a reload).
CONFIRM_STREAK = 3
CONFIRM_SETTLE_S = 0.3
#: Inputs whose change re-applies the routing (nothing ever forces a replace).
#: Marks the switch among dynamic resources (the `promotion-gated` policy looks for it).
SWITCH_KIND = "paper-trading:routing-switch"
SWITCH_INPUTS = ("liveColor", "previewColor", "proxyContainerId", "proxyContainerName", "renderedFiles")

_MAP_RE = re.compile(r'map \$host \$live_color \{ default "(blue|green|none)"; \}')


class RoutingError(Exception):
    """A switch that did not happen (or was undone); the message says which and why."""


@dataclass(frozen=True)
class Endpoint:
    """Where the switch is confirmed and checked: the proxy's public listener."""

    url: str
    ca_file: str | None = None
    insecure: bool = False
    host_header: str | None = None
    probe_path: str = "/health"

    def verify(self) -> bool | str:
        if self.insecure:
            return False
        return self.ca_file or True


@dataclass(frozen=True)
class SwitchResult:
    live: Color
    preview: Color | None
    previous_live: str | None
    switch_ms: float
    #: Milliseconds per step (read, write_test_reload, confirm), for the benchmark and logs.
    steps: dict[str, float] = field(default_factory=dict)


#: (endpoint, color) -> failure messages; empty means the checks passed.
Checker = Callable[[Endpoint, Color], list[str]]


# --------------------------------------------------------------------------- docker side


def docker_client() -> Any:
    """The engine the docker provider uses: honours DOCKER_HOST, DOCKER_TLS_VERIFY, ..."""
    import docker

    return docker.from_env(timeout=30)


def find_proxy(client: Any, name: str) -> Any:
    """The running proxy container, or a RoutingError that says what to do."""
    import docker.errors

    try:
        container = client.containers.get(name)
    except docker.errors.NotFound:
        raise RoutingError(
            f"proxy container {name!r} not found on the Docker Engine; deploy the proxy first "
            "(pulumi up) or pass the right --container name"
        ) from None
    if container.status != "running":
        raise RoutingError(f"proxy container {name!r} is {container.status}, not running; traffic unchanged")
    return container


def read_file(container: Any, path: str) -> str | None:
    """A text file from the container, or None when it does not exist."""
    import docker.errors

    try:
        chunks, _ = container.get_archive(path)
    except docker.errors.NotFound:
        return None
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
        member = archive.next()
        handle = archive.extractfile(member) if member is not None else None
        return handle.read().decode() if handle is not None else None


def write_file(container: Any, path: str, content: str) -> None:
    """Put `content` at `path` (a volume path: the proxy's rootfs is read-only)."""
    directory, _, name = path.rpartition("/")
    data = content.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        info.mtime = int(time.time())
        archive.addfile(info, io.BytesIO(data))
    if not container.put_archive(directory or "/", buffer.getvalue()):
        raise RoutingError(f"could not write {path} into {container.name}")


_TEST_FAILED = 3
_LOCKED = 4
#: A switch holds the lock for its whole run (write, reload, confirm, post-promotion checks,
#: switch back); one older than this was abandoned (its process died) and may be taken over.
LOCK_STALE_S = 180
#: How long a switch waits for another one to finish before it gives up, traffic unchanged.
LOCK_WAIT_S = 60.0
#: As root without any capability (the container drops ALL): enough to replace a file in
#: the root-owned config volume by rename, never to touch nginx. Prints the old file.
#: First takes the switch lock (mkdir is atomic), so a `pulumi up` and the emergency CLI
#: never interleave their writes; re-entrant for its owner (a switch back), exit 4 if held.
_SWAP_SCRIPT = f"""set -e
cd {ROUTING_DIR}
now=$(date +%s)
if mkdir .switch.lock 2>/dev/null; then
  echo "$ROUTING_OWNER $now" > .switch.lock/owner
else
  holder=unknown; since=0
  read -r holder since < .switch.lock/owner 2>/dev/null || true
  # Owner not written yet (taken a moment ago) or unreadable: the lock directory's age counts.
  case "$since" in ''|*[!0-9]*|0) since=$(stat -c %Y .switch.lock 2>/dev/null || echo "$now");; esac
  if [ "$holder" != "$ROUTING_OWNER" ]; then
    age=$((now - since))
    if [ "$age" -lt {LOCK_STALE_S} ]; then echo "$holder $age"; exit {_LOCKED}; fi
    echo "$ROUTING_OWNER $now" > .switch.lock/owner
  fi
fi
if [ -f routing.conf ]; then cat routing.conf > .routing.conf.previous; else : > .routing.conf.previous; fi
printf '%s' "$ROUTING_CONTENT" > .routing.conf.next
chmod 0444 .routing.conf.next
mv -f .routing.conf.next routing.conf
cat .routing.conf.previous
"""
_RELEASE_SCRIPT = f"""cd {ROUTING_DIR} || exit 0
read -r holder since < .switch.lock/owner 2>/dev/null || exit 0
if [ "$holder" = "$ROUTING_OWNER" ]; then rm -rf .switch.lock; fi
"""


class _Locked(Exception):
    """Another switch holds the proxy's switch lock."""


def lock_owner() -> str:
    """Who is switching, as recorded in the lock: host, process and a nonce."""
    import os
    import socket
    import uuid

    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def _text(data: bytes | None) -> str:
    return data.decode(errors="replace") if data else ""


def _exec(
    container: Any, script: str, user: str = "", env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run a shell script in the container: (exit code, stdout, stderr)."""
    result = container.exec_run(["sh", "-c", script], user=user, environment=env, demux=True)
    out, err = result.output if result.output else (None, None)
    return int(result.exit_code), _text(out), _text(err).strip()


def _swap(container: Any, content: str, owner: str) -> str | None:
    """Put `content` in place as the routing file (atomic rename); return the previous file.

    One exec round trip, which also takes the switch lock for `owner`. Falls back to the
    archive API where the exec cannot (no `sh`, another owner): slower, same result, no lock.
    """
    import docker.errors

    try:
        code, out, _ = _exec(
            container, _SWAP_SCRIPT, user="0", env={"ROUTING_CONTENT": content, "ROUTING_OWNER": owner}
        )
    except docker.errors.APIError as exc:
        raise RoutingError(f"cannot exec in {container.name}: {exc}; traffic unchanged") from None
    if code == 0:
        return out or None
    if code == _LOCKED:
        raise _Locked(out.strip())
    previous = read_file(container, ROUTING_PATH)
    write_file(container, ROUTING_PATH, content)
    return previous


def _release(container: Any, owner: str) -> None:
    """Drop the switch lock if `owner` still holds it (best effort: it goes stale anyway)."""
    with contextlib.suppress(Exception):
        _exec(container, _RELEASE_SCRIPT, user="0", env={"ROUTING_OWNER": owner})


def _test_and_reload(container: Any) -> tuple[int, str]:
    """`nginx -t`, then a graceful reload (SIGHUP to the master) only if the test passed.

    One exec round trip, as the container's own user (the master's uid may signal it).
    Exit code _TEST_FAILED means the test refused the config and nothing was reloaded.
    """
    nginx = f"nginx -e stderr -c {CONF_PATH}"
    script = (
        f"{nginx} -t 2>&1 || exit {_TEST_FAILED}; "
        f'kill -HUP "$(cat {NGINX_PID} 2>/dev/null)" 2>/dev/null || {nginx} -s reload 2>&1'
    )
    code, out, err = _exec(container, script)
    return code, (out + err).strip()


def live_color_of(content: str | None) -> str | None:
    """The live color a routing file selects (`blue`, `green`, `none`), or None if unreadable."""
    match = _MAP_RE.search(content or "")
    return match.group(1) if match else None


# --------------------------------------------------------------------------- listener side


def _fresh_client(endpoint: Endpoint, timeout: float = 2.0) -> Any:
    """An HTTP client that opens a new connection per request (no keep-alive reuse),
    so every probe is accepted by the current generation of nginx workers."""
    import httpx

    headers = {"Host": endpoint.host_header} if endpoint.host_header else {}
    return httpx.Client(
        verify=endpoint.verify(), timeout=timeout, follow_redirects=False, headers=headers,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def observe(endpoint: Endpoint, client: Any = None) -> str | None:
    """`X-Deployment-Color` of one fresh-connection request to the listener (None if no answer)."""
    import httpx

    owned = client is None
    client = client or _fresh_client(endpoint)
    try:
        response = client.get(endpoint.url.rstrip("/") + endpoint.probe_path)
    except httpx.HTTPError:
        return None
    finally:
        if owned:
            client.close()
    color: str | None = response.headers.get(COLOR_HEADER)
    return color


def confirm(endpoint: Endpoint, expected: str, deadline_s: float = 15.0) -> float:
    """Poll until fresh requests carry `expected` without a break for CONFIRM_SETTLE_S; seconds taken.

    Not just the first new-color answer: on a reload nginx starts the new workers and
    only ~100 ms later tells the old ones to stop accepting, so for a moment both answer.
    Any other color inside the window restarts it.
    """
    start = time.monotonic()
    streak, since, seen = 0, 0.0, None
    with _fresh_client(endpoint) as client:
        while time.monotonic() - start < deadline_s:
            seen = observe(endpoint, client)
            now = time.monotonic()
            if seen != expected:
                streak = 0
                time.sleep(0.01)
                continue
            streak, since = streak + 1, since if streak else now
            if streak >= CONFIRM_STREAK and now - since >= CONFIRM_SETTLE_S:
                return now - start
    raise RoutingError(
        f"{endpoint.url} did not report {COLOR_HEADER}: {expected} within {deadline_s:g}s (last seen: {seen})"
    )


#: Blocking categories run after a promotion (the gate already ran the rest on the preview).
POST_PROMOTION_CATEGORIES = ("health", "safety")
#: The public listener answers 404 on the app's /metrics by design (Prometheus scrapes it on
#: the monitoring network), so checks that read /metrics cannot run through it.
PUBLIC_LISTENER_SKIPS = frozenset({"health.metrics", "safety.metrics"})


def validation_checks(endpoint: Endpoint, color: Color) -> list[str]:
    """The validation module's blocking health and safety checks, through the public listener.

    Returns one line per failed blocking check (empty: all passed).
    """
    import asyncio
    import concurrent.futures

    from validation.options import ValidationOptions
    from validation.runner import applicable, run_checks

    probe = ValidationOptions(base_url=endpoint.url)
    skip = {
        item.name for item, _ in applicable(probe)
        if item.category.value not in POST_PROMOTION_CATEGORIES or item.name in PUBLIC_LISTENER_SKIPS
    }
    options = ValidationOptions(
        base_url=endpoint.url, color=color, ca_file=endpoint.ca_file, insecure=endpoint.insecure,
        server_name=endpoint.host_header, skip=frozenset(skip),
    )
    # A fresh event loop in a worker thread: safe whether or not the caller runs one.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        results, _, _ = pool.submit(asyncio.run, run_checks(options)).result()
    return [f"{r.name}: {r.message}" for r in results if r.blocking and r.status == "failed"]


# --------------------------------------------------------------------------- the switch


def _apply(container: Any, content: str, owner: str) -> str | None:
    """Swap in `content`, test, reload; return the previous file.

    A refused file is replaced by the previous one before anything reloads, and the
    error carries nginx's own message.
    """
    previous = _swap(container, content, owner)
    code, output = _test_and_reload(container)
    if code != 0:
        if previous is not None:
            _swap(container, previous, owner)
        if code == _TEST_FAILED:
            raise RoutingError(
                f"nginx refused the new routing (previous file restored, traffic unchanged):\n{output}"
            )
        raise RoutingError(f"nginx reload failed (previous file restored):\n{output}")
    return previous


def _apply_locked(container: Any, content: str, owner: str, wait_s: float) -> str | None:
    """`_apply` once the switch lock is free: waits up to `wait_s` for another switch to end."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return _apply(container, content, owner)
        except _Locked as held:
            if time.monotonic() >= deadline:
                holder, _, age = str(held).partition(" ")
                raise RoutingError(
                    f"another switch ({holder}, started {age or '?'}s ago) holds the lock on "
                    f"{container.name}; waited {wait_s:g}s, traffic unchanged. It is released when that "
                    f"switch ends, and treated as abandoned after {LOCK_STALE_S}s"
                ) from None
            time.sleep(0.2)


def switch(
    container_name: str,
    live: Color,
    preview: Color | None,
    endpoint: Endpoint | None,
    checker: Checker | None = None,
    client: Any = None,
    content: str | None = None,
    lock_wait_s: float = LOCK_WAIT_S,
    audit: Auditor | None = None,
    operation: Operation = "switch",
) -> SwitchResult:
    """Make `live` the live color of the proxy `container_name`, or fail leaving the old one.

    `endpoint` None skips the confirmation (only when no listener is reachable from here);
    `checker` None skips the post-promotion checks. `content` overrides the rendered file
    (tests use it to hand nginx a broken one). Switches on one proxy run one at a time:
    this one waits up to `lock_wait_s` for another to finish.

    `audit`: one `operation` record (ok; refused when nothing changed; failed when it was
    undone or broke), plus one `rollback` record when a failed confirmation or failed
    post-promotion checks switched back.
    """
    start = time.monotonic()
    steps: dict[str, float] = {}
    seen: dict[str, Any] = {"from": None, "applied": False}

    def lap(name: str) -> None:
        steps[name] = round((time.monotonic() - start) * 1000 - sum(steps.values()), 1)

    def since_start() -> float:
        return (time.monotonic() - start) * 1000

    def rollback(container: Any, previous: str | None, endpoint: Endpoint, previous_live: str | None,
                 owner: str) -> None:
        """Switch back, and record the rollback (one record, ok or failed)."""
        began = time.monotonic()
        try:
            _revert(container, previous, endpoint, previous_live, owner)
        except Exception as exc:
            if audit is not None:
                audit.record("rollback", "failed", (time.monotonic() - began) * 1000, from_=live,
                             to=previous_live, error=str(exc))
            raise
        if audit is not None:
            audit.record("rollback", "ok", (time.monotonic() - began) * 1000, from_=live, to=previous_live)

    try:
        container = find_proxy(client or docker_client(), container_name)
        lap("find")
        owner = lock_owner()
        rendered = content if content is not None else render_routing(live, preview)
        try:
            previous = _apply_locked(container, rendered, owner, lock_wait_s)
            previous_live = live_color_of(previous)
            seen.update({"from": previous_live, "applied": True})
            lap("swap_test_reload")
            if endpoint is not None:
                try:
                    confirm(endpoint, live)
                except RoutingError as exc:
                    rollback(container, previous, endpoint, previous_live, owner)
                    raise RoutingError(f"{exc}; switched back to {previous_live}") from None
                lap("confirm")
            elapsed_ms = (time.monotonic() - start) * 1000
            if checker is not None and endpoint is not None:
                failures = checker(endpoint, live)
                if failures:
                    rollback(container, previous, endpoint, previous_live, owner)
                    raise RoutingError(
                        f"post-promotion checks failed on {live}; switched back to {previous_live}:\n  "
                        + "\n  ".join(failures)
                    )
        finally:
            _release(container, owner)
    except Exception as exc:
        if audit is not None:
            # Refused: nothing changed (nginx refused the file, the lock was held, no proxy).
            refused = isinstance(exc, RoutingError) and not seen["applied"]
            audit.record(operation, "refused" if refused else "failed", since_start(), from_=seen["from"],
                         to=live, error=str(exc))
        raise
    if audit is not None:
        audit.record(operation, "ok", since_start(), from_=previous_live, to=live)
    return SwitchResult(live, preview, previous_live, elapsed_ms, steps)


def _revert(
    container: Any, previous: str | None, endpoint: Endpoint, previous_live: str | None, owner: str
) -> None:
    """Put the previous routing back at once (best effort confirm: the caller fails anyway)."""
    if previous is None:
        return
    _apply(container, previous, owner)
    if previous_live is not None:
        with contextlib.suppress(RoutingError):
            confirm(endpoint, previous_live, deadline_s=5.0)


def current(container_name: str, client: Any = None) -> str:
    """The routing file the proxy serves from now."""
    container = find_proxy(client or docker_client(), container_name)
    return read_file(container, ROUTING_PATH) or ""


# --------------------------------------------------------------------------- Pulumi resource


def _endpoint(props: dict[str, Any]) -> Endpoint | None:
    url = props.get("publicUrl")
    if not url:
        return None
    return Endpoint(
        url=str(url), ca_file=props.get("caFile") or None, insecure=bool(props.get("insecure")),
        host_header=props.get("hostHeader") or None, probe_path=str(props.get("probePath") or "/health"),
    )


def _apply_props(props: dict[str, Any]) -> dict[str, Any]:
    from .audit import AuditTarget

    live = cast(Color, props["liveColor"])
    preview = cast(Color | None, props.get("previewColor") or None)
    result = switch(
        str(props["proxyContainerName"]), live, preview, _endpoint(props),
        checker=validation_checks if props.get("postPromotionChecks", True) else None,
        audit=Auditor.for_target(AuditTarget.from_props(props.get("audit"))),
    )
    return {**props, "previousLiveColor": result.previous_live, "switchMs": round(result.switch_ms, 1)}


class RoutingProvider(dyn.ResourceProvider):
    """CRUD for the routing choice; diff never asks for a replace."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> dyn.CreateResult:
        outs = _apply_props(props)
        return dyn.CreateResult(id_=f"{props['proxyContainerName']}-routing", outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.DiffResult:
        changed = [key for key in SWITCH_INPUTS if olds.get(key) != news.get(key)]
        return dyn.DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> dyn.UpdateResult:
        return dyn.UpdateResult(outs=_apply_props(news))

    def read(self, id_: str, props: dict[str, Any]) -> dyn.ReadResult:
        """Refresh reports the color the proxy really serves (e.g. after an emergency switch)."""
        try:
            live = live_color_of(current(str(props["proxyContainerName"])))
        except Exception:  # noqa: BLE001 - no engine or no proxy: keep the recorded state
            return dyn.ReadResult(id_, props)
        if live in ("blue", "green"):
            props = {**props, "liveColor": live}
        return dyn.ReadResult(id_, props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Leave traffic as it is: deleting the record must not take the site down."""

    def render_outputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Offline stand-in for create (tools/render.py): what create would report, no engine."""
        return {**inputs, "previousLiveColor": None, "switchMs": 0.0}


@dataclass(frozen=True)
class RoutingArgs:
    proxy_container_name: pulumi.Input[str]
    #: The proxy's identity: a replaced proxy (bootstrap routing) gets the choice applied again.
    proxy_container_id: pulumi.Input[str]
    #: The color the gate approved.
    live_color: pulumi.Input[str]
    preview_color: pulumi.Input[str | None]
    public_url: pulumi.Input[str]
    ca_file: str | None = None
    insecure: bool = False
    host_header: str | None = None
    probe_path: str = "/health"
    post_promotion_checks: bool = True
    #: Where switches are recorded (`AuditTarget.props()`); None: not recorded.
    audit: dict[str, Any] | None = None


class RoutingSwitch(dyn.Resource):
    """The dynamic resource (type `pulumi-python:dynamic:Resource`, as the SDK names it)."""


def _rendered(colors: list[Any]) -> dict[str, str]:
    live, preview = colors
    return {ROUTING_PATH: render_routing(cast(Color | None, live), cast(Color | None, preview))}


class Routing(pulumi.ComponentResource):
    """Owns the live/preview choice inside the running proxy (one small update per switch)."""

    def __init__(self, name: str, args: RoutingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("paper-trading:routing:Routing", name, None, opts)
        props: dict[str, Any] = {
            "kind": SWITCH_KIND,
            "proxyContainerName": args.proxy_container_name,
            "proxyContainerId": args.proxy_container_id,
            "liveColor": args.live_color,
            "previewColor": args.preview_color,
            "publicUrl": args.public_url,
            "caFile": args.ca_file,
            "insecure": args.insecure,
            "hostHeader": args.host_header,
            "probePath": args.probe_path,
            "postPromotionChecks": args.post_promotion_checks,
            "audit": args.audit,
            "renderedFiles": pulumi.Output.all(args.live_color, args.preview_color).apply(_rendered),
        }
        self.switch = RoutingSwitch(
            RoutingProvider(), f"{name}-switch", props, opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({})


# --------------------------------------------------------------------------- emergency CLI

# Why a Docker client call failed, as the first matching phrase of the client's (long) message.
_ENGINE_PROBLEMS = (
    ("Connection refused", "connection refused"),
    ("No such file or directory", "no socket at that path"),
    ("Permission denied", "permission denied (run as root or as a member of the docker group)"),
    ("timed out", "timed out"),
    ("Name or service not known", "host name not found"),
    ("Temporary failure in name resolution", "host name not found"),
    ("No route to host", "no route to host"),
)


def _engine_failure(exc: BaseException) -> str | None:
    """One line for an exception from the Docker client (None: not a Docker problem)."""
    import os

    import docker.errors
    import requests

    if isinstance(exc, docker.errors.APIError):
        return f"the Docker Engine refused a request: {exc.explanation or exc}"
    if not isinstance(exc, docker.errors.DockerException | requests.exceptions.ConnectionError):
        return None
    text = str(exc)
    why = next((short for needle, short in _ENGINE_PROBLEMS if needle in text), None)
    if why is None:
        first = text.splitlines()[0] if text else type(exc).__name__
        why = first if len(first) <= 160 else first[:159] + "…"
    host = os.environ.get("DOCKER_HOST") or "unset, so the local socket unix:///var/run/docker.sock"
    return (
        f"cannot reach the Docker Engine (DOCKER_HOST={host}): {why}; start dockerd, or set DOCKER_HOST to "
        "the engine that runs the proxy"
    )


def cli_auditor(args: argparse.Namespace, client: Any = None) -> Auditor | None:
    """The emergency CLI's audit writer: volume, image and stack found from the proxy's name.

    Without an audit volume or a writer image it says so on stderr and records nothing
    (an emergency switch must not wait for the audit trail).
    """
    import docker.errors

    from .audit import STACK_LABEL_KEY, AuditTarget, volume_name

    client = client or docker_client()
    prefix = args.container.removesuffix("-proxy")
    volume = args.audit_volume or volume_name(prefix)
    image = args.audit_image
    stack = prefix
    try:
        client.volumes.get(volume)
        stack = client.containers.get(args.container).labels.get(STACK_LABEL_KEY) or prefix
        if not image:
            image = client.containers.get(f"{prefix}-backup").attrs["Config"]["Image"]
    except docker.errors.NotFound as exc:
        print(f"routing: audit: not recorded ({exc.explanation or exc}); pass --audit-volume/--audit-image",
              file=sys.stderr)
        return None
    target = AuditTarget(stack=stack, volume=volume, image=str(image))
    return Auditor.for_target(target, actor=args.actor, client=client)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m components.routing",
        description="Switch or show the live color directly on the proxy (same code as the resource).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("switch", help="make a color live: write, nginx -t, reload, confirm, check")
    go.add_argument("--to", required=True, choices=["blue", "green"])
    go.add_argument("--preview", choices=["blue", "green", "none"], help="default: the other color")
    go.add_argument("--container", required=True, help="the proxy container, e.g. paper-trading-proxy")
    go.add_argument("--url", help="public listener to confirm on, e.g. https://trading.example.com")
    go.add_argument("--ca-file")
    go.add_argument("--insecure", action="store_true", help="skip TLS verification when confirming")
    go.add_argument("--host-header")
    go.add_argument("--no-checks", action="store_true", help="skip the post-promotion checks")
    go.add_argument("--lock-wait", type=float, default=LOCK_WAIT_S, metavar="SECONDS",
                    help=f"wait this long for a switch in progress (default {LOCK_WAIT_S:g})")
    go.add_argument("--actor", help=f"who the audit record names (default: ${ACTOR_ENV}, else the OS user)")
    go.add_argument("--audit-volume", metavar="VOLUME",
                    help="audit volume (default: <prefix>-audit-data, the prefix from --container)")
    go.add_argument("--audit-image", metavar="IMAGE",
                    help="image of the one-shot audit writer (default: the <prefix>-backup container's)")
    go.add_argument("--no-audit", action="store_true", help="do not append an audit record")
    show = sub.add_parser("show", help="print the routing file the proxy serves from")
    show.add_argument("--container", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "show":
            print(current(args.container), end="")
            return 0
        live = cast(Color, args.to)
        preview_arg: str | None = args.preview or ("green" if live == "blue" else "blue")
        preview = None if preview_arg == NONE else cast(Color, preview_arg)
        endpoint = Endpoint(args.url, args.ca_file, args.insecure, args.host_header) if args.url else None
        checker = None if args.no_checks or endpoint is None else validation_checks
        auditor = None if args.no_audit else cli_auditor(args)
        result = switch(args.container, live, preview, endpoint, checker=checker, lock_wait_s=args.lock_wait,
                        audit=auditor, operation="emergency-switch")
    except RoutingError as exc:
        print(f"routing: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        problem = _engine_failure(exc)
        if problem is None:
            raise
        print(f"routing: {problem}", file=sys.stderr)
        return 1
    confirmed = "confirmed" if endpoint else "not confirmed (no --url)"
    print(f"routing: live {result.previous_live} -> {result.live} in {result.switch_ms:.0f} ms, {confirmed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
