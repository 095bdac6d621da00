"""The host firewall (issues 14 and 21): one `host-guard` container keeping this stack's nftables table.

The ruleset (render/firewall) filters what enters from outside Docker before
Docker's own chains see it: only the proxy's public ports reach a container, each source
limited in new connections; banned addresses (the IDS's decisions) are dropped first.

The container is the one exemption from the pack's host-namespace and capability rules
(docs/policies.md): host network (the table must live in the host's network namespace) and
exactly NET_ADMIN + NET_RAW (nft needs both), nothing else; read-only root; no uploads (the
ruleset and the supervisor reach it through its configuration, which nothing in the container
can change); the decisions volume read-only. It loads the ruleset at start, reloads it when the
table disappears or differs, keeps the ban sets in step with the decisions, and leaves the
table loaded when stopped (fail closed); `pulumi destroy` removes it (`FirewallTable`'s delete
signals the guard), so does `docker kill -s USR1 <guard>`.

The table is per stack (`paper_trading_guard_<namePrefix>`) and trusts exactly this stack's
Docker bridges: `br-<network id[:12]>` (or the network's `com.docker.network.bridge.name`),
read from the program's networks, plus `security.firewall.dockerInterfaces`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic as dyn
import pulumi_docker as docker

import programs
from contract import ROLE_LABEL
from release.dynamic import StateProvider
from release.routing.docker_side import docker_client
from render.firewall import DECISIONS_DIR, FirewallRules, render_ruleset, table_name_for
from settings import FirewallConfig, Settings
from stack.common import hardened_container_args, healthcheck

HOST_GUARD_ROLE = "host-guard"
CAPABILITIES = ("NET_ADMIN", "NET_RAW")
RULESET_ENV = "HOST_GUARD_RULESET"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
#: The guard's supervisor (a standard-library program), run by `python3 -c <its text>`.
SUPERVISOR = programs.path("host-guard/host_guard.py")


def public_ports(settings: Settings) -> tuple[int, ...]:
    """The proxy's published public ports (stack/proxy.py `proxy_ports`): HTTP, and HTTPS with TLS."""
    ports = [settings.proxy.http_port]
    if settings.server.ssl.enabled:
        ports.append(settings.proxy.https_port)
    return tuple(ports)


def bridge_name(network_id: str, options: Mapping[str, str] | None) -> str:
    """The Linux bridge Docker creates for a bridge network: its custom name, else br-<id[:12]>."""
    custom = (options or {}).get(BRIDGE_NAME_OPTION)
    return str(custom) if custom else f"br-{network_id[:12]}"


def firewall_rules(props: FirewallProps, bridges: Sequence[str] = ()) -> FirewallRules:
    fw = props.firewall
    interfaces = tuple(dict.fromkeys((*bridges, *fw.docker_interfaces)))
    return FirewallRules(
        public_ports=props.public_ports,
        public_address=props.public_address,
        new_connections_per_second=fw.new_connections_per_second,
        new_connections_burst=fw.new_connections_burst,
        admin_sources=fw.admin_sources,
        docker_interfaces=interfaces,
        filter_host_input=fw.filter_host_input,
        host_ports=fw.host_ports,
        allow_list=props.allow_list,
        table_name=table_name_for(props.name_prefix),
    )


def ruleset(props: FirewallProps, bridges: Sequence[str] = ()) -> str:
    return render_ruleset(firewall_rules(props, bridges))


def supervisor_source() -> str:
    return SUPERVISOR.read_text(encoding="utf-8")


def remove_table(table: str, image: str, client: Any = None) -> str:
    """Delete `table` from the host: a one-off guard container (host network, NET_ADMIN) runs
    the supervisor's `--remove`. What `pulumi destroy` does once the guard is gone; also the
    explicit command (docs/security.md). Raises when it cannot (Docker unreachable, no image)."""

    client = client or docker_client()
    output = client.containers.run(
        image, ["python3", "-c", supervisor_source(), "--remove", "--table", table],
        entrypoint=["/usr/bin/env"], network_mode="host", cap_drop=["ALL"],
        cap_add=list(CAPABILITIES), read_only=True, security_opt=["no-new-privileges:true"],
        environment={"PYTHONDONTWRITEBYTECODE": "1"}, remove=True, stdout=True, stderr=True,
    )
    return output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)


class FirewallTableProvider(StateProvider):
    """The table's lifetime in the stack: nothing at create (the guard loads it); at delete
    (`pulumi destroy`, after the guard container is gone, which depends on this resource) the
    table is removed. A replaced guard never touches it: the new guard reloads it atomically."""

    WATCHED = ("table", "image")
    # Another table name: the old table goes (delete), the new one is the guard's.
    REPLACES = ("table",)
    ID_KEY, ID_PREFIX = "table", "firewall-table"

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        remove_table(str(props["table"]), str(props["image"]))


class FirewallTable(dyn.Resource):
    """Removes the stack's table at `pulumi destroy` (and only then)."""

    def __init__(self, name: str, *, table: str, image: str,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(FirewallTableProvider(), name, {"kind": "paper-trading:firewall-table",
                                                         "table": table, "image": image}, opts)


@dataclass(frozen=True)
class FirewallProps:
    """What the host guard reads: its section and image, the proxy's public ports and address,
    the IDS's allow list (never banned)."""

    name_prefix: str
    image: str
    firewall: FirewallConfig
    public_ports: tuple[int, ...]
    public_address: str
    allow_list: tuple[str, ...]

    @classmethod
    def of(cls, settings: Settings) -> FirewallProps:
        return cls(settings.name_prefix, settings.images.host_guard, settings.security.firewall,
                   public_ports(settings), settings.proxy.public_address,
                   tuple(settings.security.ids.allow_list))


@dataclass(frozen=True)
class FirewallArgs:
    props: FirewallProps
    stack_labels: Mapping[str, str]
    #: The IDS's `decisions` volume (stack/volumes.py), mounted read-only; None: no bans.
    decisions_volume: str | None = None
    #: This stack's Docker networks: their bridges are the only interfaces trusted as Docker's.
    networks: Sequence[docker.Network] = ()
    depends_on: Sequence[pulumi.Resource] = ()


class Firewall(pulumi.ComponentResource):
    """The host guard: loads and keeps the nftables table `inet paper_trading_guard_<namePrefix>`."""

    def __init__(self, name: str, args: FirewallArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("paper-trading:security:Firewall", name, None, opts)
        p = args.props
        fw = p.firewall
        if not args.networks and not fw.docker_interfaces:
            raise ValueError("security.firewall: the host guard needs the stack's Docker networks "
                             "(FirewallArgs.networks) to know which bridges are Docker's")
        self.container_name = f"{p.name_prefix}-host-guard"
        rules = firewall_rules(p, ("docker0",))  # validates the settings at preview (bridges come later)
        self.table = rules.table
        bridges = pulumi.Output.all(*[pulumi.Output.all(n.id, n.options) for n in args.networks]).apply(
            lambda pairs: [bridge_name(str(i), o) for i, o in pairs])
        self.bridges = bridges
        self.ruleset = bridges.apply(lambda names: ruleset(p, names))
        volumes = None
        if args.decisions_volume:
            volumes = [docker.ContainerVolumeArgs(volume_name=args.decisions_volume,
                                                  container_path=DECISIONS_DIR, read_only=True)]
        never_ban = ",".join(rules.never_banned)
        supervisor = ["python3", "-c", supervisor_source()]
        container_args = hardened_container_args(
            image=p.image, name=self.container_name, service=HOST_GUARD_ROLE,
            stack_labels=args.stack_labels,
            networks={"host": []},  # replaced by network_mode below
            limits=fw.limits,
            envs=["PYTHONDONTWRITEBYTECODE=1"],
            volumes=volumes,
            command=[*supervisor, "--interval", str(fw.check_interval_seconds), "--sync", "1"],
            capability_adds=list(CAPABILITIES),
            # Healthy only while the loaded table is the wanted ruleset (its digest and its rules).
            healthcheck=healthcheck(["CMD", *supervisor, "--check"],
                                    interval="15s", timeout="5s", retries=3, start_period="10s"),
            extra_labels={ROLE_LABEL: HOST_GUARD_ROLE},
        )
        # The table must live in the host's network namespace: host networking, no user network
        # (Docker refuses a hostname with it). The pack allows this for role host-guard only.
        del container_args["networks_advanced"]
        del container_args["hostname"]
        container_args["network_mode"] = "host"
        container_args["entrypoints"] = ["/usr/bin/env"]
        container_args["envs"] = [
            pulumi.Output.concat(f"{RULESET_ENV}=", self.ruleset), "PYTHONDONTWRITEBYTECODE=1",
            f"HOST_GUARD_DECISIONS_DIR={DECISIONS_DIR}", f"HOST_GUARD_NEVER_BAN={never_ban}",
            bridges.apply(lambda names: "HOST_GUARD_BRIDGES=" + ",".join(
                dict.fromkeys((*names, *fw.docker_interfaces)))),
        ]
        # A new ruleset replaces the container under the same name: the old one must go first
        # (its table stays loaded meanwhile: a stopped guard fails closed; the new one reloads).
        # Created before the guard, deleted after it: its delete removes the table at destroy.
        self.table_resource = FirewallTable("host-guard-table", table=self.table, image=p.image,
                                            opts=pulumi.ResourceOptions(parent=self))
        self.container = docker.Container(
            "host-guard", **container_args,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[*args.depends_on, *args.networks, self.table_resource],
                delete_before_replace=True),
        )
        self.register_outputs({"containerName": self.container_name, "table": self.table})
