"""Postgres, Redis and RabbitMQ on the internal backend network.

Passwords come from pulumi-random and reach the containers as files in a volume
private to each container, never as environment values (which `docker inspect`
would show to anyone with access to the engine).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from contract import SECRETS_DIR
from settings import DatastoreLimits, Images, Settings, WorkersConfig
from stack.common import (
    NetworkNames,
    config_file,
    hardened_container_args,
    healthcheck,
    scratch_volume,
    secret_file,
)
from stack.volumes import Volumes

DATABASE_NAME = "trading_bot"
DATABASE_USER = "trading"
RABBITMQ_USER = "trading"
# Official images start as root, fix data-directory ownership, then drop to their
# own user: these are the capabilities that step needs, nothing more.
ENTRYPOINT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID")


@dataclass(frozen=True)
class DatastoresProps:
    """What the datastores read: their images and limits, the work queues, the names' prefix."""

    name_prefix: str
    images: Images
    limits: DatastoreLimits
    workers: WorkersConfig

    @classmethod
    def of(cls, settings: Settings) -> DatastoresProps:
        return cls(settings.name_prefix, settings.images, settings.limits, settings.workers)


@dataclass(frozen=True)
class DatastoresArgs:
    props: DatastoresProps
    networks: NetworkNames
    volumes: Volumes
    stack_labels: Mapping[str, str]


def _password(name: str, parent: pulumi.Resource) -> random.RandomPassword:
    # Alphanumeric only: the value goes into URLs and config files unescaped.
    return random.RandomPassword(
        name, length=32, special=False, opts=pulumi.ResourceOptions(parent=parent)
    )


def redis_conf(password: str) -> str:
    """Redis config with auth and append-only persistence; a secret (holds the password)."""
    return (
        f"requirepass {password}\n"
        "appendonly yes\n"
        "appendfsync everysec\n"
        "save 900 1\nsave 300 10\n"
        "dir /data\n"
        "protected-mode yes\n"
        "rename-command FLUSHALL \"\"\n"
        "rename-command FLUSHDB \"\"\n"
    )


RABBITMQ_DEFINITIONS = f"{SECRETS_DIR}/rabbitmq_definitions.json"


#: Share of the container's memory limit RabbitMQ may use before it blocks publishers. It does
#: not read the cgroup limit itself (it would take 40% of the host's memory and be OOM-killed
#: first); the rest is for the Erlang VMs of `rabbitmqctl`/`rabbitmq-diagnostics` (healthcheck,
#: the switch's consumer check), about 50 MiB each, which run in the same cgroup.
RABBITMQ_MEMORY_SHARE = 0.4


def rabbitmq_conf(memory_limit_mb: int) -> str:
    """RabbitMQ settings: the broker's objects come from the definitions file, nothing else.

    With `load_definitions` set, RabbitMQ seeds no default user or vhost on a fresh node
    (its boot log says "Will not seed default virtual host and user: have definitions to
    load"; measured on 3.10, the same code in 3.13), so `default_user`/`default_pass` would be
    dead settings: the definitions carry our user (`rabbitmq_definitions`). They are applied
    at every boot, so a rotated password reaches an existing node too, which `default_pass`
    (fresh nodes only) never did. Per-object metrics: `rabbitmq_queue_messages_ready` and
    `rabbitmq_queue_consumers` per `{vhost, queue}` on the usual `/metrics` (the queue alert).
    The memory high watermark is absolute, a share of the container's limit.
    """
    watermark = max(64, int(memory_limit_mb * RABBITMQ_MEMORY_SHARE))
    return (
        f"load_definitions = {RABBITMQ_DEFINITIONS}\n"
        f"vm_memory_high_watermark.absolute = {watermark}MiB\n"
        "loopback_users.guest = true\n"
        "prometheus.tcp.port = 15692\n"
        "prometheus.return_per_object_metrics = true\n"
    )


#: RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt + sha256(salt + password)).
RABBITMQ_HASHING = "rabbit_password_hashing_sha256"
_SALT_KEY = b"paper-trading rabbitmq definitions salt"


def rabbitmq_password_hash(password: str) -> str:
    """The password as RabbitMQ stores it, with a 4-byte salt derived from the password.

    RabbitMQ draws a random salt; a derived one keeps the definitions file, and so the
    container's uploads, identical from one `pulumi up` to the next (a random one would replace
    the broker on every run). The password is 32 random alphanumerics: no table of precomputed
    hashes covers it either way.
    """
    salt = hmac.new(_SALT_KEY, password.encode(), hashlib.sha256).digest()[:4]
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def rabbitmq_definitions(queues: Sequence[str], password: str) -> str:
    """The broker's objects (RabbitMQ definitions JSON), loaded at every boot; a secret (hash).

    The vhost `/`, our user (administrator: the management API answers the switch's handoff
    check and the backup's export) with all permissions on `/`, and the background-work queues:
    durable, and `x-single-active-consumer` so the broker itself delivers each queue to one
    consumer at a time (the second fence behind the Redis lease). The apps declare
    them only passively.
    """
    document = {
        "vhosts": [{"name": "/"}],
        "users": [{
            "name": RABBITMQ_USER, "password_hash": rabbitmq_password_hash(password),
            "hashing_algorithm": RABBITMQ_HASHING, "tags": ["administrator"],
        }],
        "permissions": [
            {"user": RABBITMQ_USER, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
        ],
        "queues": [
            {"name": name, "vhost": "/", "durable": True, "auto_delete": False,
             "arguments": {"x-single-active-consumer": True}}
            for name in queues
        ],
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


RABBITMQ_PLUGINS = "[rabbitmq_prometheus,rabbitmq_management].\n"


class Datastores(pulumi.ComponentResource):
    """The three stateful services, each on its own data volume."""

    def __init__(self, name: str, args: DatastoresArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("paper-trading:datastores:Datastores", name, None, opts)
        s, prefix = args.props, args.props.name_prefix
        self.database_name = DATABASE_NAME
        self.database_user = DATABASE_USER
        self.postgres_password = _password("postgres-password", self)
        self.redis_password = _password("redis-password", self)
        self.rabbitmq_password = _password("rabbitmq-password", self)

        self.images: dict[str, docker.RemoteImage] = {
            service: docker.RemoteImage(
                f"{service}-image", name=ref, keep_locally=True,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for service, ref in (
                ("postgres", s.images.postgres), ("redis", s.images.redis), ("rabbitmq", s.images.rabbitmq),
            )
        }
        backend = {args.networks.backend: ["postgres"]}
        self.postgres = docker.Container(
            "postgres",
            **hardened_container_args(
                image=s.images.postgres, name=f"{prefix}-postgres", service="postgres",
                stack_labels=args.stack_labels, networks=backend, limits=s.limits.postgres,
                envs=[
                    f"POSTGRES_DB={DATABASE_NAME}",
                    f"POSTGRES_USER={DATABASE_USER}",
                    f"POSTGRES_PASSWORD_FILE={SECRETS_DIR}/postgres_password",
                    "POSTGRES_INITDB_ARGS=--auth-host=scram-sha-256 --auth-local=scram-sha-256",
                    "PGDATA=/var/lib/postgresql/data/pgdata",
                ],
                tmpfs={
                    "/var/run/postgresql": "rw,noexec,nosuid,size=16m",
                    "/tmp": "rw,noexec,nosuid,size=64m",
                },
                volumes=[
                    args.volumes.mount("postgres", "/var/lib/postgresql/data"),
                    scratch_volume(SECRETS_DIR),
                ],
                uploads=[secret_file(
                    f"{SECRETS_DIR}/postgres_password", self.postgres_password.result, mode="0444",
                )],
                healthcheck=healthcheck(
                    ["CMD-SHELL", f"pg_isready -h 127.0.0.1 -U {DATABASE_USER} -d {DATABASE_NAME}"]
                ),
                wait=True,
                capability_adds=ENTRYPOINT_CAPS,
            ),
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.images["postgres"]], delete_before_replace=True,
            ),
        )
        self.redis = docker.Container(
            "redis",
            **hardened_container_args(
                image=s.images.redis, name=f"{prefix}-redis", service="redis",
                stack_labels=args.stack_labels, networks={args.networks.backend: ["redis"]},
                limits=s.limits.redis,
                command=["redis-server", f"{SECRETS_DIR}/redis.conf"],
                volumes=[args.volumes.mount("redis", "/data"), scratch_volume(SECRETS_DIR)],
                uploads=[secret_file(
                    f"{SECRETS_DIR}/redis.conf", self.redis_password.result.apply(redis_conf), mode="0444",
                )],
                healthcheck=healthcheck([
                    "CMD-SHELL",
                    "redis-cli --no-auth-warning -a \"$(sed -n 's/^requirepass //p' "
                    f"{SECRETS_DIR}/redis.conf)\" ping | grep -q PONG",
                ]),
                wait=True,
                capability_adds=ENTRYPOINT_CAPS,
            ),
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.images["redis"]], delete_before_replace=True,
            ),
        )
        self.rabbitmq = docker.Container(
            "rabbitmq",
            **hardened_container_args(
                image=s.images.rabbitmq, name=f"{prefix}-rabbitmq", service="rabbitmq",
                stack_labels=args.stack_labels,
                networks={args.networks.backend: ["rabbitmq"], args.networks.metrics: ["rabbitmq"]},
                limits=s.limits.rabbitmq,
                envs=[
                    "RABBITMQ_ENABLED_PLUGINS_FILE=/etc/paper-trading/rabbitmq/enabled_plugins",
                    f"RABBITMQ_NODENAME=rabbit@{prefix}-rabbitmq",
                ],
                tmpfs={"/tmp": "rw,noexec,nosuid,size=64m"},
                volumes=[
                    args.volumes.mount("rabbitmq", "/var/lib/rabbitmq"),
                    scratch_volume("/etc/rabbitmq/conf.d"),
                    scratch_volume("/etc/paper-trading/rabbitmq"),
                    scratch_volume(SECRETS_DIR),
                ],
                uploads=[
                    config_file("/etc/rabbitmq/conf.d/20-paper-trading.conf",
                                rabbitmq_conf(s.limits.rabbitmq.memory_mb)),
                    config_file("/etc/paper-trading/rabbitmq/enabled_plugins", RABBITMQ_PLUGINS),
                    # 0444: the server reads it after dropping from root to its own user.
                    secret_file(
                        RABBITMQ_DEFINITIONS,
                        self.rabbitmq_password.result.apply(
                            lambda password: rabbitmq_definitions(s.workers.queues, password)),
                        mode="0444",
                    ),
                ],
                # Healthy = every listener accepts (AMQP, management, Prometheus): the plugins have
                # started, so the boot-time definitions (user, work queues) are applied. `ping`
                # answered seconds earlier, while the rabbit app was still starting.
                healthcheck=healthcheck(
                    ["CMD-SHELL", "rabbitmq-diagnostics -q check_port_connectivity"], start_period="60s",
                ),
                wait=True,
                wait_timeout=180,
                capability_adds=ENTRYPOINT_CAPS,
            ),
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.images["rabbitmq"]], delete_before_replace=True,
            ),
        )
        self.register_outputs({
            "postgres": self.postgres.name, "redis": self.redis.name, "rabbitmq": self.rabbitmq.name,
        })

    @property
    def containers(self) -> list[docker.Container]:
        return [self.postgres, self.redis, self.rabbitmq]


def handoff_props(workers: WorkersConfig, datastores: Datastores) -> dict[str, Any] | None:
    """The routing switch's `handoff` input for this stack: its Redis and RabbitMQ containers
    and `workers.handoffTimeoutSeconds`; None when the stack runs no background work."""
    if not workers.enabled:
        return None
    return {"redisContainer": datastores.redis.name, "rabbitmqContainer": datastores.rabbitmq.name,
            "timeoutS": workers.handoff_timeout_seconds, "queues": list(workers.queues)}
