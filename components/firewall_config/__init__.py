"""The host firewall's nftables ruleset, rendered from config (issue 14, part 1).

One table of its own, `inet paper_trading_guard`, loaded atomically with `nft -f`: the file
first declares the table (a no-op when it exists) and deletes it, then declares it anew, and
nft applies the whole file as one transaction, so a reload never leaves a moment without
rules and never touches anybody else's table (Docker's, ufw's, the distribution's).

Hook points (docs/security.md, "Host firewall"):

- `prerouting` at priority `raw` (-300): banned sources (`banned_v4`/`banned_v6`, filled by the
  host guard from the IDS's decisions) are dropped before conntrack, Docker's DNAT (priority
  `dstnat`, -100) and every filter chain; and packets to 127.0.0.0/8 or ::1 that did not arrive
  on `lo` are dropped (a neighbour reaching loopback-published ports through `route_localnet`).
- `forward` at priority `filter - 10`: traffic Docker DNATed towards a container is routed, so
  it never crosses INPUT (where ufw-style firewalls look); this chain runs before Docker's own
  `FORWARD` chains (iptables-nft, priority `filter`). From a non-Docker interface towards a
  Docker bridge only connections whose *original* destination port (`ct original proto-dst`,
  the port before Docker's DNAT) is a public proxy port pass, each source limited in new
  connections per second; admin sources pass; everything else is dropped. Container to
  container traffic (both interfaces Docker bridges) and replies are left to Docker.
- `input` at priority `filter - 10` (optional, `security.firewall.filterHostInput`): the same
  policy for sockets on the host itself (docker-proxy, host services): public ports, the
  configured host ports (ssh), admin sources, ICMP, replies; the rest is dropped.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

TABLE_FAMILY = "inet"
TABLE_NAME = "paper_trading_guard"
TABLE = f"{TABLE_FAMILY} {TABLE_NAME}"
BANNED_V4 = "banned_v4"
BANNED_V6 = "banned_v6"
#: Where the host guard finds the IDS's decisions (one file per banned address).
DECISIONS_DIR = "/var/lib/paper-trading/decisions"


@dataclass(frozen=True)
class FirewallRules:
    """Everything the ruleset depends on, plain values (tests render their own)."""

    #: TCP host ports the public may reach: the proxy's published HTTP/HTTPS ports.
    public_ports: tuple[int, ...]
    #: The proxy's public bind address; 0.0.0.0 = any destination address of the host.
    public_address: str = "0.0.0.0"
    #: Per source address: new connections per second to the public ports, and the burst.
    new_connections_per_second: int = 50
    new_connections_burst: int = 100
    #: Sources (CIDRs) that may reach everything published and, with filter_host_input, the host.
    admin_sources: tuple[str, ...] = ()
    #: Interface names (nft wildcards `br-*`) of Docker's bridges.
    docker_interfaces: tuple[str, ...] = ("docker0", "br-*")
    #: Also filter traffic to the host's own sockets (INPUT).
    filter_host_input: bool = False
    #: Host TCP ports open to everybody when filter_host_input is on (e.g. 22 for ssh).
    host_ports: tuple[int, ...] = ()
    extra_comment: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for port in (*self.public_ports, *self.host_ports):
            if not 1 <= int(port) <= 65535:
                raise ValueError(f"port {port} is not between 1 and 65535")
        for name in self.docker_interfaces:
            if not name or any(c in name for c in ' "\\{};\n\t') or len(name) > 15:
                raise ValueError(f"interface name {name!r} is not valid")
        ipaddress.IPv4Address(self.public_address)
        for cidr in self.admin_sources:
            ipaddress.ip_network(cidr, strict=False)
        if self.new_connections_per_second < 1 or self.new_connections_burst < 0:
            raise ValueError("new connection limits must be positive")

    @property
    def admin_v4(self) -> list[str]:
        return [str(n) for n in self._admin() if n.version == 4]

    @property
    def admin_v6(self) -> list[str]:
        return [str(n) for n in self._admin() if n.version == 6]

    def _admin(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return sorted({ipaddress.ip_network(c, strict=False) for c in self.admin_sources},
                      key=lambda n: (n.version, n.network_address.packed, n.prefixlen))


def _elements(values: Sequence[object]) -> str:
    return ", ".join(str(v) for v in values)


def _set(name: str, kind: str, flags: str, values: Sequence[object], extra: str = "") -> list[str]:
    lines = [f"    set {name} {{", f"        type {kind}"]
    if flags:
        lines.append(f"        flags {flags}")
    if extra:
        lines.append(f"        {extra}")
    if values:
        lines.append(f"        elements = {{ {_elements(values)} }}")
    lines.append("    }")
    return lines


def _iface_rules(direction: str, verdict: str, interfaces: Sequence[str]) -> list[str]:
    # One rule per name: nft matches a trailing `*` as a prefix in a plain comparison.
    return [f'        {direction} "{name}" {verdict}' for name in interfaces]


def render_ruleset(rules: FirewallRules) -> str:
    """The complete `nft -f` file (atomic: declare, delete, redeclare, in one transaction)."""
    ports = sorted({int(p) for p in rules.public_ports})
    rate = f"{rules.new_connections_per_second}/second burst {rules.new_connections_burst} packets"
    public_dst = ("" if rules.public_address == "0.0.0.0"
                  else f"ct original ip daddr {rules.public_address} ")
    out: list[str] = [
        "#!/usr/sbin/nft -f",
        "# Generated by components/firewall_config (paper-trading, issue 14): do not edit.",
        f"table {TABLE}",
        f"delete table {TABLE}",
        f"table {TABLE} {{",
    ]
    out += _set(BANNED_V4, "ipv4_addr", "timeout", [])
    out += _set(BANNED_V6, "ipv6_addr", "timeout", [])
    out += _set("admin_v4", "ipv4_addr", "interval", rules.admin_v4)
    out += _set("admin_v6", "ipv6_addr", "interval", rules.admin_v6)
    out += _set("public_ports", "inet_service", "", ports)
    out += _set("host_ports", "inet_service", "", sorted({int(p) for p in rules.host_ports}))
    # Per-source new-connection meters: an entry lives 60 s after its last new connection.
    out += _set("rate_v4", "ipv4_addr", "dynamic,timeout", [], "timeout 60s; size 65536")
    out += _set("rate_v6", "ipv6_addr", "dynamic,timeout", [], "timeout 60s; size 65536")
    out += [
        "",
        "    # Before conntrack, Docker's DNAT and every filter: banned sources never get anywhere.",
        "    chain prerouting {",
        "        type filter hook prerouting priority raw; policy accept;",
        f"        ip saddr @{BANNED_V4} counter drop",
        f"        ip6 saddr @{BANNED_V6} counter drop",
        '        iifname != "lo" ip daddr 127.0.0.0/8 counter drop',
        '        iifname != "lo" ip6 daddr ::1 counter drop',
        "    }",
        "",
        "    # New connections from one source to the public ports, beyond the limit: dropped.",
        "    chain limit_new {",
        f"        ct state new add @rate_v4 {{ ip saddr limit rate over {rate} }} counter drop",
        f"        ct state new add @rate_v6 {{ ip6 saddr limit rate over {rate} }} counter drop",
        "    }",
        "",
        "    # Routed towards a Docker bridge from outside Docker: only the proxy's public ports.",
        "    chain to_containers {",
    ]
    out += _iface_rules("iifname", "return", rules.docker_interfaces)
    out += [
        "        ct state established,related return",
        "        ip saddr @admin_v4 return",
        "        ip6 saddr @admin_v6 return",
        f"        meta l4proto tcp ct status dnat {public_dst}ct original proto-dst @public_ports "
        "jump limit_new",
        f"        meta l4proto tcp ct status dnat {public_dst}ct original proto-dst @public_ports return",
        "        counter drop",
        "    }",
        "",
        "    # Before Docker's FORWARD chains (iptables-nft, priority filter): published ports are",
        "    # DNATed in prerouting and routed, so INPUT-based firewalls (ufw) never see them.",
        "    chain forward {",
        "        type filter hook forward priority filter - 10; policy accept;",
    ]
    out += _iface_rules("oifname", "jump to_containers", rules.docker_interfaces)
    out += ["    }"]
    if rules.filter_host_input:
        out += [
            "",
            "    # The host's own sockets: public ports, host ports, admin sources, ICMP, replies.",
            "    chain input {",
            "        type filter hook input priority filter - 10; policy accept;",
            '        iifname "lo" accept',
        ]
        out += _iface_rules("iifname", "accept", rules.docker_interfaces)
        out += [
            "        ct state established,related accept",
            "        ct state invalid counter drop",
            "        meta l4proto { icmp, ipv6-icmp } accept",
            "        ip saddr @admin_v4 accept",
            "        ip6 saddr @admin_v6 accept",
            "        udp dport { 68, 546 } accept",
            "        tcp dport @public_ports jump limit_new",
            "        tcp dport @public_ports accept",
            "        tcp dport @host_ports accept",
            "        counter drop",
            "    }",
        ]
    out += ["}", ""]
    return "\n".join(out)
