"""The Docker networks: frontend, backend (internal), monitoring (control plane) and metrics.

Segmentation (docs/monitoring.md, "Networks"): the apps join frontend and backend only.
The monitoring control plane (Prometheus, Alertmanager, Grafana, Loki, the log collector)
lives on `monitoring`, which nothing else joins; Prometheus reaches what it scrapes on
`metrics` (exporters, RabbitMQ, the proxy's status listener, which relays the apps'
metrics and readiness). So no app shares a network with Alertmanager, Loki, Prometheus or
Grafana, and neither does the internet-facing proxy.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from contract import STACK_LABEL
from stack.common import NetworkNames


@dataclass(frozen=True)
class NetworksArgs:
    name_prefix: str
    stack: str


def network_names(name_prefix: str) -> NetworkNames:
    return NetworkNames(
        frontend=f"{name_prefix}-frontend",
        backend=f"{name_prefix}-backend",
        monitoring=f"{name_prefix}-monitoring",
        metrics=f"{name_prefix}-metrics",
    )


class Networks(pulumi.ComponentResource):
    """User-defined bridge networks; the backend one has no route outside the host."""

    def __init__(self, name: str, args: NetworksArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("paper-trading:network:Networks", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.names = network_names(args.name_prefix)
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
        self.metrics = docker.Network(
            "metrics", name=self.names.metrics, driver="bridge", internal=True,
            labels=labels, opts=child,
        )
        self.register_outputs({
            "frontend": self.frontend.name, "backend": self.backend.name,
            "monitoring": self.monitoring.name, "metrics": self.metrics.name,
        })

    @property
    def all(self) -> list[docker.Network]:
        return [self.frontend, self.backend, self.monitoring, self.metrics]
