"""One color of the app as a Swarm service: `replicas` tasks spread over the nodes, reached by DNS.

The same container contract as the single-host color (stack/app.py): the same safety envs, the
same secret files under SECRETS_DIR (Docker secrets here, on each task's tmpfs), a read-only
root, every capability dropped. `endpoint_mode=dnsrr`: the proxy resolves `app-<color>` to
every running task and retries the next one (no virtual IP: this kernel has no IPVS, and the
proxy's own retry is what the single host uses too). Start-first updates keep the old task
until the new one is healthy; a failed update is rolled back by Swarm itself.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_docker as docker
import pulumi_random as random
from pydantic import SecretStr

from contract import (
    APP_ROLE,
    COLOR_LABEL,
    ROLE_LABEL,
    SECRETS_DIR,
    SERVICE_LABEL,
    STACK_LABEL,
    swarm_app_service,
)
from settings import AppConfig, Color, Settings
from stack.app import alias, app_envs, color_fingerprint, settings_secret_files
from stack.common import http_probe
from stack.swarm.objects import (
    APP_SYSCTLS,
    RESTART,
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


@dataclass(frozen=True)
class SwarmColorProps:
    """What one color's service reads: image, replicas, the app's section, port, envs, secret files."""

    name_prefix: str
    image: str
    replicas: int
    port: int
    app: AppConfig
    envs: tuple[str, ...]
    secret_files: tuple[tuple[str, SecretStr], ...]

    @classmethod
    def of(cls, settings: Settings, color: Color) -> SwarmColorProps:
        deployed = settings.deployment.color(color)
        return cls(settings.name_prefix, deployed.image, deployed.replicas, settings.server.port,
                   settings.app, tuple(app_envs(settings, color)), settings_secret_files(settings))


@dataclass(frozen=True)
class SwarmColorArgs:
    color: Color
    props: SwarmColorProps
    stack: str
    frontend_network_id: pulumi.Input[str]
    #: The datastores' network (stack/swarm/data.py) and the secret files the app reads from them.
    backend_network_id: pulumi.Input[str]
    data_secrets: Mapping[str, pulumi.Output[str]]
    #: Keys the names of this stack's secrets (a `random.RandomId`, in the state only).
    secret_name_key: random.RandomId
    #: The live color: the service keeps its recorded inputs (a release never changes it in place).
    pinned: bool = False
    #: The auto-scaler owns the live color's replica count (release/swarm/autoscale.py): `up` leaves it.
    autoscaled: bool = False
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)


#: The live color's service keeps every recorded input but its replica count: Swarm scales a
#: service without touching its running tasks, so the live color may scale out (release/plan.py
#: allows it only when nothing else about it changed), never change in place.
PINNED_INPUTS = ["name", "labels", "taskSpec", "endpointSpec", "updateConfig", "rollbackConfig",
                 "convergeConfig", "auth"]


def service_name(prefix: str, color: Color) -> str:
    return swarm_app_service(prefix, color)


def env_map(envs: Sequence[str]) -> dict[str, str]:
    """`KEY=value` entries as the service's env map; a key given twice is an error, not a silent override."""
    found: dict[str, str] = {}
    for entry in envs:
        key, sep, value = entry.partition("=")
        if not sep or key in found:
            raise ValueError(f"app env {key!r} is malformed or set twice")
        found[key] = value
    return found


#: Where app tasks may run: any node but a data node.
APP_PLACEMENT = "node.labels.data!=true"


class SwarmColor(pulumi.ComponentResource):
    """All replicas of one color as one service, `app-<color>` on the frontend overlay."""

    def __init__(self, name: str, args: SwarmColorArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("paper-trading:swarm:AppColor", name, None, opts)
        s, color = args.props, args.color
        pin = ([*PINNED_INPUTS, "mode"] if args.autoscaled else PINNED_INPUTS) if args.pinned else None
        owner = s.app.user.split(":")[0]
        group = s.app.user.split(":")[1] if ":" in s.app.user else owner
        self.secrets: list[docker.Secret] = []
        mounts: list[docker.ServiceTaskSpecContainerSpecSecretArgs] = []
        files: list[tuple[str, pulumi.Input[str]]] = [
            *sorted(args.data_secrets.items()),
            *((file, value.get_secret_value()) for file, value in s.secret_files)]
        for file, value in files:
            secret_name = pulumi.Output.unsecret(pulumi.Output.all(args.secret_name_key.hex, value).apply(
                functools.partial(keyed_name, f"{s.name_prefix}-{color}-{file}")))
            secret = docker.Secret(
                f"{color}-{file}", name=secret_name,
                data=secret_b64(value),
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=["*"] if args.pinned else None),
            )
            self.secrets.append(secret)
            mounts.append(docker.ServiceTaskSpecContainerSpecSecretArgs(
                secret_id=secret.id, secret_name=secret.name, file_name=f"{SECRETS_DIR}/{file}",
                file_uid=owner, file_gid=group, file_mode=0o400))
        ready = f"http://127.0.0.1:{s.port}{s.app.health.ready}"
        self.name = service_name(s.name_prefix, color)
        # Start-first, every task at once: placed one at a time, each new task ties with the old
        # one it replaces and the scheduler can put them all on one node (seen: a rotated key's
        # release refused by `swarm.spread`); placed as one batch, spread puts them on the
        # emptiest nodes. Only the idle color is ever updated (the live one is pinned).
        update, rollback = rollout("start-first", parallelism=0)
        self.service = docker.Service(
            color,
            name=self.name,
            labels=service_labels(args.stack),
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=s.image,
                    env=env_map(s.envs),
                    labels=container_labels({
                        STACK_LABEL: args.stack, SERVICE_LABEL: f"app-{color}", ROLE_LABEL: APP_ROLE,
                        COLOR_LABEL: color,
                    }),
                    user=s.app.user,
                    read_only=True,
                    cap_drops=["ALL"],
                    sysctl=APP_SYSCTLS,
                    mounts=[tmpfs("/tmp", 64)],
                    secrets=mounts or None,
                    healthcheck=health(http_probe(ready)),
                    stop_grace_period="10s",
                ),
                networks_advanceds=[
                    docker.ServiceTaskSpecNetworksAdvancedArgs(id=args.frontend_network_id,
                                                               aliases=[alias(color)]),
                    docker.ServiceTaskSpecNetworksAdvancedArgs(id=args.backend_network_id,
                                                               aliases=[alias(color)]),
                ],
                # Not on a data node: its memory and disk are the datastores' (stack/swarm/data.py).
                placement=docker.ServiceTaskSpecPlacementArgs(constraints=[APP_PLACEMENT],
                                                              prefs=["spread=node.id"]),
                resources=resources(s.app.limits),
                restart_policy=RESTART,
            ),
            mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=s.replicas)),
            endpoint_spec=docker.ServiceEndpointSpecArgs(mode="dnsrr"),
            update_config=update,
            rollback_config=rollback,
            converge_config=converge(),
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=pin,
                                        depends_on=[*self.secrets, *args.depends_on]),
        )
        self.register_outputs({"service": self.service.name})


def color_service_names(prefix: str) -> Mapping[Color, str]:
    return {"blue": service_name(prefix, "blue"), "green": service_name(prefix, "green")}


#: The Swarm target's own code that turns settings into a color's service.
SWARM_CODE = ("app.py", "objects.py")


def swarm_color_fingerprint(settings: Settings, color: Color) -> str:
    """What a color's service is built from: the single host's fingerprint (settings, container
    contract) and the Swarm modules that build the service."""
    digest = hashlib.sha256(color_fingerprint(settings, color).encode())
    for name in SWARM_CODE:
        digest.update((Path(__file__).resolve().parent / name).read_bytes())
    return digest.hexdigest()
