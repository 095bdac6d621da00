"""The Docker side of the switch: find the proxy, rename the routing markers, the lock, the drain.

Every call goes through the Docker Engine API the docker provider uses; nothing here
knows about listeners, checks or Pulumi. A switch is ONE exec round trip (`SWAP_SCRIPT`, the
program programs/routing/swap.sh): take the lock, rename the markers (`nginx/routing.py`), print
what was there before.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import tarfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

import programs
from release.routing.base import NONE, RoutingError
from render.nginx.routing import COLORS, MARKER_TEXT, ROLES, ROUTING_DIR, ROUTING_PATH

_MAP_RE = re.compile(r'map \$host \$(?:live_color|routing_live_default) \{ default "(blue|green|none)"; \}')
_STATE_RE = re.compile(r"^live (blue|green|none)$", re.MULTILINE)


def docker_client() -> Any:
    """The engine the docker provider uses: honours DOCKER_HOST, DOCKER_TLS_VERIFY, ..."""

    return docker.from_env(timeout=30)


def find_proxy(client: Any, name: str) -> Any:
    """The running proxy container, or a RoutingError that says what to do."""

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


INVALID_EXIT = 3
LOCKED_EXIT = 4
#: A switch holds the lock for its whole run (rename, confirm, handoff, post-promotion checks,
#: switch back); one older than this was abandoned (its process died) and may be taken over.
LOCK_STALE_S = 180
#: How long a switch waits for another one to finish before it gives up, traffic unchanged.
LOCK_WAIT_S = 60.0
#: The switch (programs/routing/swap.sh): takes the switch lock, renames the markers, prints
#: what was there before; exit INVALID_EXIT for a color it refuses, LOCKED_EXIT when another
#: switch holds the lock. Run in the proxy by `sh -c`, its parameters in `swap_env`.
SWAP_SCRIPT = programs.text("routing/swap.sh")
#: Drops the switch lock if its owner still holds it (programs/routing/release.sh).
RELEASE_SCRIPT = programs.text("routing/release.sh")


@dataclass(frozen=True)
class Served:
    """What the proxy's markers select: `blue`, `green` or `none` per role."""

    live: str
    preview: str

    def describe(self) -> str:
        return f"live {self.live}\npreview {self.preview}\n"


def swap_env(live: str, preview: str, owner: str, routing_dir: str | None = None) -> dict[str, str]:
    """The environment SWAP_SCRIPT/RELEASE_SCRIPT read (`routing_dir`: tests run it on a local nginx)."""
    return {"ROUTING_LIVE": live, "ROUTING_PREVIEW": preview, "ROUTING_OWNER": owner,
            "ROUTING_MARKER": MARKER_TEXT, "ROUTING_DIR_PATH": routing_dir or ROUTING_DIR,
            "ROUTING_COLORS": " ".join(COLORS), "ROUTING_INVALID_EXIT": str(INVALID_EXIT),
            "ROUTING_LOCKED_EXIT": str(LOCKED_EXIT), "ROUTING_LOCK_STALE_S": str(LOCK_STALE_S)}


class Locked(Exception):
    """Another switch holds the proxy's switch lock."""


def lock_owner() -> str:
    """Who is switching, as recorded in the lock: host, process and a nonce."""

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


def swap_markers(container: Any, live: str, preview: str, owner: str) -> Served:
    """Make the markers select `live`/`preview` (`none`: no marker); return what they selected before.

    One exec round trip, which also takes the switch lock for `owner` (raises Locked when
    another switch holds it). Anything but blue/green/none is refused by the script too.
    """

    try:
        code, out, err = _exec(container, SWAP_SCRIPT, user="0", env=swap_env(live, preview, owner))
    except docker.errors.APIError as exc:
        raise RoutingError(f"cannot exec in {container.name}: {exc}; traffic unchanged") from None
    if code == LOCKED_EXIT:
        raise Locked(out.strip())
    if code == INVALID_EXIT:
        raise RoutingError(f"the proxy refused the switch ({out.strip()}); traffic unchanged")
    words = out.split()
    if code != 0 or len(words) != 2:
        raise RoutingError(f"could not rename the routing markers in {container.name} (exit {code}): "
                           f"{(out + err).strip()}")
    return Served(words[0], words[1])


def release_lock(container: Any, owner: str) -> None:
    """Drop the switch lock if `owner` still holds it (best effort: it goes stale anyway)."""
    with contextlib.suppress(Exception):
        _exec(container, RELEASE_SCRIPT, user="0",
              env={"ROUTING_OWNER": owner, "ROUTING_DIR_PATH": ROUTING_DIR})


def drain(container: Any) -> None:
    """Recycle nginx's workers gracefully (SIGHUP to the master, PID 1) after traffic moved.

    Not part of the switch: the markers already decide every new request. Requests that
    were already proxied stay where they were; websockets included, until they close. A
    reload makes the old workers finish them and close them after `worker_shutdown_timeout`,
    so long-lived connections move to the new color too. Same config, so nothing to test.
    """
    container.kill(signal="SIGHUP")


def served(container: Any) -> Served:
    """What the proxy serves from now: its markers, else the routing include's defaults.

    Read through the archive API (no exec): the listing of the routing directory.
    """

    try:
        chunks, _ = container.get_archive(ROUTING_DIR)
    except docker.errors.NotFound:
        return Served(NONE, NONE)
    names: set[str] = set()
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
        for member in archive.getmembers():
            names.add(member.name.rpartition("/")[2])
    # The include's defaults apply while no marker exists (read-only, beside nginx.conf).
    include = read_file(container, ROUTING_PATH)
    picked = {role: next((c for c in reversed(COLORS) if f"{role}-{c}" in names), None) for role in ROLES}
    default_live = live_color_of(include) or NONE
    return Served(picked["live"] or default_live, picked["preview"] or NONE)


def live_color_of(content: str | None) -> str | None:
    """The live color a `Served.describe()` text or a routing include selects, or None if unreadable."""
    match = _STATE_RE.search(content or "") or _MAP_RE.search(content or "")
    return match.group(1) if match else None


def current(container_name: str, client: Any = None) -> str:
    """What the proxy serves from now, as `live <color>\npreview <color>\n`."""
    container = find_proxy(client or docker_client(), container_name)
    return served(container).describe()
