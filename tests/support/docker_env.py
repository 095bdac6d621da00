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

`docker_env(work=True)` (issue 15, background work) adds what the work needs, again as the
program renders it: the backend network (internal), Redis and RabbitMQ (command, environment,
uploads: redis.conf, the RabbitMQ conf.d file, plugins and definitions; hardening, restart
policy, healthcheck, aliases `redis`/`rabbitmq`), with only the image replaced by the ci stand-ins
(`paper-trading-ci/redis:7.0`, `paper-trading-ci/rabbitmq:3.10`, `scripts/build-test-images --ci`);
the apps additionally join backend with their aliases and get their rendered
secret files (database/redis/rabbitmq passwords). The test config's `workers` section sets a
1500 ms lease and a 200 ms tick. Nothing of Redis or RabbitMQ is published: the test reaches
them from the host at their addresses on the backend bridge (the host is that bridge's
gateway), which is how it publishes messages with pika and reads Redis; the stack renders no
port for them and the test stack adds none.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from tests.support.docker_render import (
    APP_PORT,
    CI_IMAGES,
    DATASTORE_TIMEOUT_S,
    TEST_LABEL,
    _duration_ns,
    _provider_tar,
    _tar,
    build_images,
    hardening,
    render_stack,
    rendered_container,
    rendered_env,
    test_settings,
)

if TYPE_CHECKING:
    from settings import Color

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
    #: work=True: the backend network, Redis and RabbitMQ, the apps on backend with their secrets.
    work: bool = False
    backend: str = ""
    redis_name: str = ""
    rabbitmq_name: str = ""
    #: FAULTS per color (the reference app's fault switches; not rendered: test-only).
    faults: dict[str, str] = field(default_factory=dict)
    #: Extra environment per color (test-only knobs of the reference app, e.g. WORK_PROCESS_MS).
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)

    # ------------------------------------------------------------------ setup

    def start(self) -> DockerEnv:
        labels = {TEST_LABEL: self.prefix}
        self.network = f"{self.prefix}-frontend"
        self.client.networks.create(self.network, driver="bridge", labels=labels)
        self.create_network(f"{self.prefix}-metrics")
        if self.work:
            self.backend = self.create_network(f"{self.prefix}-backend").name
            self.start_datastores()
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

    def start_app(self, color: Color) -> Any:
        """Replica 1 of `color` as the program renders it (work=True: also on backend, with its secrets)."""
        from stack.app import container_name

        res = rendered_container(self.graph, container_name(self.prefix, color, 1))
        i = res.inputs
        if i["image"] != self.app_image:
            raise RuntimeError(f"the program renders image {i['image']!r}, the test built {self.app_image!r}")
        [attachment] = [n for n in i["networksAdvanced"] if n["name"] == self.network]
        environment = rendered_env(res)
        if self.faults.get(color):
            environment["FAULTS"] = self.faults[color]
        environment.update(self.extra_env.get(color, {}))
        if self.work:
            self.carry(res)
        volumes = self.volumes_of(res) if self.work else None
        container = self.client.containers.create(
            i["image"], command=i.get("command"), name=i["name"], hostname=i["hostname"],
            environment=environment, labels={**res.label_map, TEST_LABEL: self.prefix},
            **hardening(res), network=self.network, volumes=volumes,
            networking_config={
                self.network: self.client.api.create_endpoint_config(aliases=attachment["aliases"]),
            },
        )
        self.containers.append(container)
        if self.work:
            self.attach(container, res, self.backend)
        container.start()
        return container

    def replace_app(self, color: Color, faults: str = "") -> Any:
        """Remove `color`'s container and start it again as rendered, with FAULTS=`faults`."""
        from stack.app import container_name

        name = container_name(self.prefix, color, 1)
        self.client.containers.get(name).remove(force=True, v=True)
        self.containers = [c for c in self.containers if c.name != name]
        self.faults[color] = faults
        return self.start_app(color)

    # ------------------------------------------------------------------ work=True

    def volumes_of(self, res: Any) -> list[str]:
        """The rendered volumes as labelled named volumes ("name:path:mode"); anonymous ones get a name."""
        labels = {TEST_LABEL: self.prefix}
        mounts = []
        for index, vol in enumerate(res.inputs.get("volumes") or []):
            if vol.get("hostPath"):
                raise RuntimeError(f"{res.inputs['name']}: renders a host path {vol['hostPath']!r}")
            name = vol.get("volumeName") or f"{res.inputs['name']}-anon-{index}"
            if not self.client.volumes.list(filters={"name": f"^{name}$"}):
                self.client.volumes.create(name, labels=labels)
            mounts.append(f"{name}:{vol['containerPath']}:{'ro' if vol.get('readOnly') else 'rw'}")
        return mounts

    def carriers_of(self, res: Any) -> list[Any]:
        """The rendered never-started carriers that hold `res`'s files (stack/carrier.py)."""
        from contract import CARRIER_LABEL

        return [c for c in self.graph.containers if c.label_map.get(CARRIER_LABEL) == res.inputs["name"]]

    def carry(self, res: Any, image: str | None = None) -> None:
        """`res`'s carriers like the provider: created (never started) with their named volumes, the
        uploads copied as one archive extracted at `/`; `res` then mounts the volumes read-only."""
        import docker.errors

        for carrier in self.carriers_of(res):
            i = carrier.inputs
            try:
                self.client.containers.get(i["name"])
                continue  # a replaced consumer keeps its carrier, as under the engine
            except docker.errors.NotFound:
                pass
            container = self.client.containers.create(
                image or i["image"], name=i["name"], hostname=i["hostname"],
                labels={**carrier.label_map, TEST_LABEL: self.prefix}, **hardening(carrier),
                volumes=self.volumes_of(carrier), network_mode="none",
            )
            self.containers.append(container)
            uploads = {str(u["file"]): str(u["content"]) for u in i.get("uploads") or []}
            modes = {str(u["file"]): int(str(u.get("permissions") or "0444"), 8)
                     for u in i.get("uploads") or []}
            if not container.put_archive("/", _provider_tar(uploads, modes)):
                raise RuntimeError(f"{i['name']}: the carrier's upload failed")

    def upload(self, container: Any, res: Any) -> None:
        """The rendered uploads, like the provider: into the created container, each into its volume."""
        points = [str(v["containerPath"]).rstrip("/") for v in res.inputs.get("volumes") or []]
        groups: dict[str, dict[str, str]] = {}
        modes: dict[str, int] = {}
        for item in res.inputs.get("uploads") or []:
            path = str(item["file"])
            under = max((p for p in points if path.startswith(p + "/")), key=len, default=None)
            if under is None:
                raise RuntimeError(f"{res.inputs['name']}: upload {path} lies outside every rendered volume")
            groups.setdefault(under, {})[path] = str(item["content"])
            modes[path] = int(str(item.get("permissions") or "0444"), 8)
        for under, files in groups.items():
            if not container.put_archive(under, _tar(files, under, modes)):
                raise RuntimeError(f"{res.inputs['name']}: upload into {under} failed")

    def start_datastore(self, service: str) -> Any:
        """Redis or RabbitMQ as rendered; only the image is the ci stand-in."""
        res = rendered_container(self.graph, f"{self.prefix}-{service}")
        i = res.inputs
        networks = i["networksAdvanced"]
        primary = networks[0]["name"]
        check = i.get("healthcheck")
        if not check:
            raise RuntimeError(f"the program renders no healthcheck for {i['name']}")
        container = self.client.containers.create(
            CI_IMAGES[service], command=i.get("command"), name=i["name"], hostname=i["hostname"],
            environment=list(i.get("envs") or []), labels={**res.label_map, TEST_LABEL: self.prefix},
            **hardening(res), volumes=self.volumes_of(res),
            restart_policy={"Name": i.get("restart") or "no",
                            "MaximumRetryCount": int(i.get("maxRetryCount") or 0)},
            healthcheck={
                # The rendered interval too: each check is a `rabbitmq-diagnostics` Erlang VM in the
                # broker's memory limit; at 1 s they overlapped the handoff's `rabbitmqctl` and the
                # cgroup's OOM killer took the broker (measured, docs/background-work.md).
                "test": list(check["tests"]), "interval": _duration_ns(check.get("interval") or "30s"),
                "timeout": _duration_ns(check.get("timeout") or "30s"),
                "retries": int(check.get("retries") or 3),
                "start_period": _duration_ns(check.get("startPeriod") or "0s"),
            },
            network=primary,
            networking_config={
                primary: self.client.api.create_endpoint_config(aliases=networks[0].get("aliases") or None),
            },
        )
        self.containers.append(container)
        for attachment in networks[1:]:
            self.attach(container, res, attachment["name"])
        self.upload(container, res)
        container.start()
        return container

    def start_datastores(self, timeout: float = DATASTORE_TIMEOUT_S) -> None:
        """Redis and RabbitMQ, started together; both healthy before the apps start (their dependsOn)."""
        started = {service: self.start_datastore(service) for service in ("redis", "rabbitmq")}
        self.redis_name, self.rabbitmq_name = started["redis"].name, started["rabbitmq"].name
        deadline = time.monotonic() + timeout
        pending = dict(started)
        while pending:
            for service, container in list(pending.items()):
                container.reload()
                state = container.attrs["State"]
                if (state.get("Health") or {}).get("Status") == "healthy":
                    del pending[service]
                elif state["Status"] == "exited" and not state.get("Restarting"):
                    raise RuntimeError(f"{container.name} exited ({state.get('ExitCode')}):\n{self.logs()}")
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"not healthy after {timeout:g}s: {sorted(pending)}\n{self.logs()}")
            time.sleep(0.5)

    def address(self, name: str, network: str | None = None) -> str:
        """A container's address on `network` (default: backend), reachable from the host."""
        container = self.client.containers.get(name)
        networks = container.attrs["NetworkSettings"]["Networks"]
        address = (networks.get(network or self.backend) or {}).get("IPAddress")
        if not address:
            raise RuntimeError(f"{name} has no address on {network or self.backend}")
        return str(address)

    def secret(self, path: str) -> str:
        """A secret the program uploads into the blue app (its datastore passwords)."""
        from stack.app import container_name

        res = rendered_container(self.graph, container_name(self.prefix, "blue", 1))
        [content] = [u["content"] for c in self.carriers_of(res) for u in c.inputs.get("uploads") or []
                     if u["file"] == path]
        return str(content)

    def handoff_target(self) -> Any:
        """Where `release.handoff.hand_over` moves the work, with the rendered handoff timeout."""
        from release.handoff import HandoffTarget

        if not self.work:
            raise RuntimeError("handoff_target() needs docker_env(work=True)")
        return HandoffTarget(self.redis_name, self.rabbitmq_name,
                             timeout_s=float(self.settings.workers.handoff_timeout_seconds))

    def redis_client(self) -> Any:
        """redis-py on Redis' backend address, with the rendered password."""
        import redis

        return redis.Redis(host=self.address(self.redis_name), port=6379, decode_responses=True,
                           password=self.secret("/run/secrets/redis_password"), socket_timeout=10)

    def amqp_connection(self) -> Any:
        """A pika connection to RabbitMQ's backend address as the rendered user (publishing from the host)."""
        import pika

        from stack.datastores import RABBITMQ_USER

        return pika.BlockingConnection(pika.ConnectionParameters(
            host=self.address(self.rabbitmq_name), port=5672, socket_timeout=10,
            credentials=pika.PlainCredentials(RABBITMQ_USER, self.secret("/run/secrets/rabbitmq_password")),
            client_properties={"connection_name": "paper-trading-test-publisher"},
        ))

    def management(self, path: str) -> Any:
        """GET on RabbitMQ's management API (backend address, port 15672: never published)."""
        from stack.datastores import RABBITMQ_USER

        r = httpx.get(f"http://{self.address(self.rabbitmq_name)}:15672{path}", timeout=10,
                      auth=(RABBITMQ_USER, self.secret("/run/secrets/rabbitmq_password")))
        r.raise_for_status()
        return r.json()

    def app_url(self, color: Color) -> str:
        """One app replica directly (its frontend address), bypassing the proxy."""
        from stack.app import container_name

        return f"http://{self.address(container_name(self.prefix, color, 1), self.network)}:{APP_PORT}"

    def start_proxy(self) -> Any:
        """The proxy as the program renders it, on the base image's nginx."""
        from render.nginx.conf import CONF_DIR
        from stack.proxy import LISTEN

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
        logs = [v for v in i.get("volumes") or [] if str(v.get("volumeName") or "").endswith("-proxy-logs")]
        for vol in logs:
            keywords["tmpfs"] = {**(keywords["tmpfs"] or {}), vol["containerPath"]: "rw,uid=101,gid=101"}
        # The files as the program delivers them: its never-started carrier fills the configuration
        # volume, which the proxy mounts read-only; the routing markers get a volume of their own.
        self.carry(res, image=self.base_image)
        rendered_volumes = {**i, "volumes": [v for v in i.get("volumes") or [] if v not in logs]}
        volumes = self.volumes_of(dataclasses.replace(res, inputs=rendered_volumes))
        if not any(v.endswith(f":{CONF_DIR}:ro") for v in volumes):
            raise RuntimeError(f"the program mounts {volumes} into the proxy, expected {CONF_DIR} read-only")
        container = self.client.containers.create(
            self.base_image, command=i["command"], name=owner, hostname=i["hostname"],
            labels={**res.label_map, TEST_LABEL: self.prefix}, **keywords,
            volumes=volumes,
            network=self.network,
            ports={f"{port}/tcp": ("127.0.0.1", None) for port in sorted(published)},
        )
        self.containers.append(container)
        # The status listener binds to the metrics-only alias: nginx does not start without it.
        self.attach(container, res, f"{self.prefix}-metrics")
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
    for volume in client.volumes.list(filters={"label": selector}):
        with suppress(docker.errors.APIError):
            volume.remove(force=True)


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
def docker_env(prefix: str | None = None, work: bool = False,
               faults: dict[str, str] | None = None) -> Iterator[DockerEnv]:
    """Start the stack, yield it, always tear it down.

    `work`: also Redis and RabbitMQ and the apps' background work (module docstring);
    `faults`: FAULTS per color for the reference app (test-only, e.g. {"green": "ignore_lease"}).
    """
    import docker

    client = docker.from_env(timeout=60)
    base, app = build_images(ci=work)
    prefix = prefix or f"ptr{os.getpid() % 10000}{secrets.token_hex(2)}"
    stale_cleanup(client)
    env = DockerEnv(
        client=client, prefix=prefix, base_image=base, app_image=app, settings=test_settings(prefix, work),
        graph=render_stack(prefix, work), work=work, faults=dict(faults or {}),
    )
    try:
        env.start()
        yield env
    finally:
        env.stop()
        client.close()
