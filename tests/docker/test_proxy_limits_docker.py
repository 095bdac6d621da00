"""The running proxy on real Docker: its nginx release, its config check, its process limits.

Issue 13, items 2-4. The ci stack's proxy container is started from its rendered inputs with
`tests.docker.test_ci_images.CiStack` (user, read-only root, tmpfs, capabilities, limits, init, ulimits,
uploads), from the image `scripts/build-test-images --ci` builds (Debian sid's nginx). Then:

- `nginx -v` in the running container is at or above the floor (contract/versions.py) and is
  the release its tag names;
- `nginx -t` passes in that image for the rendered prod, dev and ci configs (the host's nginx
  1.22 checks the same files in tests/render/test_nginx_conf.py);
- the master and every worker have exactly the open-files and process limits the config
  promises (`/proc/<pid>/limits` read inside the container), as many workers as promised, and
  nginx logged no failed `setrlimit`;
- `nproc` measured: it counts every process of the uid on the whole host, and it does not bind
  uid 0 at all (docs/proxy.md, "Process limits").
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from contract.versions import NGINX_FLOOR, release_in_tag
from render.nginx.conf import CONF_PATH
from tests.support import rendered, require_docker
from tests.support.ci_stack import CiStack
from tests.support.proxy_settings import stack_settings

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
HEALTH_TIMEOUT = 60.0
LIMIT_NAMES = {"Max open files": "nofile", "Max processes": "nproc"}




def proxy_resource(stack: str) -> Any:
    found = [r for r in rendered(stack).containers if r.label_map.get("paper-trading.service") == "proxy"]
    assert len(found) == 1
    return found[0]


def proxy_uploads(stack: str) -> list[dict[str, Any]]:
    """The files the proxy reads: its never-started carrier's uploads (stack/carrier.py)."""
    name = proxy_resource(stack).inputs["name"]
    (carrier,) = [r for r in rendered(stack).containers
                  if r.label_map.get("paper-trading.carrier-for") == name]
    return list(carrier.inputs["uploads"])


def proxy_conf(stack: str) -> str:
    confs = [u["content"] for u in proxy_uploads(stack) if u["file"] == CONF_PATH]
    assert len(confs) == 1, f"{stack}: the proxy receives no {CONF_PATH}"
    return str(confs[0])


def directive(conf: str, name: str) -> int:
    """The one integer value of a directive in the rendered config (absent or repeated fails)."""
    values = re.findall(rf"^\s*{name}\s+(\d+);", conf, re.M)
    assert len(values) == 1, f"{name}: {values}"
    return int(values[0])


def exec_in(container: Any, cmd: list[str], user: str | None = None) -> tuple[int, str]:
    result = container.exec_run(cmd, user=user or "", demux=False)
    return result.exit_code, result.output.decode(errors="replace")


# The shell of the image reads every process's command line and limits (no ps in minbase).
PROCESSES = r"""
for d in /proc/[0-9]*; do
  [ -r "$d/cmdline" ] || continue
  printf 'PID %s %s\n' "${d#/proc/}" "$(tr '\0' ' ' < "$d/cmdline")"
  grep -E '^Max (open files|processes) ' "$d/limits" | sed 's/^/LIMIT /'
done
"""


@dataclass(frozen=True)
class Process:
    pid: int
    cmdline: str
    limits: dict[str, tuple[str, str]]  # nofile/nproc -> (soft, hard) as the kernel prints them


def processes(container: Any) -> list[Process]:
    code, out = exec_in(container, ["sh", "-c", PROCESSES])
    assert code == 0, out
    found: list[Process] = []
    for line in out.splitlines():
        if line.startswith("PID "):
            _, pid, *rest = line.split(" ", 2) + [""]
            found.append(Process(int(pid), " ".join(rest).strip(), {}))
        elif line.startswith("LIMIT ") and found:
            match = re.match(r"LIMIT (Max open files|Max processes)\s+(\S+)\s+(\S+)", line)
            assert match, line
            found[-1].limits[LIMIT_NAMES[match.group(1)]] = (match.group(2), match.group(3))
    return found


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    require_docker()
    import docker

    proc = subprocess.run([str(ROOT / "scripts" / "build-test-images"), "--ci"],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"build-test-images --ci failed:\n{proc.stdout}\n{proc.stderr}"
    docker_client = docker.from_env(timeout=120)
    try:
        yield docker_client
    finally:
        docker_client.close()


@pytest.fixture(scope="module")
def proxy(client: Any) -> Iterator[Any]:
    """The ci stack's proxy, started from its rendered inputs and healthy."""
    graph = rendered("ci")
    res = proxy_resource("ci")
    stack = CiStack(client, graph)
    try:
        stack.create_networks()
        # Its files first: the never-started carrier fills the volume the proxy mounts read-only.
        for carrier in graph.containers:
            if carrier.label_map.get("paper-trading.carrier-for") == res.inputs["name"]:
                stack.start(carrier.inputs)
        container = stack.start(res.inputs)
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while (state := stack.status(res)) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert state is True, stack.describe(res)
        yield container
    finally:
        stack.remove()


# ----------------------------------------------------------------------------- item 2: version


def test_running_proxy_nginx_is_at_or_above_the_floor(proxy: Any) -> None:
    code, out = exec_in(proxy, ["nginx", "-v"])
    assert code == 0, out
    match = re.fullmatch(r"nginx version: nginx/(\d+)\.(\d+)\.(\d+)", out.strip())
    assert match, out
    running = tuple(int(part) for part in match.groups())
    assert running >= NGINX_FLOOR, f"the ci proxy runs nginx {running}, below the floor {NGINX_FLOOR}"
    # The tag is honest: the policy reads the version from it.
    assert release_in_tag(proxy_resource("ci").inputs["image"]) == running


@pytest.mark.parametrize("stack", ["prod", "dev", "ci"])
def test_rendered_config_passes_nginx_t_in_the_image(client: Any, stack: str) -> None:
    """The same files the program uploads, checked by the stand-in's nginx (1.30) as uid 101.

    Only what cannot exist outside the stack is supplied: a throwaway TLS pair at the mounted
    paths (prod) and, for a `listen <alias>:<port>`, the alias as an extra host (127.0.0.2).
    """
    import trustme

    res = proxy_resource(stack)
    image = proxy_resource("ci").inputs["image"]
    conf = proxy_conf(stack)
    files = {u["file"]: str(u["content"]).encode() for u in proxy_uploads(stack)}
    if stack_settings(stack).server.ssl.enabled:
        ca = trustme.CA()
        leaf = ca.issue_cert(stack_settings(stack).server.host)
        files["/run/tls/fullchain.pem"] = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        files["/run/tls/privkey.pem"] = leaf.private_key_pem.bytes()
    # 127.0.0.2: the config also listens on 127.0.0.1 itself (the healthcheck's address).
    hosts = {h: "127.0.0.2" for h in re.findall(r"^\s*listen\s+([A-Za-z][\w.-]*):\d+", conf, re.M)}
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), 0o444, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    container = client.containers.create(
        image, command=["nginx", "-t", "-e", "stderr", "-c", CONF_PATH], user=res.inputs["user"],
        network_mode="none", extra_hosts=hosts or None, labels={"paper-trading.proxy-limits-test": stack},
        # /var/log/paper-trading: the proxy-logs volume (a tmpfs owned by 101) the access-log file is on.
        tmpfs={"/var/cache/nginx": "rw,uid=101,gid=101", "/tmp": "rw",
               "/var/log/paper-trading": "rw,uid=101,gid=101"},
    )
    try:
        assert container.put_archive("/", archive.getvalue())
        container.start()
        status = container.wait(timeout=60)
        logs = container.logs().decode(errors="replace")
        assert status["StatusCode"] == 0, f"{stack}: nginx -t failed in {image}:\n{logs}"
        assert "test is successful" in logs.splitlines()[-1], logs
    finally:
        with suppress(Exception):
            container.remove(force=True)


# ----------------------------------------------------------------------------- item 3: open files


def test_rendered_config_keeps_the_open_files_rule() -> None:
    for stack in ("prod", "dev", "ci"):
        conf, proxy_settings = proxy_conf(stack), stack_settings(stack).proxy
        assert directive(conf, "worker_rlimit_nofile") == proxy_settings.open_files_limit
        assert directive(conf, "worker_connections") == proxy_settings.worker_connections
        assert directive(conf, "worker_processes") == proxy_settings.worker_processes
        assert proxy_settings.open_files_limit >= 2 * proxy_settings.worker_connections
        rendered_ulimits = proxy_resource(stack).inputs["ulimits"]
        ulimits = {u["name"]: (int(u["soft"]), int(u["hard"])) for u in rendered_ulimits}
        assert ulimits == {
            "nofile": (proxy_settings.open_files_limit,) * 2,
            "nproc": (proxy_settings.max_processes,) * 2,
        }


def test_running_proxy_has_the_promised_limits(proxy: Any) -> None:
    proxy_settings = stack_settings("ci").proxy
    want = {
        "nofile": (str(proxy_settings.open_files_limit),) * 2,
        "nproc": (str(proxy_settings.max_processes),) * 2,
    }
    found = processes(proxy)
    masters = [p for p in found if p.cmdline.startswith("nginx: master process")]
    workers = [p for p in found if p.cmdline.startswith("nginx: worker process")]
    assert len(masters) == 1, found
    assert len(workers) == proxy_settings.worker_processes, found
    for process in [*masters, *workers]:
        assert process.limits == want, f"{process.cmdline} (pid {process.pid}): {process.limits} != {want}"
    logs = proxy.logs().decode(errors="replace")
    assert "setrlimit" not in logs, logs


# ----------------------------------------------------------------------------- item 4: nproc


FORK_COUNTER = r"""
import json, os, sys, time
children, error = [], None
for _ in range(int(sys.argv[1])):
    try:
        pid = os.fork()
    except OSError as exc:
        error = exc.strerror
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children.append(pid)
print(json.dumps({"forked": len(children), "error": error}), flush=True)
for pid in children:
    os.kill(pid, 9)
"""
NPROC = 16
ATTEMPTS = 40
TEST_UID = 47011  # no user, no process on a normal host; checked below


def fork_count(client: Any, user: str, nproc: int) -> dict[str, Any]:
    """How many children a process can fork in a hardened container with `nproc` soft = hard."""
    import docker

    out = client.containers.run(
        "paper-trading-base:test", ["python3", "-c", FORK_COUNTER, str(ATTEMPTS)], user=user,
        network_mode="none", cap_drop=["ALL"], security_opt=["no-new-privileges:true"], init=True,
        ulimits=[docker.types.Ulimit(name="nproc", soft=nproc, hard=nproc)], remove=True,
        labels={"paper-trading.proxy-limits-test": "nproc"},
    )
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def uid_processes(uid: int) -> int:
    return sum(1 for p in Path("/proc").iterdir() if p.name.isdigit() and _owner(p) == uid)


def _owner(path: Path) -> int | None:
    with suppress(OSError):
        return path.stat().st_uid
    return None


def test_nproc_counts_the_uids_processes_on_the_whole_host(client: Any) -> None:
    assert uid_processes(TEST_UID) == 0, f"uid {TEST_UID} already runs processes here"
    # docker-init and the counting python are two processes of the uid already.
    alone = fork_count(client, f"{TEST_UID}:{TEST_UID}", NPROC)
    assert alone == {"forked": NPROC - 2, "error": "Resource temporarily unavailable"}
    # The same uid outside the container (another container or a host service) uses it up.
    outside = 5
    sleepers = [
        subprocess.Popen(["setpriv", f"--reuid={TEST_UID}", f"--regid={TEST_UID}", "--clear-groups",
                          "sleep", "60"])
        for _ in range(outside)
    ]
    try:
        deadline = time.monotonic() + 10
        while uid_processes(TEST_UID) < outside and time.monotonic() < deadline:
            time.sleep(0.1)
        assert uid_processes(TEST_UID) == outside
        shared = fork_count(client, f"{TEST_UID}:{TEST_UID}", NPROC)
        assert shared == {"forked": NPROC - 2 - outside, "error": "Resource temporarily unavailable"}
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait(timeout=10)


def test_nproc_does_not_bind_uid_0(client: Any) -> None:
    """The kernel exempts root's user from RLIMIT_NPROC even with every capability dropped."""
    assert fork_count(client, "0:0", NPROC) == {"forked": ATTEMPTS, "error": None}
