"""Named volumes, one per stateful service; data volumes can never be deleted by Pulumi."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker

from .common import SERVICE_LABEL, STACK_LABEL

DATA_VOLUMES = (
    "postgres", "redis", "rabbitmq", "prometheus", "alertmanager", "grafana", "logs", "backups", "audit",
)
#: `audit`: the append-only operations audit trail (components/audit.py), protected like data.


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
        self.register_outputs({"names": self.names})

    def mount(self, service: str, target: str, read_only: bool = False) -> docker.ContainerVolumeArgs:
        """A container volume entry for `service`'s data volume (name known at preview)."""
        return docker.ContainerVolumeArgs(
            volume_name=self.names[service], container_path=target, read_only=read_only,
        )
