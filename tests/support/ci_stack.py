"""The ci stack's containers run from their rendered inputs (image, user, command, uploads, volumes,
aliases), without the engine; its `client` fixture is shared as a pytest plugin."""

from __future__ import annotations

import io
import os
import re
import secrets
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from tests.support import require_docker

ROOT = Path(__file__).resolve().parents[2]

STACK = "ci"

TEST_LABEL = "paper-trading.ci-images-test"

#: The pid of the test process that created it: leftovers of a live run are not removed.
PID_LABEL = "paper-trading.ci-images-test.pid"

NETWORK_TYPE = "docker:index/network:Network"

#: What each exporter's /metrics must show besides its own health: it reaches its target.
EXPORTER_PROOF = {
    "postgres-exporter": "pg_up 1",
    "redis-exporter": "redis_up 1",
    "nginx-exporter": "nginx_up 1",
}

def _duration_ns(value: str) -> int:
    """A Go duration as the program spells it (`20s`, `1m0s`, `1h0m0s`) in nanoseconds."""
    units = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
    parts = re.findall(r"([0-9]+)(ms|s|m|h)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"unexpected duration {value!r}"
    return sum(int(n) * units[u] for n, u in parts)

def _upload_tar(uploads: list[dict[str, Any]], under: str) -> bytes:
    """Uploads below `under` as one tar relative to it, with mode and owner as rendered."""
    buffer = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        dirs: set[str] = set()
        for upload in uploads:
            parent = os.path.dirname(os.path.relpath(upload["file"], under))
            while parent and parent not in dirs:
                dirs.add(parent)
                parent = os.path.dirname(parent)
        for directory in sorted(dirs):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
            archive.addfile(info)
        for upload in uploads:
            data = str(upload["content"]).encode()
            info = tarfile.TarInfo(os.path.relpath(upload["file"], under))
            info.size, info.mtime = len(data), now
            info.mode = int(str(upload.get("permissions") or "0644"), 8)
            info.uid = int(upload.get("owner") or 0)
            info.gid = int(upload.get("group") or upload.get("owner") or 0)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()

def _listen_port(inputs: dict[str, Any]) -> int | None:
    for arg in inputs.get("command") or []:
        match = re.fullmatch(r"--web\.listen-address=[^:]*:([0-9]+)", str(arg))
        if match:
            return int(match.group(1))
    return None

class CiStack:
    """Every enabled container of the rendered ci stack, started like the provider would."""

    def __init__(self, client: Any, graph: Any) -> None:
        self.client = client
        self.graph = graph
        self.prefix = f"ptci-{secrets.token_hex(3)}"
        self.labels = {TEST_LABEL: self.prefix, PID_LABEL: str(os.getpid())}
        self.networks: dict[str, str] = {}  # rendered name -> test network name
        self.volumes: dict[str, str] = {}  # rendered volume name -> test volume name
        self.started: dict[str, Any] = {}  # rendered container name -> docker container
        self.by_urn = {r.urn: r for r in graph.containers}

    # ------------------------------------------------------------------ names

    def network(self, name: str) -> str:
        return self.networks[name]

    def volume(self, rendered: str) -> str:
        if rendered not in self.volumes:
            name = f"{self.prefix}-{rendered}"
            # A rendered volume with driver options (the security layer's tmpfs volumes, owned
            # by their writer: stack/volumes.py RUNTIME_VOLUMES) is created with them.
            spec: dict[str, Any] = next((v.inputs for v in self.graph.of_type("docker:index/volume:Volume")
                         if v.inputs.get("name") == rendered), {})
            self.client.volumes.create(name, labels=self.labels, driver=spec.get("driver") or "local",
                                       driver_opts=dict(spec.get("driverOpts") or {}) or None)
            self.volumes[rendered] = name
        return self.volumes[rendered]

    # ------------------------------------------------------------------ setup

    def create_networks(self) -> None:
        for res in self.graph.of_type(NETWORK_TYPE):
            name = f"{self.prefix}-{res.inputs['name']}"
            self.client.networks.create(
                name, driver=res.inputs.get("driver") or "bridge",
                internal=bool(res.inputs.get("internal")), labels=self.labels,
            )
            self.networks[res.inputs["name"]] = name

    def start_all(self, deadline: float) -> None:
        """Start containers in dependency order; a `wait` dependency must be healthy first."""
        pending = list(self.graph.containers)
        while pending:
            progressed = False
            for res in list(pending):
                deps = [self.by_urn[u] for u in res.options.get("dependsOn") or [] if u in self.by_urn]
                if any(d.inputs["name"] not in self.started for d in deps):
                    continue
                if any(d.inputs.get("wait") and self.status(d) is not True for d in deps):
                    continue
                self.start(res.inputs)
                pending.remove(res)
                progressed = True
            if pending and not progressed:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        "dependencies never became healthy: "
                        + ", ".join(self.describe(r) for r in self.graph.containers if r.inputs.get("wait"))
                    )
                time.sleep(0.5)

    def start(self, inputs: dict[str, Any]) -> Any:
        import docker

        name = inputs["name"]
        networks = inputs["networksAdvanced"]
        primary = inputs.get("networkMode") or networks[0]["name"]
        aliases = {n["name"]: [*(n.get("aliases") or []), name] for n in networks}
        # "source:target:mode" strings: one volume may be mounted at several paths (the backup's
        # ownership donors), which a {source: ...} dict would silently collapse to one.
        volumes: list[str] = []
        mount_points: list[str] = []
        for i, vol in enumerate(inputs.get("volumes") or []):
            path = vol["containerPath"]
            if vol.get("hostPath"):
                source = vol["hostPath"]
            else:
                # Named volumes keep their rendered identity (redis data is shared with the
                # backup, the backup metrics with node-exporter); anonymous ones get their own.
                source = self.volume(vol.get("volumeName") or f"{name}-anon-{i}")
            volumes.append(f"{source}:{path}:{'ro' if vol.get('readOnly') else 'rw'}")
            mount_points.append(path.rstrip("/"))
        check = inputs.get("healthcheck")
        healthcheck = None
        if check:
            healthcheck = {
                "test": list(check["tests"]),
                "interval": 10**9,  # rendered interval shortened, see the module docstring
                "timeout": _duration_ns(check.get("timeout") or "30s"),
                "retries": int(check.get("retries") or 3),
                "start_period": _duration_ns(check.get("startPeriod") or "0s"),
            }
        caps = inputs.get("capabilities") or {}
        container = self.client.containers.create(
            inputs["image"],
            name=f"{self.prefix}-{name}",
            hostname=inputs.get("hostname"),
            command=inputs.get("command"),
            entrypoint=inputs.get("entrypoints") or inputs.get("entrypoint"),
            user=inputs.get("user") or "",
            environment=list(inputs.get("envs") or []),
            labels={**{lab["label"]: lab["value"] for lab in inputs.get("labels") or []}, **self.labels},
            read_only=bool(inputs.get("readOnly")),
            privileged=bool(inputs.get("privileged")),
            tmpfs=dict(inputs.get("tmpfs") or {}),
            cap_drop=caps.get("drops"),
            cap_add=caps.get("adds"),
            security_opt=inputs.get("securityOpts"),
            mem_limit=f"{int(inputs['memory'])}m" if inputs.get("memory") else None,
            memswap_limit=f"{int(inputs['memorySwap'])}m" if inputs.get("memorySwap") else None,
            nano_cpus=int(float(inputs["cpus"]) * 1e9) if inputs.get("cpus") else None,
            init=bool(inputs.get("init")),
            ulimits=[docker.types.Ulimit(name=u["name"], soft=int(u["soft"]), hard=int(u["hard"]))
                     for u in inputs.get("ulimits") or []] or None,
            restart_policy={"Name": inputs.get("restart") or "no",
                            "MaximumRetryCount": int(inputs.get("maxRetryCount") or 0)},
            log_config=docker.types.LogConfig(type=inputs.get("logDriver") or "json-file",
                                              config=dict(inputs.get("logOpts") or {})),
            healthcheck=healthcheck,
            volumes=volumes,
            # Ports: not published, see the module docstring.
            network=self.network(primary),
            networking_config={
                self.network(primary): self.client.api.create_endpoint_config(aliases=aliases[primary]),
            },
        )
        self.started[name] = container
        for net in networks:
            if net["name"] != primary:
                self.client.networks.get(self.network(net["name"])).connect(
                    container, aliases=aliases[net["name"]])
        # Uploads go into the created container before its first start, each into the
        # volume that holds it (Docker writes nowhere else on a read-only root filesystem).
        groups: dict[str, list[dict[str, Any]]] = {}
        for upload in inputs.get("uploads") or []:
            target = upload["file"]
            under = max((p for p in mount_points if target.startswith(p + "/")), key=len, default=None)
            if under is None:
                assert not inputs.get("readOnly"), f"{name}: upload {target} is outside every volume"
                under = os.path.dirname(target)
            groups.setdefault(under, []).append(upload)
        for under, uploads in groups.items():
            assert container.put_archive(under, _upload_tar(uploads, under)), f"{name}: upload to {under}"
        if inputs.get("start") is False:
            return container  # a file carrier (stack/carrier.py): created, never started
        container.start()
        return container

    # ------------------------------------------------------------------ health

    def status(self, res: Any) -> bool | None:
        """True: healthy (or answering); False: gave up (exited for good); None: not yet."""
        inputs = res.inputs
        container = self.started[inputs["name"]]
        container.reload()
        state = container.attrs["State"]
        if inputs.get("start") is False:  # a carrier: done once created with its files, never running
            return bool(state["Status"] == "created")
        gave_up = container.attrs.get("RestartCount", 0) >= int(inputs.get("maxRetryCount") or 0)
        if state["Status"] == "exited" and state.get("ExitCode") and not state.get("Restarting") and gave_up:
            return False
        if inputs.get("healthcheck"):
            if (state.get("Health") or {}).get("Status") != "healthy":
                return None
            return True if res.label_map.get("paper-trading.service") not in EXPORTER_PROOF \
                or self.answers(res) else None
        if state["Status"] != "running":
            return None
        return True if self.answers(res) else None

    def answers(self, res: Any) -> bool:
        """An exporter's /metrics answers, and shows it reaches its target."""
        inputs = res.inputs
        port = _listen_port(inputs)
        assert port, f"{inputs['name']}: no --web.listen-address in its command"
        container = self.started[inputs["name"]]
        # Prometheus' side: the `metrics` network where it exists (issue 13, item 1), else `monitoring`.
        names = [n["name"] for n in inputs["networksAdvanced"]]
        monitoring = self.network(next(n for suffix in ("-metrics", "-monitoring") for n in names
                                       if n.endswith(suffix)))
        address = container.attrs["NetworkSettings"]["Networks"].get(monitoring, {}).get("IPAddress")
        if not address:
            return False
        try:
            with urllib.request.urlopen(f"http://{address}:{port}/metrics", timeout=3) as response:
                body = response.read().decode(errors="replace")
        except OSError:
            return False
        service = res.label_map.get("paper-trading.service", "")
        proof = EXPORTER_PROOF.get(service)
        return proof is None or re.search(rf"^{re.escape(proof)}$", body, re.M) is not None

    def describe(self, res: Any) -> str:
        container = self.started.get(res.inputs["name"])
        if container is None:
            return f"{res.inputs['name']}: not started"
        container.reload()
        state = container.attrs["State"]
        health = (state.get("Health") or {})
        last = (health.get("Log") or [{}])[-1].get("Output", "").strip()[-300:]
        logs = container.logs(tail=15).decode(errors="replace").strip()
        return (f"{res.inputs['name']}: {state['Status']} exit={state.get('ExitCode')} "
                f"restarts={container.attrs.get('RestartCount')} health={health.get('Status')} "
                f"last-check={last!r}\n    logs: {logs[-1500:]}")

    # ------------------------------------------------------------------ teardown

    def remove(self) -> None:
        remove_labelled(self.client, self.prefix)

def _owner_alive(labels: dict[str, str] | None) -> bool:
    """Whether the test process that created an object still runs (a concurrent run)."""
    pid = (labels or {}).get(PID_LABEL, "")
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

def remove_labelled(client: Any, prefix: str | None = None) -> None:
    """Containers, then networks and volumes of this test: one run's, or every earlier run's
    whose process is gone (a run in progress elsewhere on this engine keeps its stack)."""
    selector = f"{TEST_LABEL}={prefix}" if prefix else TEST_LABEL

    def mine(labels: dict[str, str] | None) -> bool:
        return prefix is not None or not _owner_alive(labels)

    for container in client.containers.list(all=True, filters={"label": selector}):
        if mine(container.labels):
            with suppress(Exception):  # already gone
                container.remove(force=True, v=True)
    for network in client.networks.list(filters={"label": selector}):
        if mine(network.attrs.get("Labels")):
            with suppress(Exception):
                network.remove()
    for volume in client.volumes.list(filters={"label": selector}):
        if mine(volume.attrs.get("Labels")):
            with suppress(Exception):
                volume.remove(force=True)

@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    require_docker()
    import docker

    proc = subprocess.run(
        [str(ROOT / "scripts" / "build-test-images"), "--ci"],
        capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, f"build-test-images --ci failed:\n{proc.stdout}\n{proc.stderr}"
    docker_client = docker.from_env(timeout=120)
    remove_labelled(docker_client)  # leftovers of an interrupted earlier run
    try:
        yield docker_client
    finally:
        docker_client.close()
