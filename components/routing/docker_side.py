"""The Docker side of the switch: find the proxy, swap the routing file, test and reload, the lock.

Every call goes through the Docker Engine API the docker provider uses; nothing here
knows about listeners, checks or Pulumi.
"""

from __future__ import annotations

import contextlib
import io
import re
import tarfile
import time
from typing import Any

from ..nginx.conf import CONF_PATH, NginxPaths
from ..nginx.routing import ROUTING_DIR, ROUTING_PATH
from .base import RoutingError

NGINX_PID = NginxPaths().pid
_MAP_RE = re.compile(r'map \$host \$live_color \{ default "(blue|green|none)"; \}')


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


TEST_FAILED = 3
LOCKED_EXIT = 4
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
    if [ "$age" -lt {LOCK_STALE_S} ]; then echo "$holder $age"; exit {LOCKED_EXIT}; fi
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


class Locked(Exception):
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


def swap_routing(container: Any, content: str, owner: str) -> str | None:
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
    if code == LOCKED_EXIT:
        raise Locked(out.strip())
    previous = read_file(container, ROUTING_PATH)
    write_file(container, ROUTING_PATH, content)
    return previous


def release_lock(container: Any, owner: str) -> None:
    """Drop the switch lock if `owner` still holds it (best effort: it goes stale anyway)."""
    with contextlib.suppress(Exception):
        _exec(container, _RELEASE_SCRIPT, user="0", env={"ROUTING_OWNER": owner})


def check_and_reload(container: Any) -> tuple[int, str]:
    """`nginx -t`, then a graceful reload (SIGHUP to the master) only if the test passed.

    One exec round trip, as the container's own user (the master's uid may signal it).
    Exit code TEST_FAILED means the test refused the config and nothing was reloaded.
    """
    nginx = f"nginx -e stderr -c {CONF_PATH}"
    script = (
        f"{nginx} -t 2>&1 || exit {TEST_FAILED}; "
        f'kill -HUP "$(cat {NGINX_PID} 2>/dev/null)" 2>/dev/null || {nginx} -s reload 2>&1'
    )
    code, out, err = _exec(container, script)
    return code, (out + err).strip()


def live_color_of(content: str | None) -> str | None:
    """The live color a routing file selects (`blue`, `green`, `none`), or None if unreadable."""
    match = _MAP_RE.search(content or "")
    return match.group(1) if match else None


def current(container_name: str, client: Any = None) -> str:
    """The routing file the proxy serves from now."""
    container = find_proxy(client or docker_client(), container_name)
    return read_file(container, ROUTING_PATH) or ""
