"""Intrusion detection with automatic bans: fail2ban on the proxy's access log.

One unprivileged container (role `ids`): no capabilities, uid 65534, read-only root, no host
network, joined only to the internal `metrics` network, where Prometheus scrapes its metrics
(job `ids`, alias `ids`, port 9191); it calls nobody.
It reads the proxy's JSON access log from the `proxy-logs` volume (read-only) and writes one
decision file per banned address into the `decisions` volume, which the host guard
(stack/firewall.py) turns into nftables set elements. It never touches a firewall itself.

The generated configuration (render/ids) reaches the container as one environment
value (base64 JSON: relative path -> text) that a short bootstrap (programs/ids/bootstrap.py)
writes to a tmpfs: uploads would need a writable root filesystem (stack/common.py), and
nothing in it is secret.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

import programs
from contract import ROLE_LABEL
from render.ids import (
    ACCESS_LOG_DIR,
    DECISIONS_DIR,
    HEARTBEAT_SECONDS,
    METRICS_ALIAS,
    RUN_DIR,
    IdsPaths,
    bundle,
)
from settings import Limits, Settings
from stack.common import NetworkNames, hardened_container_args, healthcheck
from stack.volumes import runtime_volume_name

IDS_ROLE = "ids"
#: nobody: owns the `decisions` volume (stack/volumes.py RUNTIME_VOLUMES).
IDS_USER = "65534:65534"
BUNDLE_ENV = "IDS_CONFIG_BUNDLE"
LIMITS = Limits(memory_mb=192, cpus=0.5)

#: Writes the bundle into the tmpfs and runs the supervisor (programs/ids/bootstrap.py, by
#: the image's python3 `-c`; its arguments: RUN_DIR and BUNDLE_ENV).
BOOTSTRAP = programs.text("ids/bootstrap.py")


@dataclass(frozen=True)
class IdsProps:
    """What the IDS reads: its image, the names' prefix and its rendered bundle (jails, filters,
    actions: render/ids from `security.ids` and the proxy's log format)."""

    name_prefix: str
    image: str
    files: Mapping[str, str]

    @classmethod
    def of(cls, settings: Settings) -> IdsProps:
        return cls(settings.name_prefix, settings.images.ids, ids_bundle(settings))


@dataclass(frozen=True)
class IdsArgs:
    props: IdsProps
    networks: NetworkNames
    stack_labels: Mapping[str, str]
    depends_on: Sequence[pulumi.Resource] = ()


def ids_bundle(settings: Settings) -> dict[str, str]:
    return bundle(settings, IdsPaths())


def ids_envs(files: Mapping[str, str]) -> list[str]:
    encoded = base64.b64encode(json.dumps(dict(files), sort_keys=True).encode()).decode()
    return [f"{BUNDLE_ENV}={encoded}", "PYTHONDONTWRITEBYTECODE=1"]


def ids_volumes(prefix: str) -> list[docker.ContainerVolumeArgs]:
    return [
        docker.ContainerVolumeArgs(volume_name=runtime_volume_name(prefix, "proxy-logs"),
                                   container_path=ACCESS_LOG_DIR, read_only=True),
        docker.ContainerVolumeArgs(volume_name=runtime_volume_name(prefix, "decisions"),
                                   container_path=DECISIONS_DIR, read_only=False),
    ]


class Ids(pulumi.ComponentResource):
    """fail2ban, unprivileged, deciding bans the host guard enforces."""

    def __init__(self, name: str, args: IdsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("paper-trading:security:Ids", name, None, opts)
        p = args.props
        self.container_name = f"{p.name_prefix}-ids"
        self.files = dict(p.files)
        container_args = hardened_container_args(
            image=p.image, name=self.container_name, service=IDS_ROLE,
            stack_labels=args.stack_labels,
            # Internal: only exporters and Prometheus's scrapes; the IDS calls nobody.
            networks={args.networks.metrics: [METRICS_ALIAS]},
            limits=LIMITS, user=IDS_USER, envs=ids_envs(p.files),
            tmpfs={
                RUN_DIR: "rw,noexec,nosuid,size=16m,mode=0700,uid=65534,gid=65534",
                "/tmp": "rw,noexec,nosuid,size=8m",
            },
            volumes=ids_volumes(p.name_prefix),
            command=["-c", BOOTSTRAP, RUN_DIR, BUNDLE_ENV],
            # fail2ban answers its socket: the same ping that feeds the heartbeat metric.
            healthcheck=healthcheck(
                ["CMD", "fail2ban-client", "-c", f"{RUN_DIR}/conf", "ping"],
                interval=f"{HEARTBEAT_SECONDS * 2}s", timeout="10s", retries=3, start_period="30s",
            ),
            extra_labels={ROLE_LABEL: IDS_ROLE},
        )
        # The image's own entrypoint (if any) is not run: python3 is the program.
        container_args["entrypoints"] = ["python3"]
        self.container = docker.Container(
            "ids", **container_args,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )
        self.register_outputs({"containerName": self.container_name})
