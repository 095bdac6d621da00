"""The Swarm target's overlay networks: the apps and the proxy on `frontend`, the apps and the
datastores on `backend` (internal: nothing on it reaches outside the swarm)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from contract import STACK_LABEL


@dataclass(frozen=True)
class SwarmNetworksArgs:
    name_prefix: str
    stack: str


class SwarmNetworks(pulumi.ComponentResource):
    """The overlay networks, attached by id (a name reads back as an id on refresh: a replace, measured)."""

    def __init__(self, name: str, args: SwarmNetworksArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("paper-trading:swarm:Networks", name, None, opts)
        labels = [docker.NetworkLabelArgs(label=STACK_LABEL, value=args.stack)]
        self.frontend = docker.Network(
            "frontend", name=f"{args.name_prefix}-frontend", driver="overlay", labels=labels,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.backend = docker.Network(
            "backend", name=f"{args.name_prefix}-backend", driver="overlay", internal=True, labels=labels,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"frontend": self.frontend.name, "backend": self.backend.name})
