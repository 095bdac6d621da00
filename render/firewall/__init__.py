"""The host firewall's nftables ruleset, rendered from config (issues 14 and 21).

One table per stack, `inet paper_trading_guard_<namePrefix>`, loaded atomically with `nft -f`:
the file first declares the table (a no-op when it exists) and deletes it, then declares it
anew, and nft applies the whole file as one transaction, so a reload never leaves a moment
without rules and never touches anybody else's table (Docker's, ufw's, another stack's guard).
The table's comment carries `ruleset:<sha256>` of the rendered text: the host guard's health
check compares it (and the table's rules) with the ruleset it was given.

Hook points (docs/security.md, "Host firewall"):

- `prerouting` at priority `raw` (-300): packets to 127.0.0.0/8 or ::1 that did not arrive on
  `lo` are dropped (a neighbour reaching loopback-published ports through `route_localnet`);
  then admin and allow-listed sources are accepted (no ban ever applies to them); then banned
  sources (`banned_v4`, `banned_v6` holding IPv6 /64 networks, filled by the host guard from
  the IDS's decisions) are dropped before conntrack, Docker's DNAT (priority `dstnat`, -100)
  and every filter chain.
- `forward` at priority `filter - 10`: traffic Docker DNATed towards a container is routed, so
  it never crosses INPUT (where ufw-style firewalls look); this chain runs before Docker's own
  `FORWARD` chains (iptables-nft, priority `filter`). Towards one of this stack's Docker
  bridges (exact names: the program's networks, never a `br-*` wildcard) from anywhere else,
  only connections whose *original* destination port (`ct original proto-dst`, the port
  before Docker's DNAT) is a public proxy port pass, within the new-connection limits; admin
  sources pass; everything else is dropped. Replies and traffic between this stack's bridges
  are left to Docker.
- `input` at priority `filter - 10` (optional, `security.firewall.filterHostInput`): the same
  policy for sockets on the host itself (docker-proxy, host services): public ports, the
  configured host ports (ssh), admin sources, ICMP, replies; the rest is dropped.

New-connection limits: one meter per IPv4 address and per IPv6 /64 (`rate_v4`/`rate_v6`,
bounded sets); a source the full set cannot hold shares one overflow meter of the same size
with every other such source, so a full set never means "unlimited".
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from settings import ip_network, ipv4_address

TABLE_FAMILY = "inet"
TABLE_NAME = "paper_trading_guard"
TABLE = f"{TABLE_FAMILY} {TABLE_NAME}"
#: IPv6 meters and bans are per /64 (one host usually holds a whole /64).
V6_PREFIX = 64
V6_MASK = "ffff:ffff:ffff:ffff::"
#: Entries of each per-source meter set (a full set: the overflow meter applies).
RATE_SET_SIZE = 65536
DIGEST_PLACEHOLDER = "ruleset:" + "0" * 64
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
    #: Exact interface names of this stack's Docker bridges (no wildcards: a host uplink named
    #: `br-lan` must never count as a Docker bridge).
    docker_interfaces: tuple[str, ...] = ()
    #: Also filter traffic to the host's own sockets (INPUT).
    filter_host_input: bool = False
    #: Host TCP ports open to everybody when filter_host_input is on (e.g. 22 for ssh).
    host_ports: tuple[int, ...] = ()
    #: Sources never banned (the IDS's allow list); admin sources are never banned either.
    allow_list: tuple[str, ...] = ()
    #: The table's name: one per stack (`table_name_for`).
    table_name: str = TABLE_NAME
    extra_comment: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for port in (*self.public_ports, *self.host_ports):
            if not 1 <= int(port) <= 65535:
                raise ValueError(f"port {port} is not between 1 and 65535")
        if not self.docker_interfaces:
            raise ValueError("docker_interfaces: name this stack's Docker bridges (none given)")
        for name in self.docker_interfaces:
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", name):
                raise ValueError(f"docker_interfaces: {name!r} is not an exact interface name "
                                 "(no wildcards: letters, digits, _ . -, at most 15)")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", self.table_name):
            raise ValueError(f"table_name: {self.table_name!r} is not an nft table name")
        ipv4_address(self.public_address)
        for cidr in (*self.admin_sources, *self.allow_list):
            ip_network(cidr)
        if self.new_connections_per_second < 1 or self.new_connections_burst < 0:
            raise ValueError("new connection limits must be positive")

    @property
    def admin_v4(self) -> list[str]:
        return [str(n) for n in self._admin() if n.version == 4]

    @property
    def admin_v6(self) -> list[str]:
        return [str(n) for n in self._admin() if n.version == 6]

    @property
    def never_banned(self) -> list[str]:
        """Admin and allow-listed sources (CIDRs): accepted before any ban, never banned."""
        nets = _networks((*self.admin_sources, *self.allow_list))
        v4 = ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv4Network))
        v6 = ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv6Network))
        return [str(n) for n in (*v4, *v6)]

    @property
    def table(self) -> str:
        return f"{TABLE_FAMILY} {self.table_name}"

    def _admin(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return _networks(self.admin_sources)


def _networks(cidrs: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return sorted({ipaddress.ip_network(c, strict=False) for c in cidrs},
                  key=lambda n: (n.version, n.network_address.packed, n.prefixlen))


def table_name_for(name_prefix: str) -> str:
    """`paper_trading_guard_<prefix>`: one table per stack, so two guards never share one."""
    suffix = re.sub(r"[^A-Za-z0-9]", "_", name_prefix).strip("_")
    return f"{TABLE_NAME}_{suffix}" if suffix else TABLE_NAME


def ruleset_digest(text: str) -> str:
    """`ruleset:<sha256>` of a rendered ruleset with its own digest blanked out."""
    blank = re.sub(r"ruleset:[0-9a-f]{64}", DIGEST_PLACEHOLDER, text)
    return "ruleset:" + hashlib.sha256(blank.encode()).hexdigest()


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
    # One rule per exact name (a trailing `*` would match a prefix: refused in FirewallRules).
    return [f'        {direction} "{name}" {verdict}' for name in interfaces]


def render_ruleset(rules: FirewallRules) -> str:
    """The complete `nft -f` file (atomic: declare, delete, redeclare, in one transaction)."""
    ports = sorted({int(p) for p in rules.public_ports})
    rate = f"{rules.new_connections_per_second}/second burst {rules.new_connections_burst} packets"
    public_dst = ("" if rules.public_address == "0.0.0.0"
                  else f"ct original ip daddr {rules.public_address} ")
    table = rules.table
    never = [ipaddress.ip_network(c) for c in rules.never_banned]
    # What an IPv6 source is counted and banned as: its /64.
    v6_key = f"ip6 saddr & {V6_MASK}"
    out: list[str] = [
        "#!/usr/sbin/nft -f",
        "# Generated by render/firewall (paper-trading, issues 14 and 21): do not edit.",
        f"table {table}",
        f"delete table {table}",
        f"table {table} {{",
        f'    comment "{DIGEST_PLACEHOLDER}"',
    ]
    out += _set(BANNED_V4, "ipv4_addr", "timeout", [])
    # IPv6 bans hold /64 networks (the guard stores the ban's /64; the rule masks the source).
    out += _set(BANNED_V6, "ipv6_addr", "timeout", [])
    out += _set("admin_v4", "ipv4_addr", "interval", rules.admin_v4)
    out += _set("admin_v6", "ipv6_addr", "interval", rules.admin_v6)
    out += _set("never_banned_v4", "ipv4_addr", "interval", [str(n) for n in never if n.version == 4])
    out += _set("never_banned_v6", "ipv6_addr", "interval", [str(n) for n in never if n.version == 6])
    out += _set("public_ports", "inet_service", "", ports)
    out += _set("host_ports", "inet_service", "", sorted({int(p) for p in rules.host_ports}))
    # Per-source new-connection meters (IPv4 address, IPv6 /64): an entry lives 60 s.
    out += _set("rate_v4", "ipv4_addr", "dynamic,timeout", [], f"timeout 60s; size {RATE_SET_SIZE}")
    out += _set("rate_v6", "ipv6_addr", "dynamic,timeout", [], f"timeout 60s; size {RATE_SET_SIZE}")
    out += [
        "",
        "    # Before conntrack, Docker's DNAT and every filter: loopback from outside, then admin",
        "    # and allow-listed sources (never banned), then banned sources never get anywhere.",
        "    chain prerouting {",
        "        type filter hook prerouting priority raw; policy accept;",
        '        iifname != "lo" ip daddr 127.0.0.0/8 counter drop',
        '        iifname != "lo" ip6 daddr ::1 counter drop',
        "        ip saddr @never_banned_v4 accept",
        "        ip6 saddr @never_banned_v6 accept",
        f"        ip saddr @{BANNED_V4} counter drop",
        f"        {v6_key} @{BANNED_V6} counter drop",
        "    }",
        "",
        "    # New connections from one source (IPv4 address, IPv6 /64) beyond the limit: dropped.",
        "    # When the meter set is full the add fails and the rule does not match: a source the",
        "    # set does not hold then shares the overflow meter (one bucket for all of them).",
        "    chain limit_new {",
        f"        ct state new add @rate_v4 {{ ip saddr limit rate over {rate} }} counter drop",
        f"        ct state new add @rate_v6 {{ {v6_key} limit rate over {rate} }} counter drop",
        f"        ct state new meta nfproto ipv4 ip saddr != @rate_v4 limit rate over {rate} counter drop",
        f"        ct state new meta nfproto ipv6 {v6_key} != @rate_v6 limit rate over {rate} "
        "counter drop",
        "    }",
        "",
        "    # Routed towards one of this stack's bridges from elsewhere: only the public ports.",
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
            # ICMP and ICMPv6 by number: the guard image has no /etc/protocols to resolve names.
            "        meta l4proto { 1, 58 } accept",
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
    text = "\n".join(out)
    return text.replace(DIGEST_PLACEHOLDER, ruleset_digest(text))
