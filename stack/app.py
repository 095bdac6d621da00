"""One color (blue or green) of the Node.js trading app: `replicas` hardened containers.

The paper-trading switches are plain, known-at-preview environment values so the
policy pack can read them; every credential is a file in a volume private to the
container, filled by a never-started carrier and mounted read-only
(stack/carrier.py). Exchange permissions travel with the keys so the app can refuse a key
that is not declared read-only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_docker as docker
from pydantic import SecretStr

from contract import APP_ROLE, COLOR_LABEL, ROLE_LABEL, SECRETS_DIR
from settings import AppConfig, Color, Settings
from stack.carrier import carry
from stack.common import (
    NetworkNames,
    hardened_container_args,
    healthcheck,
    http_probe,
    secret_file,
)
from stack.datastores import DATABASE_NAME, DATABASE_USER, RABBITMQ_USER, Datastores


@dataclass(frozen=True)
class AppColorProps:
    """What one color's containers read: its image and replicas, the app's section, its port,
    its environment (`app_envs`: the safety switches, peers, work contract, exchange metadata)
    and the secret files the settings hold (the database URL, the exchange keys)."""

    name_prefix: str
    image: str
    replicas: int
    port: int
    app: AppConfig
    envs: tuple[str, ...]
    secret_files: tuple[tuple[str, SecretStr], ...]

    @classmethod
    def of(cls, settings: Settings, color: Color) -> AppColorProps:
        deployed = settings.deployment.color(color)
        return cls(settings.name_prefix, deployed.image, deployed.replicas, settings.server.port,
                   settings.app, tuple(app_envs(settings, color)), settings_secret_files(settings))


@dataclass(frozen=True)
class AppColorArgs:
    color: Color
    props: AppColorProps
    networks: NetworkNames
    datastores: Datastores
    stack_labels: Mapping[str, str]
    #: The live color (release/plan.py): its containers keep their recorded inputs
    #: (`ignore_changes=["*"]`), so no change reaches it in place; new replicas are created.
    pinned: bool = False
    #: Checked before any container of this color is touched (the release guard).
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)


#: Every input: the engine keeps the recorded value of each (it neither replaces nor updates).
PIN_ALL = ["*"]


def alias(color: Color) -> str:
    """The DNS name the proxy and Prometheus use for every replica of a color."""
    return f"app-{color}"


def container_name(prefix: str, color: Color, index: int) -> str:
    return f"{prefix}-app-{color}-{index}"


def safety_envs(color: Color) -> list[str]:
    """The paper-trading switches every app container carries, exactly once each."""
    return [
        "NODE_ENV=production",
        "PAPER_TRADING_MODE=true",
        "ALLOW_REAL_TRADES=false",
        f"DEPLOYMENT_COLOR={color}",
    ]


def work_envs(settings: Settings) -> list[str]:
    """The background-work contract's settings (contract/work.py).

    The same for both colors: which color does the work is decided at run time by the Redis
    lease, never by the deploy, so a switch replaces no container.
    """
    w = settings.workers
    return [
        f"WORK_ENABLED={'true' if w.enabled else 'false'}",
        f"WORK_QUEUES={','.join(w.queues)}",
        f"WORK_LEASE_TTL_MS={w.lease_ttl_ms}",
        f"WORK_PREFETCH={w.prefetch}",
        f"WORK_TICK_MS={w.tick_ms}",
    ]


def app_envs(settings: Settings, color: Color) -> list[str]:
    """Everything the app needs to find its peers; no secret values, only file paths."""
    s = settings
    envs = safety_envs(color) + [
        f"PORT={s.server.port}",
        "HOST=0.0.0.0",
        f"LOG_LEVEL={s.app.log_level}",
        "DATABASE_HOST=postgres",
        "DATABASE_PORT=5432",
        f"DATABASE_NAME={DATABASE_NAME}",
        f"DATABASE_USER={DATABASE_USER}",
        f"DATABASE_PASSWORD_FILE={SECRETS_DIR}/database_password",
        f"DATABASE_SSL={'true' if s.database.ssl else 'false'}",
        f"DATABASE_POOL_SIZE={s.database.pool_size}",
        "REDIS_HOST=redis",
        "REDIS_PORT=6379",
        f"REDIS_PASSWORD_FILE={SECRETS_DIR}/redis_password",
        "RABBITMQ_HOST=rabbitmq",
        "RABBITMQ_PORT=5672",
        f"RABBITMQ_USER={RABBITMQ_USER}",
        f"RABBITMQ_PASSWORD_FILE={SECRETS_DIR}/rabbitmq_password",
    ]
    envs += work_envs(s)
    if s.database.url is not None:
        envs.append(f"DATABASE_URL_FILE={SECRETS_DIR}/database_url")
    for name, exchange in s.exchanges.configured().items():
        upper = name.upper()
        envs += [
            f"{upper}_API_KEY_FILE={SECRETS_DIR}/{name}_api_key",
            f"{upper}_PERMISSIONS={exchange.permissions}",
            f"{upper}_SANDBOX={'true' if exchange.sandbox else 'false'}",
            f"{upper}_BASE_URL={s.exchanges.base_url(name)}",
        ]
        if exchange.api_secret is not None:
            envs.append(f"{upper}_API_SECRET_FILE={SECRETS_DIR}/{name}_api_secret")
        if exchange.passphrase is not None:
            envs.append(f"{upper}_PASSPHRASE_FILE={SECRETS_DIR}/{name}_passphrase")
    return envs


def settings_secret_files(settings: Settings) -> tuple[tuple[str, SecretStr], ...]:
    """The secret files whose values the settings hold: the database URL, the exchange keys."""
    files: list[tuple[str, SecretStr]] = []
    if settings.database.url is not None:
        files.append(("database_url", settings.database.url))
    for name, exchange in settings.exchanges.configured().items():
        files.append((f"{name}_api_key", exchange.api_key))
        if exchange.api_secret is not None:
            files.append((f"{name}_api_secret", exchange.api_secret))
        if exchange.passphrase is not None:
            files.append((f"{name}_passphrase", exchange.passphrase))
    return tuple(files)


def app_secret_files(
    props: AppColorProps, datastores: Datastores,
) -> list[tuple[docker.ContainerUploadArgs, pulumi.Input[str]]]:
    """Each secret file's upload and its value (the carrier's volume name hashes the value)."""
    owner = props.app.user.split(":")[0]
    files: list[tuple[str, pulumi.Input[str]]] = [
        ("database_password", datastores.postgres_password.result),
        ("redis_password", datastores.redis_password.result),
        ("rabbitmq_password", datastores.rabbitmq_password.result),
        *((file, value.get_secret_value()) for file, value in props.secret_files),
    ]
    return [(secret_file(f"{SECRETS_DIR}/{file}", value, owner=owner), value) for file, value in files]


class AppColor(pulumi.ComponentResource):
    """All replicas of one color, reachable as `app-<color>` on the frontend and backend networks."""

    def __init__(self, name: str, args: AppColorArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("paper-trading:app:AppColor", name, None, opts)
        s, color = args.props, args.color
        self.color = color
        self.alias = alias(color)
        self.image_ref = s.image
        pin = PIN_ALL if args.pinned else None
        self.image = docker.RemoteImage(
            f"{color}-image", name=s.image, keep_locally=True,
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=pin, depends_on=list(args.depends_on)),
        )
        ready = f"http://127.0.0.1:{s.port}{s.app.health.ready}"
        envs = list(s.envs)
        # Frontend (the proxy) and backend (datastores) only: never a network of the monitoring
        # control plane or the scrape network. Prometheus reads the replicas' metrics and
        # readiness through the proxy's status relay (docs/monitoring.md, "Networks").
        networks = {
            args.networks.frontend: [self.alias],
            args.networks.backend: [self.alias],
        }
        self.containers: list[docker.Container] = []
        #: Per replica: the never-started carrier and the volume holding its secret files.
        self.carriers: list[docker.Container] = []
        self.file_volumes: list[docker.Volume] = []
        app_labels = {ROLE_LABEL: APP_ROLE, COLOR_LABEL: color}
        for index in range(1, s.replicas + 1):
            name_ = container_name(s.name_prefix, color, index)
            # The secret files arrive through a carrier (stack/carrier.py), so the app's root
            # stays read-only. The carrier is an app container of this color for every policy
            # (same image, safety envs and labels), never started, on the backend network only.
            # Pinned like the replicas: a shared change (a new exchange key) neither rewrites the
            # files the live color reads nor deletes the volume it has mounted.
            carried = carry(
                f"{color}-{index}", consumer=name_, directory=SECRETS_DIR,
                files=app_secret_files(s, args.datastores),
                container_args=dict(
                    image=s.image, service=f"app-{color}", stack_labels=args.stack_labels,
                    networks={args.networks.backend: []}, limits=s.app.limits, user=s.app.user,
                    envs=envs, healthcheck=healthcheck(http_probe(ready)), extra_labels=app_labels,
                ),
                opts=pulumi.ResourceOptions(
                    parent=self, depends_on=[self.image, *args.depends_on], ignore_changes=pin,
                ),
            )
            self.carriers.append(carried.carrier)
            self.file_volumes.append(carried.volume)
            self.containers.append(docker.Container(
                f"{color}-{index}",
                **hardened_container_args(
                    image=s.image, name=name_, service=f"app-{color}",
                    stack_labels=args.stack_labels, networks=networks, limits=s.app.limits,
                    user=s.app.user, envs=envs,
                    tmpfs={"/tmp": "rw,noexec,nosuid,size=64m"},
                    volumes=[carried.mount],
                    healthcheck=healthcheck(http_probe(ready)),
                    wait=True,
                    extra_labels=app_labels,
                ),
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=[self.image, carried.carrier, *args.datastores.containers, *args.depends_on],
                    delete_before_replace=True,
                    ignore_changes=pin,
                ),
            ))
        self.register_outputs({"containers": [c.name for c in self.containers]})


#: The code that turns settings into an app container: a change here changes what a color runs.
CONTAINER_CODE = ("app.py", "carrier.py", "common.py")


def _sha(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def color_fingerprint(settings: Settings, color: Color, code_root: Path | None = None) -> str:
    """sha256 over what `color`'s containers are built from, except its replica count.

    The settings its containers read (envs, secret-file values, limits, user, health paths,
    image) and the source of the modules that build them. Secrets enter only as a hash.
    """
    s = settings
    secret_values = [s.database.url.get_secret_value() if s.database.url else ""]
    for name, exchange in sorted(s.exchanges.configured().items()):
        secret_values += [name, exchange.api_key.get_secret_value(),
                          exchange.api_secret.get_secret_value() if exchange.api_secret else "",
                          exchange.passphrase.get_secret_value() if exchange.passphrase else ""]
    material = {
        "image": s.deployment.color(color).image,
        "envs": app_envs(s, color),
        "limits": s.app.limits.model_dump(mode="json"),
        "user": s.app.user,
        "port": s.server.port,
        "health": s.app.health.model_dump(mode="json"),
        "prefix": s.name_prefix,
        "secrets": _sha(*(value.encode() for value in secret_values)),
    }
    root = code_root or Path(__file__).resolve().parent
    code = [(root / name).read_bytes() for name in CONTAINER_CODE]
    return _sha(json.dumps(material, sort_keys=True).encode(), *code)
