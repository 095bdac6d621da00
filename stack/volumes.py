"""Named volumes, one per stateful service; data volumes can never be deleted by Pulumi."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker

from contract import SERVICE_LABEL, STACK_LABEL

DATA_VOLUMES = (
    "postgres", "redis", "rabbitmq", "prometheus", "alertmanager", "grafana", "logs", "backups", "audit",
)
#: `audit`: the append-only operations audit trail (release/audit.py), protected like data.


#: Shared runtime volumes of the security layer, not data: no `protect`.
#: tmpfs-backed with the writer's uid, so a non-root writer owns a fresh volume and the size
#: is bounded: `proxy-logs` (nginx, uid 101, writes the access log; the IDS reads it) and
#: `decisions` (the IDS, uid 65534, writes ban decisions; the host guard reads them). Their
#: content lives while a container uses them (docs/security.md, "Intrusion detection").
RUNTIME_VOLUMES: dict[str, tuple[str, str]] = {
    "proxy-logs": ("101:101", "64m"),
    "decisions": ("65534:65534", "8m"),
}


def runtime_volume_name(name_prefix: str, service: str) -> str:
    """The Docker name of a `RUNTIME_VOLUMES` volume (known at preview)."""
    if service not in RUNTIME_VOLUMES:
        raise ValueError(f"no runtime volume {service!r}")
    return f"{name_prefix}-{service}"


@dataclass(frozen=True)
class VolumesArgs:
    name_prefix: str
    stack: str
    #: service -> earlier logical names of its volume resource: a rename then moves the
    #: existing volume in the state instead of replacing it (and its data).
    aliases: Mapping[str, Sequence[str]] = field(default_factory=dict)


class Volumes(pulumi.ComponentResource):
    """`protect` stops `pulumi destroy`; `retain_on_delete` keeps data on a replace or rename."""

    def __init__(self, name: str, args: VolumesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("paper-trading:volumes:Volumes", name, None, opts)
        self.by_service: dict[str, docker.Volume] = {}
        self.names: dict[str, str] = {}
        for service in DATA_VOLUMES:
            volume_name = f"{args.name_prefix}-{service}-data"
            self.names[service] = volume_name
            self.by_service[service] = docker.Volume(
                f"{service}-data",
                name=volume_name,
                labels=[
                    docker.VolumeLabelArgs(label=STACK_LABEL, value=args.stack),
                    docker.VolumeLabelArgs(label=SERVICE_LABEL, value=service),
                    docker.VolumeLabelArgs(label="paper-trading.data", value="true"),
                ],
                opts=pulumi.ResourceOptions(
                    parent=self, protect=True, retain_on_delete=True,
                    aliases=[pulumi.Alias(name=old) for old in args.aliases.get(service, ())],
                ),
            )
        for service, (owner, size) in RUNTIME_VOLUMES.items():
            volume_name = runtime_volume_name(args.name_prefix, service)
            uid, gid = owner.split(":")
            self.names[service] = volume_name
            self.by_service[service] = docker.Volume(
                service,
                name=volume_name,
                driver="local",
                driver_opts={
                    "type": "tmpfs", "device": "tmpfs",
                    "o": f"size={size},uid={uid},gid={gid},mode=0755,noexec,nosuid,nodev",
                },
                labels=[
                    docker.VolumeLabelArgs(label=STACK_LABEL, value=args.stack),
                    docker.VolumeLabelArgs(label=SERVICE_LABEL, value=service),
                    # Disposable runtime state, not data (policy data-volumes-protected).
                    docker.VolumeLabelArgs(label="paper-trading.data", value="false"),
                ],
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({"names": self.names})

    def mount(self, service: str, target: str, read_only: bool = False) -> docker.ContainerVolumeArgs:
        """A container volume entry for `service`'s data volume (name known at preview)."""
        return docker.ContainerVolumeArgs(
            volume_name=self.names[service], container_path=target, read_only=read_only,
        )
