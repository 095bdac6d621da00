"""The host firewall (issue 14, part 1): one `host-guard` container keeping an nftables table.

The ruleset (components/firewall_config) filters what enters from outside Docker before
Docker's own chains see it: only the proxy's public ports reach a container, each source
limited in new connections; banned addresses (the IDS's decisions) are dropped first.

The container is the one exemption from the pack's host-namespace and capability rules
(docs/policies.md): host network (the table must live in the host's network namespace) and
exactly NET_ADMIN + NET_RAW (nft needs both), nothing else; read-only root; no uploads (the
ruleset and the supervisor reach it through its configuration, which nothing in the container
can change); the decisions volume read-only. It loads the ruleset at start, reloads it when the
table disappears, keeps the ban sets in step with the decisions, and deletes its table when
stopped, so removing the component leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker

from .common import ROLE_LABEL, hardened_container_args, healthcheck
from .config import Settings
from .firewall_config import DECISIONS_DIR, TABLE, FirewallRules, render_ruleset

HOST_GUARD_ROLE = "host-guard"
CAPABILITIES = ("NET_ADMIN", "NET_RAW")
RULESET_ENV = "HOST_GUARD_RULESET"
SUPERVISOR = Path(__file__).resolve().parent / "firewall_config" / "host_guard.py"


def public_ports(settings: Settings) -> tuple[int, ...]:
    """The proxy's published public ports (components/proxy.py `proxy_ports`): HTTP, and HTTPS with TLS."""
    ports = [settings.proxy.http_port]
    if settings.server.ssl.enabled:
        ports.append(settings.proxy.https_port)
    return tuple(ports)


def firewall_rules(settings: Settings) -> FirewallRules:
    fw = settings.security.firewall
    return FirewallRules(
        public_ports=public_ports(settings),
        public_address=settings.proxy.public_address,
        new_connections_per_second=fw.new_connections_per_second,
        new_connections_burst=fw.new_connections_burst,
        admin_sources=fw.admin_sources,
        docker_interfaces=fw.docker_interfaces,
        filter_host_input=fw.filter_host_input,
        host_ports=fw.host_ports,
    )


def ruleset(settings: Settings) -> str:
    return render_ruleset(firewall_rules(settings))


def supervisor_source() -> str:
    return SUPERVISOR.read_text(encoding="utf-8")


@dataclass(frozen=True)
class FirewallArgs:
    settings: Settings
    stack_labels: Mapping[str, str]
    #: The IDS's `decisions` volume (components/volumes.py), mounted read-only; None: no bans.
    decisions_volume: str | None = None
    depends_on: Sequence[pulumi.Resource] = ()


class Firewall(pulumi.ComponentResource):
    """The host guard: loads and keeps the nftables table `inet paper_trading_guard`."""

    def __init__(self, name: str, args: FirewallArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("paper-trading:security:Firewall", name, None, opts)
        s = args.settings
        fw = s.security.firewall
        self.container_name = f"{s.name_prefix}-host-guard"
        self.ruleset = ruleset(s)
        volumes = None
        if args.decisions_volume:
            volumes = [docker.ContainerVolumeArgs(volume_name=args.decisions_volume,
                                                  container_path=DECISIONS_DIR, read_only=True)]
        container_args = hardened_container_args(
            image=s.images.host_guard, name=self.container_name, service=HOST_GUARD_ROLE,
            stack_labels=args.stack_labels,
            networks={"host": []},  # replaced by network_mode below
            limits=fw.limits,
            envs=[f"{RULESET_ENV}={self.ruleset}", "PYTHONDONTWRITEBYTECODE=1",
                  f"HOST_GUARD_DECISIONS_DIR={DECISIONS_DIR}"],
            volumes=volumes,
            command=["python3", "-c", supervisor_source(),
                     "--interval", str(fw.check_interval_seconds), "--sync", "1"],
            capability_adds=list(CAPABILITIES),
            healthcheck=healthcheck(["CMD", "nft", "list", "table", *TABLE.split()],
                                    interval="15s", timeout="5s", retries=3, start_period="10s"),
            extra_labels={ROLE_LABEL: HOST_GUARD_ROLE},
        )
        # The table must live in the host's network namespace: host networking, no user network
        # (Docker refuses a hostname with it). The pack allows this for role host-guard only.
        del container_args["networks_advanced"]
        del container_args["hostname"]
        container_args["network_mode"] = "host"
        container_args["entrypoints"] = ["/usr/bin/env"]
        self.container = docker.Container(
            "host-guard", **container_args,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )
        self.register_outputs({"containerName": self.container_name})
