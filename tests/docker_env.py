"""A real blue/green stack on the local Docker Engine, for the routing tests and the benchmark.

Builds (or reuses) the test images with `scripts/build-test-images`, renders the
program itself (`tools.render.evaluate`, the whole `__main__.py` under mocks) with
the test settings, and starts what it rendered: a frontend network, one app
container per color (the reference app image; the rendered container's
environment, labels, user, command, tmpfs, capabilities, security options, init
and limits; aliases from its frontend attachment), and the proxy: the base
image's nginx running the exact files the program uploads into the proxy (the
generated nginx.conf and the bootstrap routing include), with the rendered
command, user, tmpfs and hardening, a volume at the config dir.
Nothing falls back to a copy: a container or file the program no longer renders
makes the setup fail. Only machine-specific things differ: host ports are
ephemeral on 127.0.0.1, the proxy runs the base image's nginx, the app gets no
secret files (the reference app reads none), and only the proxy's networks exist (frontend,
and metrics, where the proxy's status listener binds to its metrics-only alias).
Everything is labelled and removed afterwards, also after a crash of an earlier run.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
TEST_LABEL = "paper-trading.test"
APP_IMAGE = "paper-trading-reference-app:test"
APP_PORT = 3000

#: The stack name the test stack is rendered as (its `paper-trading.stack` label).
STACK = "docker-test"


def build_images() -> tuple[str, str]:
    """(base image, app image): build or reuse them with the project's script."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "build-test-images")], capture_output=True, text=True, timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"build-test-images failed:\n{proc.stdout}\n{proc.stderr}")
    found = dict(re.findall(r"^(PAPER_TRADING_\w+_IMAGE)=(\S+)$", proc.stdout, re.M))
    # No stand-in app: without the reference app the Docker tests cannot run, so they fail.
    if found.get("PAPER_TRADING_APP_IMAGE") != APP_IMAGE or "skipping" in proc.stderr:
        raise RuntimeError(f"build-test-images did not build {APP_IMAGE}:\n{proc.stdout}\n{proc.stderr}")
    return found["PAPER_TRADING_BASE_IMAGE"], APP_IMAGE


def test_config(prefix: str) -> dict[str, Any]:
    """Dev-stack-like `paper-trading:*` config: plain HTTP, one replica per color."""
    return {
        "environment": "development",
        "paperTradingMode": True,
        "allowRealTrades": False,
        "namePrefix": prefix,
        "server": {"port": APP_PORT, "host": "localhost", "ssl": {"enabled": False}},
        "deployment": {
            "activeColor": "blue",
            "blue": {"image": APP_IMAGE, "replicas": 1},
            "green": {"image": APP_IMAGE, "replicas": 1},
        },
        "proxy": {"publicAddress": "127.0.0.1", "httpPort": 18080, "httpsPort": 18443, "previewPort": 18081},
    }


def test_settings(prefix: str) -> Any:
    """The program's Settings for the test config."""
    from components.config import Settings

    return Settings.model_validate(test_config(prefix))


def render_stack(prefix: str) -> Any:
    """The program's resource graph (`tools.render.Graph`) for the test config, as the engine hands it."""
    from tools.render import evaluate

    config = {f"paper-trading:{key}": value if isinstance(value, str) else json.dumps(value)
              for key, value in test_config(prefix).items()}
    return evaluate(STACK, config=config, secret_keys=[])


def rendered_container(graph: Any, name: str) -> Any:
    """The one container the program renders under the Docker name `name`; anything else fails."""
    found = [r for r in graph.containers if r.inputs.get("name") == name]
    if len(found) != 1:
        names = sorted(str(r.inputs.get("name")) for r in graph.containers)
        raise RuntimeError(f"the program renders {len(found)} containers named {name!r} (it renders {names})")
    return found[0]


def rendered_env(resource: Any) -> dict[str, str]:
    """The container's `envs` as a mapping; missing, empty or duplicated entries fail."""
    envs = resource.inputs.get("envs")
    if not envs:
        raise RuntimeError(f"the program renders no environment for {resource.inputs.get('name')}")
    env = dict(str(e).split("=", 1) for e in envs)
    if len(env) != len(envs):
        raise RuntimeError(f"duplicate environment entries for {resource.inputs.get('name')}: {envs}")
    return env


def hardening(resource: Any) -> dict[str, Any]:
    """docker-py `containers.create` keywords for the rendered user, rootfs, tmpfs, caps and limits."""
    i = resource.inputs
    caps = i["capabilities"]
    return dict(
        user=i.get("user"), read_only=i["readOnly"], privileged=i["privileged"], tmpfs=i.get("tmpfs"),
        cap_drop=caps.get("drops"), cap_add=caps.get("adds"), security_opt=i["securityOpts"],
        init=i.get("init"), mem_limit=f"{i['memory']}m", memswap_limit=f"{i['memorySwap']}m",
        nano_cpus=int(float(i["cpus"]) * 1e9),
    )


def _tar(files: dict[str, str], under: str) -> bytes:
    """Files below `under` as a tar relative to it (with directory entries)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        dirs: set[str] = set()
        for path in files:
            rel = os.path.relpath(path, under)
            parent = os.path.dirname(rel)
            while parent and parent not in dirs:
                dirs.add(parent)
                parent = os.path.dirname(parent)
        for directory in sorted(dirs):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
            archive.addfile(info)
        for path, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(os.path.relpath(path, under))
            info.size, info.mode, info.mtime = len(data), 0o444, int(time.time())
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class DockerEnv:
    """Handles on the running stack; `live_url`/`preview_url` are published on 127.0.0.1."""

    client: Any
    prefix: str
    base_image: str
    app_image: str
    settings: Any
    graph: Any
    network: str = ""
    proxy_name: str = ""
    live_url: str = ""
    preview_url: str = ""
    containers: list[Any] = field(default_factory=list)

    # ------------------------------------------------------------------ setup

    def start(self) -> DockerEnv:
        labels = {TEST_LABEL: self.prefix}
        self.network = f"{self.prefix}-frontend"
        self.client.networks.create(self.network, driver="bridge", labels=labels)
        self.create_network(f"{self.prefix}-metrics")
        for color in ("blue", "green"):
            self.start_app(color)
        self.start_proxy()
        self.wait_ready()
        return self

    def create_network(self, name: str) -> Any:
        """A network the program renders under the Docker name `name`, with its `internal` flag."""
        found = [n for n in self.graph.of_type("docker:index/network:Network")
                 if n.inputs.get("name") == name]
        if len(found) != 1:
            raise RuntimeError(f"the program renders {len(found)} networks named {name!r}")
        internal = bool(found[0].inputs.get("internal"))
        return self.client.networks.create(name, driver="bridge", internal=internal,
                                           labels={TEST_LABEL: self.prefix})

    def attach(self, container: Any, rendered: Any, network: str) -> None:
        """Connect `container` to `network` with the aliases the program renders for it there."""
        [attachment] = [n for n in rendered.inputs["networksAdvanced"] if n["name"] == network]
        self.client.networks.get(network).connect(container, aliases=attachment.get("aliases") or None)

    def start_app(self, color: str) -> Any:
        """Replica 1 of `color` as the program renders it."""
        from components.app import container_name

        res = rendered_container(self.graph, container_name(self.prefix, color, 1))
        i = res.inputs
        if i["image"] != self.app_image:
            raise RuntimeError(f"the program renders image {i['image']!r}, the test built {self.app_image!r}")
        [attachment] = [n for n in i["networksAdvanced"] if n["name"] == self.network]
        container = self.client.containers.create(
            i["image"], command=i.get("command"), name=i["name"], hostname=i["hostname"],
            environment=rendered_env(res), labels={**res.label_map, TEST_LABEL: self.prefix},
            **hardening(res), network=self.network,
            networking_config={
                self.network: self.client.api.create_endpoint_config(aliases=attachment["aliases"]),
            },
        )
        self.containers.append(container)
        container.start()
        return container

    def start_proxy(self) -> Any:
        """The proxy as the program renders it, on the base image's nginx."""
        from components.nginx.conf import CONF_DIR
        from components.proxy import LISTEN

        res = rendered_container(self.graph, f"{self.prefix}-proxy")
        i = res.inputs
        owner = i["name"]
        files = {key[len(owner):]: content for key, content in self.graph.files().items()
                 if key.startswith(f"{owner}/")}
        if not files or any(not path.startswith(f"{CONF_DIR}/") for path in files):
            raise RuntimeError(f"the program uploads {sorted(files)} into the proxy, expected {CONF_DIR}/*")
        self.proxy_name = owner
        published = {int(p["internal"]) for p in i.get("ports") or []}
        if not {LISTEN.http, LISTEN.preview} <= published:
            raise RuntimeError(f"the program publishes proxy ports {sorted(published)}")
        keywords = hardening(res)
        # The IDS's access-log file lives on the proxy-logs volume (a tmpfs owned by nginx's uid):
        # here a tmpfs with the same owner at the rendered path (issue 14, part 2).
        for vol in i.get("volumes") or []:
            if str(vol.get("volumeName") or "").endswith("-proxy-logs"):
                keywords["tmpfs"] = {**(keywords["tmpfs"] or {}), vol["containerPath"]: "rw,uid=101,gid=101"}
        container = self.client.containers.create(
            self.base_image, command=i["command"], name=owner, hostname=i["hostname"],
            labels={**res.label_map, TEST_LABEL: self.prefix}, **keywords,
            volumes={f"{self.prefix}-proxy-conf": {"bind": CONF_DIR, "mode": "rw"}},
            network=self.network,
            ports={f"{port}/tcp": ("127.0.0.1", None) for port in sorted(published)},
        )
        self.containers.append(container)
        # The status listener binds to the metrics-only alias: nginx does not start without it.
        self.attach(container, res, f"{self.prefix}-metrics")
        # Like the provider's uploads: files go in before the first start, into the
        # volume (Docker refuses to write anywhere else on a read-only rootfs).
        container.put_archive(CONF_DIR, _tar(files, CONF_DIR))
        container.start()
        container.reload()
        ports = container.attrs["NetworkSettings"]["Ports"]
        self.live_url = f"http://127.0.0.1:{ports[f'{LISTEN.http}/tcp'][0]['HostPort']}"
        self.preview_url = f"http://127.0.0.1:{ports[f'{LISTEN.preview}/tcp'][0]['HostPort']}"
        return container

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Both colors answer through the preview listener (X-Preview-Color), like the gate asks."""
        deadline = time.monotonic() + timeout
        pending = {"blue", "green"}
        last: object = None
        while pending and time.monotonic() < deadline:
            for color in sorted(pending):
                try:
                    r = httpx.get(f"{self.preview_url}/health", headers={"X-Preview-Color": color}, timeout=2)
                    last = (r.status_code, r.headers.get("X-Deployment-Color"))
                    if r.status_code == 200 and r.headers.get("X-Deployment-Color") == color:
                        pending.discard(color)
                except httpx.HTTPError as exc:
                    last = exc
            time.sleep(0.1)
        if pending:
            logs = self.logs()
            raise RuntimeError(f"stack not ready ({sorted(pending)} missing; last {last!r}):\n{logs}")

    # ------------------------------------------------------------------ use

    def live(self, path: str = "/health") -> httpx.Response:
        return httpx.get(f"{self.live_url}{path}", timeout=5)

    def live_colors(self, n: int = 10) -> list[str | None]:
        """`X-Deployment-Color` and the app's own color of n fresh live requests."""
        seen: list[str | None] = []
        for _ in range(n):
            r = self.live()
            seen.append(f"{r.status_code}:{r.headers.get('X-Deployment-Color')}:{r.headers.get('X-Upstream-Color')}")
        return seen

    def logs(self) -> str:
        out = []
        for container in self.containers:
            try:
                out.append(f"--- {container.name}\n{container.logs(tail=30).decode(errors='replace')}")
            except Exception as exc:  # noqa: BLE001 - diagnostics only
                out.append(f"--- {container.name}: {exc}")
        return "\n".join(out)

    # ------------------------------------------------------------------ teardown

    def stop(self) -> None:
        cleanup(self.client, self.prefix)


def cleanup(client: Any, prefix: str | None = None) -> None:
    """Remove every container, volume and network of this test label (one prefix, or all)."""
    import docker.errors

    selector = f"{TEST_LABEL}={prefix}" if prefix else TEST_LABEL
    for container in client.containers.list(all=True, filters={"label": selector}):
        with suppress(docker.errors.APIError):
            container.remove(force=True, v=True)
    for network in client.networks.list(filters={"label": selector}):
        with suppress(docker.errors.APIError):
            network.remove()
    if prefix:
        with suppress(docker.errors.APIError):
            client.volumes.get(f"{prefix}-proxy-conf").remove(force=True)


def stale_cleanup(client: Any, older_than_s: float = 3600) -> None:
    """Leftovers of crashed runs (same label, created long ago)."""
    for container in client.containers.list(all=True, filters={"label": TEST_LABEL}):
        created = container.attrs.get("Created", "")
        age = time.time() - _parse_time(created)
        if age > older_than_s:
            cleanup(client, container.labels.get(TEST_LABEL))


def _parse_time(stamp: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(stamp[:26].rstrip("Z") + "+00:00").timestamp()
    except ValueError:
        return time.time()


@contextmanager
def docker_env(prefix: str | None = None) -> Iterator[DockerEnv]:
    """Start the stack, yield it, always tear it down."""
    import docker

    client = docker.from_env(timeout=60)
    base, app = build_images()
    prefix = prefix or f"ptr{os.getpid() % 10000}{secrets.token_hex(2)}"
    stale_cleanup(client)
    env = DockerEnv(
        client=client, prefix=prefix, base_image=base, app_image=app, settings=test_settings(prefix),
        graph=render_stack(prefix),
    )
    try:
        env.start()
        yield env
    finally:
        env.stop()
        client.close()
