"""The three Docker networks: frontend (proxy and apps), backend (internal), monitoring."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from .common import STACK_LABEL, NetworkNames


@dataclass(frozen=True)
class NetworksArgs:
    name_prefix: str
    stack: str


class Networks(pulumi.ComponentResource):
    """User-defined bridge networks; the backend one has no route outside the host."""

    def __init__(self, name: str, args: NetworksArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("paper-trading:network:Networks", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.names = NetworkNames(
            frontend=f"{args.name_prefix}-frontend",
            backend=f"{args.name_prefix}-backend",
            monitoring=f"{args.name_prefix}-monitoring",
        )
        labels = [docker.NetworkLabelArgs(label=STACK_LABEL, value=args.stack)]
        self.frontend = docker.Network(
            "frontend", name=self.names.frontend, driver="bridge", internal=False,
            labels=labels, opts=child,
        )
        self.backend = docker.Network(
            "backend", name=self.names.backend, driver="bridge", internal=True,
            labels=labels, opts=child,
        )
        self.monitoring = docker.Network(
            "monitoring", name=self.names.monitoring, driver="bridge", internal=False,
            labels=labels, opts=child,
        )
        self.register_outputs({
            "frontend": self.frontend.name, "backend": self.backend.name,
            "monitoring": self.monitoring.name,
        })

    @property
    def all(self) -> list[docker.Network]:
        return [self.frontend, self.backend, self.monitoring]
