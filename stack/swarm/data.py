"""Postgres, Redis and RabbitMQ on the data node: one task each, pinned to that node's volumes.

The single host's datastores (stack/datastores.py) as Swarm services: the same images, settings,
generated files and passwords (pulumi-random), which reach the tasks as Docker secrets (tmpfs,
keyed names) and Swarm configs, never as environment values. Swarm does not move data: each
service is constrained to the first `data` node by hostname, its data in a local volume of that
node, so a lost data node stops the work (the apps keep serving) until it returns, rather than
starting an empty store elsewhere. Updates are stop-first: two tasks never share a data volume.
The apps reach them by alias on the internal `backend` overlay.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from contract import SECRETS_DIR, SERVICE_LABEL, STACK_LABEL, swarm_data_service
from settings import DatastoreLimits, Images, Limits, Settings, WorkersConfig
from stack.datastores import (
    DATABASE_NAME,
    DATABASE_USER,
    ENTRYPOINT_CAPS,
    RABBITMQ_DEFINITIONS,
    RABBITMQ_PLUGINS,
    rabbitmq_conf,
    rabbitmq_definitions,
    redis_conf,
)
from stack.swarm.objects import (
    RESTART,
    TIMEZONE_ENV,
    config_object,
    container_labels,
    converge,
    health,
    keyed_name,
    resources,
    rollout,
    secret_b64,
    service_labels,
    tmpfs,
)

RABBITMQ_CONF = "/etc/rabbitmq/conf.d/20-paper-trading.conf"
RABBITMQ_PLUGINS_FILE = "/etc/paper-trading/rabbitmq/enabled_plugins"


@dataclass(frozen=True)
class SwarmDataProps:
    """What the datastores read: images, limits, the work queues, the names' prefix, the data node."""

    name_prefix: str
    images: Images
    limits: DatastoreLimits
    workers: WorkersConfig
    #: The node the datastores live on (its hostname as Swarm reports it).
    data_node: str

    @classmethod
    def of(cls, settings: Settings) -> SwarmDataProps:
        if settings.swarm is None:
            raise ValueError("SwarmDataProps needs swarm settings")
        return cls(settings.name_prefix, settings.images, settings.limits, settings.workers,
                   settings.swarm.labelled("data")[0].name)

    def service_name(self, store: str) -> str:
        return swarm_data_service(self.name_prefix, store)


@dataclass(frozen=True)
class SwarmDataArgs:
    props: SwarmDataProps
    stack: str
    backend_network_id: pulumi.Input[str]
    #: Keys the names of this stack's secrets (the same `random.RandomId` the apps use).
    secret_name_key: random.RandomId


@dataclass(frozen=True)
class _Store:
    """One datastore's task: what differs between the three."""

    name: str
    image: str
    limits: Limits
    target: str
    envs: dict[str, str]
    probe: str
    commands: Sequence[str] = ()
    hostname: str | None = None
    #: Under a minute: the provider reads a service's healthcheck period of a minute or more back as
    #: "1m", not Go's "1m0s", and every preview would then plan an update (found under the real engine).
    start_period: str = "30s"


class SwarmData(pulumi.ComponentResource):
    """The three stateful services on the data node, and the passwords the apps need."""

    def __init__(self, name: str, args: SwarmDataArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("paper-trading:swarm:Datastores", name, None, opts)
        s = args.props
        self._args = args
        self.postgres_password = self._password("postgres-password")
        self.redis_password = self._password("redis-password")
        self.rabbitmq_password = self._password("rabbitmq-password")
        #: The secret files the apps mount: file name -> value.
        self.app_secrets: dict[str, pulumi.Output[str]] = {
            "database_password": self.postgres_password.result,
            "redis_password": self.redis_password.result,
            "rabbitmq_password": self.rabbitmq_password.result,
        }
        self.names = {store: s.service_name(store) for store in ("postgres", "redis", "rabbitmq")}
        self.postgres = self._service(
            _Store("postgres", s.images.postgres, s.limits.postgres, "/var/lib/postgresql/data", {
                "POSTGRES_DB": DATABASE_NAME, "POSTGRES_USER": DATABASE_USER,
                "POSTGRES_PASSWORD_FILE": f"{SECRETS_DIR}/postgres_password",
                "POSTGRES_INITDB_ARGS": "--auth-host=scram-sha-256 --auth-local=scram-sha-256",
                "PGDATA": "/var/lib/postgresql/data/pgdata",
            }, f"pg_isready -h 127.0.0.1 -U {DATABASE_USER} -d {DATABASE_NAME}"),
            secrets={"postgres_password": self.postgres_password.result},
            extra_mounts=[tmpfs("/var/run/postgresql", 16), tmpfs("/tmp", 64)],
        )
        self.redis = self._service(
            _Store("redis", s.images.redis, s.limits.redis, "/data", {},
                   "redis-cli --no-auth-warning -a "
                   f"\"$(sed -n 's/^requirepass //p' {SECRETS_DIR}/redis.conf)\" ping | grep -q PONG",
                   commands=("redis-server", f"{SECRETS_DIR}/redis.conf")),
            secrets={"redis.conf": self.redis_password.result.apply(redis_conf)},
        )
        queues = s.workers.queues
        self.rabbitmq = self._service(
            _Store("rabbitmq", s.images.rabbitmq, s.limits.rabbitmq, "/var/lib/rabbitmq", {
                "RABBITMQ_ENABLED_PLUGINS_FILE": RABBITMQ_PLUGINS_FILE,
                "RABBITMQ_NODENAME": f"rabbit@{self.names['rabbitmq']}",
            }, "rabbitmq-diagnostics -q check_port_connectivity", hostname=self.names["rabbitmq"],
                start_period="55s"),
            secrets={RABBITMQ_DEFINITIONS.rsplit("/", 1)[-1]: self.rabbitmq_password.result.apply(
                lambda password: rabbitmq_definitions(queues, password))},
            configs={RABBITMQ_CONF: rabbitmq_conf(s.limits.rabbitmq.memory_mb),
                     RABBITMQ_PLUGINS_FILE: RABBITMQ_PLUGINS},
            extra_mounts=[tmpfs("/tmp", 64)],
        )
        self.register_outputs({"services": list(self.names.values())})

    def _password(self, name: str) -> random.RandomPassword:
        # Alphanumeric only: the value goes into URLs and config files unescaped.
        return random.RandomPassword(name, length=32, special=False, opts=pulumi.ResourceOptions(parent=self))

    @property
    def services(self) -> list[docker.Service]:
        return [self.postgres, self.redis, self.rabbitmq]

    def _service(self, store: _Store, secrets: dict[str, pulumi.Output[str]],
                 configs: dict[str, str] | None = None,
                 extra_mounts: Sequence[docker.ServiceTaskSpecContainerSpecMountArgs] = ()) -> docker.Service:
        args, s = self._args, self._args.props
        prefix = f"{s.name_prefix}-{store.name}"
        secret_objects: list[docker.Secret] = []
        secret_mounts = []
        for file, value in sorted(secrets.items()):
            name = pulumi.Output.unsecret(pulumi.Output.all(args.secret_name_key.hex, value).apply(
                # The file's stem names it (Swarm allows 64 characters): "<prefix>-redis-<hmac>".
                functools.partial(keyed_name, f"{s.name_prefix}-{file.split('.')[0]}")))
            secret = docker.Secret(f"{store.name}-{file}", name=name, data=secret_b64(value),
                                   opts=pulumi.ResourceOptions(parent=self))
            secret_objects.append(secret)
            # 0444: the entrypoint reads it after dropping from root to the store's own user.
            secret_mounts.append(docker.ServiceTaskSpecContainerSpecSecretArgs(
                secret_id=secret.id, secret_name=secret.name, file_name=f"{SECRETS_DIR}/{file}",
                file_uid="0", file_gid="0", file_mode=0o444))
        config_objects = [config_object(f"{store.name}-config-{i}", f"{prefix}-{path.rsplit('/', 1)[-1]}",
                                        content, self)
                          for i, (path, content) in enumerate(sorted((configs or {}).items()))]
        update, rollback = rollout("stop-first")
        return docker.Service(
            store.name,
            name=self.names[store.name],
            labels=service_labels(args.stack),
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=store.image,
                    commands=list(store.commands) or None,
                    hostname=store.hostname,
                    env={**TIMEZONE_ENV, **store.envs},
                    labels=container_labels({STACK_LABEL: args.stack, SERVICE_LABEL: store.name}),
                    read_only=True,
                    cap_drops=["ALL"],
                    cap_adds=list(ENTRYPOINT_CAPS),
                    mounts=[
                        docker.ServiceTaskSpecContainerSpecMountArgs(
                            type="volume", source=f"{prefix}-data", target=store.target, read_only=False),
                        *extra_mounts,
                    ],
                    secrets=secret_mounts,
                    configs=[
                        docker.ServiceTaskSpecContainerSpecConfigArgs(
                            config_id=config.id, config_name=config.name, file_name=path,
                            file_uid="0", file_gid="0", file_mode=0o444)
                        for config, (path, _) in zip(config_objects, sorted((configs or {}).items()),
                                                     strict=True)
                    ] or None,
                    healthcheck=health(["CMD-SHELL", store.probe], start_period=store.start_period),
                    stop_grace_period="30s",
                ),
                networks_advanceds=[docker.ServiceTaskSpecNetworksAdvancedArgs(
                    id=args.backend_network_id, aliases=[store.name])],
                placement=docker.ServiceTaskSpecPlacementArgs(
                    constraints=["node.labels.data==true", f"node.hostname=={s.data_node}"]),
                resources=resources(store.limits),
                restart_policy=RESTART,
            ),
            mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=1)),
            endpoint_spec=docker.ServiceEndpointSpecArgs(mode="dnsrr"),
            update_config=update,
            rollback_config=rollback,
            converge_config=converge(),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*secret_objects, *config_objects]),
        )


def handoff_props(workers: WorkersConfig, data: SwarmData,
                  data_node: dict[str, Any]) -> dict[str, Any] | None:
    """The Swarm switch's `handoff` input: the data node and its Redis and RabbitMQ services (their
    task containers are found at switch time); None when the stack runs no background work."""
    if not workers.enabled:
        return None
    return {"dataNode": data_node, "redisService": data.names["redis"],
            "rabbitmqService": data.names["rabbitmq"], "timeoutS": workers.handoff_timeout_seconds,
            "queues": list(workers.queues)}
