"""The edge proxy on Swarm: one nginx task on every `edge` node, publishing its ports in host mode.

One task per edge node (as many replicas as edge nodes, at most one per node, constrained to
`node.labels.edge==true`; not global mode, which cannot make `up` wait for the rollout), and its ports
are the node's own (host mode keeps the client's address, which rate limits, the IDS and the
firewall key on; Swarm's routing mesh would replace it, and needs IPVS, absent here). The
nginx.conf and the bootstrap routing include are the single host's renders (stack/proxy.py),
shipped as Swarm configs; the routing markers live in a volume on each node, so a restarted
task keeps serving the color its node was switched to. Updates are stop-first, one node at a
time: two tasks cannot hold the same host port, and the other edge nodes keep serving.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import pulumi
import pulumi_docker as docker

from contract import ROLE_LABEL, SERVICE_LABEL, STACK_LABEL
from render.nginx.routing import ROUTING_DIR
from settings import ProxyConfig, ServerConfig, Settings
from stack.common import http_probe
from stack.proxy import (
    LISTEN,
    NGINX_FOREGROUND,
    PATHS,
    PROXY_ALIAS,
    PROXY_ROLE,
    PROXY_SYSCTLS,
    PROXY_USER,
    proxy_files,
)
from stack.swarm.objects import (
    RESTART,
    TIMEZONE_ENV,
    config_object,
    container_labels,
    converge,
    health,
    resources,
    rollout,
    service_labels,
    tmpfs,
)

#: The status listener on loopback only (the tasks' healthcheck): on an overlay, a service alias
#: names every proxy task, and nginx would try to bind the other tasks' addresses too. A 1 s
#: connect timeout: a task on a node just cut off costs a request 1 s, not 5 (measured on the lab).
SWARM_LISTEN = replace(LISTEN, status_host="127.0.0.1", connect_timeout_s=1)


@dataclass(frozen=True)
class SwarmProxyProps:
    """What the edge proxies read: the proxy's and server's sections, the image, the rendered files."""

    name_prefix: str
    image: str
    proxy: ProxyConfig
    server: ServerConfig
    files: Mapping[str, str]
    #: How many edge nodes the stack lists: one proxy task on each.
    edge_nodes: int

    @staticmethod
    def service_name(prefix: str) -> str:
        return f"{prefix}-proxy"

    @classmethod
    def of(cls, settings: Settings) -> SwarmProxyProps:
        edges = len(settings.swarm.labelled("edge")) if settings.swarm is not None else 0
        return cls(settings.name_prefix, settings.images.nginx, settings.proxy, settings.server,
                   proxy_files(settings, SWARM_LISTEN), edges)


@dataclass(frozen=True)
class SwarmProxyArgs:
    props: SwarmProxyProps
    stack: str
    frontend_network_id: pulumi.Input[str]
    depends_on: Sequence[pulumi.Resource] = ()


def routing_volume(prefix: str) -> str:
    """The per-node volume holding the routing markers (created by each node on first use)."""
    return f"{prefix}-proxy-routing"


def published(props: SwarmProxyProps) -> list[docker.ServiceEndpointSpecPortArgs]:
    """The live and preview listeners on each edge node's own ports (host mode)."""
    ports = [(LISTEN.http, props.proxy.http_port)]
    if props.server.ssl.enabled:
        ports.append((LISTEN.https, props.proxy.https_port))
    ports.append((LISTEN.preview, props.proxy.preview_port))
    return [docker.ServiceEndpointSpecPortArgs(target_port=inside, published_port=outside, protocol="tcp",
                                               publish_mode="host") for inside, outside in ports]


class SwarmProxy(pulumi.ComponentResource):
    """nginx on every edge node: TLS, headers, rate limits and the blue/green switch point."""

    def __init__(self, name: str, args: SwarmProxyArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("paper-trading:swarm:Proxy", name, None, opts)
        s = args.props
        self.name = SwarmProxyProps.service_name(s.name_prefix)
        self.configs = [
            config_object(f"file-{index}", f"{s.name_prefix}-proxy-{path.rsplit('/', 1)[-1]}", content, self)
            for index, (path, content) in enumerate(sorted(s.files.items()))
        ]
        uid, gid = PROXY_USER.split(":")
        status = f"http://127.0.0.1:{LISTEN.status}/nginx-health"
        update, rollback = rollout("stop-first")
        self.service = docker.Service(
            "proxy",
            name=self.name,
            labels=service_labels(args.stack),
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=s.image,
                    commands=list(NGINX_FOREGROUND),
                    env=TIMEZONE_ENV,
                    labels=container_labels({STACK_LABEL: args.stack, SERVICE_LABEL: PROXY_ROLE,
                                             ROLE_LABEL: PROXY_ROLE}),
                    user=PROXY_USER,
                    read_only=True,
                    cap_drops=["ALL"],
                    sysctl=PROXY_SYSCTLS,
                    configs=[
                        docker.ServiceTaskSpecContainerSpecConfigArgs(
                            config_id=config.id, config_name=config.name, file_name=path,
                            file_uid=uid, file_gid=gid, file_mode=0o444)
                        for config, (path, _) in zip(self.configs, sorted(s.files.items()), strict=True)
                    ],
                    mounts=[
                        tmpfs("/tmp", 16),
                        tmpfs(PATHS.temp_dir, 64),
                        tmpfs("/var/run", 1),
                        docker.ServiceTaskSpecContainerSpecMountArgs(
                            type="volume", source=routing_volume(s.name_prefix), target=ROUTING_DIR,
                            read_only=False),
                    ],
                    healthcheck=health(http_probe(status)),
                    stop_grace_period="10s",
                ),
                networks_advanceds=[
                    docker.ServiceTaskSpecNetworksAdvancedArgs(
                        id=args.frontend_network_id, aliases=[PROXY_ALIAS]),
                ],
                placement=docker.ServiceTaskSpecPlacementArgs(constraints=["node.labels.edge==true"],
                                                              max_replicas=1),
                resources=resources(s.proxy.limits),
                restart_policy=RESTART,
            ),
            mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=s.edge_nodes)),
            endpoint_spec=docker.ServiceEndpointSpecArgs(mode="dnsrr", ports=published(s)),
            update_config=update,
            rollback_config=rollback,
            converge_config=converge(),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self.configs, *args.depends_on]),
        )
        self.register_outputs({"service": self.service.name})
