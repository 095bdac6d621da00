"""`security`: the host firewall, intrusion detection with bans, and the audit trail."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from .base import Model, Networks
from .limits import Limits


class FirewallConfig(Model):
    """Host firewall (stack/firewall.py, docs/security.md "Host firewall").

    An nftables table per stack (`inet paper_trading_guard_<namePrefix>`) loaded by the `host-guard`
    container: from outside, only the proxy's public ports (`proxy.httpPort`/`httpsPort` on
    `proxy.publicAddress`) reach a container, each source limited in new connections; banned
    addresses (the IDS's decisions) are dropped first.
    """

    enabled: bool = True
    #: New connections per second one source address may open to the public ports ...
    new_connections_per_second: int = Field(default=50, ge=1, le=100000)
    #: ... and how many above that rate it may open at once (nft `burst`, packets).
    new_connections_burst: int = Field(default=100, ge=0, le=100000)
    #: Sources (addresses or CIDRs) that may reach every published port (and the host, see
    #: filterHostInput): the operator's network. Empty: nobody.
    admin_sources: Networks = ()
    #: Also filter the host's own sockets (INPUT): only the public ports, `hostPorts`, admin
    #: sources, ICMP and replies. Off: only traffic to containers is filtered.
    filter_host_input: bool = False
    #: Host TCP ports open to everybody when filterHostInput is on (ssh: keep 22 or an admin source).
    host_ports: tuple[int, ...] = (22,)
    #: Extra exact names of Docker bridges this stack's containers use, beyond its own networks'
    #: bridges (which the program names itself). No wildcards: `br-*` would trust a host uplink.
    docker_interfaces: tuple[str, ...] = ()
    #: Seconds between checks that the table is still loaded (reloaded if not).
    check_interval_seconds: int = Field(default=5, ge=1, le=3600)
    limits: Limits = Limits(memory_mb=64, cpus=0.25)

    @field_validator("host_ports")
    @classmethod
    def _ports(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for port in value:
            if not 1 <= port <= 65535:
                raise ValueError(f"{port} is not a TCP port (1-65535)")
        return value

    @field_validator("docker_interfaces")
    @classmethod
    def _interfaces(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", name):
                raise ValueError(f"security.firewall.dockerInterfaces: {name!r} is not an exact interface "
                                 "name (letters, digits, _ . -, at most 15; no wildcards: the stack's own "
                                 "bridges are named by the program)")
        return value


class IdsJail(Model):
    """One detector: `maxRetry` matching requests from one address within `findTimeSeconds` ban it."""

    find_time_seconds: int = Field(ge=1, le=86400)
    max_retry: int = Field(ge=1, le=100000)
    enabled: bool = True


class IdsConfig(Model):
    """Intrusion detection with automatic bans (stack/ids.py, docs/security.md "Intrusion detection").

    fail2ban reads the proxy's JSON access log; a ban is a decision file the host guard turns
    into an nftables set element for `banTimeSeconds`.
    """

    enabled: bool = True
    #: How long a ban lasts; the decision file is removed (unban) when it ends.
    ban_time_seconds: int = Field(default=3600, ge=10, le=30 * 86400)
    #: Never banned (addresses or CIDRs): monitoring, the operator's address. Loopback always.
    allow_list: Networks = ()
    #: Scanners: 404s on typical probe paths (.php, .env, .git, wp-, cgi-bin, admin panels...).
    probe: IdsJail = IdsJail(find_time_seconds=60, max_retry=10)
    #: Brute force: 401/403/429 answers to POST on `validation.rateLimitPath` (the auth path).
    auth: IdsJail = IdsJail(find_time_seconds=60, max_retry=8)
    #: Injection probes: requests the proxy blocked as SQLi/XSS/traversal/command injection.
    injection: IdsJail = IdsJail(find_time_seconds=300, max_retry=3)
    #: Any 4xx burst from one address.
    errors: IdsJail = IdsJail(find_time_seconds=10, max_retry=60)
    #: `IdsBanStorm` fires when more bans than this happen within 5 minutes.
    ban_storm_threshold: int = Field(default=20, ge=1, le=100000)
    #: The proxy's access-log file is rotated beyond this size (one old file kept).
    access_log_max_mb: int = Field(default=16, ge=1, le=1024)


class AuditConfig(Model):
    """Append-only audit trail of operations and requests (docs/security.md, "Audit trail")."""

    #: Off: no operation records are appended (the log collector still ships an existing file).
    enabled: bool = True
    #: How long Loki keeps the audit records and the proxy's request log; never less than
    #: `monitoring.logs.retention` (the other logs).
    retention_days: int = Field(default=400, ge=1, le=3650)
    #: The actor recorded when `PAPER_TRADING_ACTOR` is unset (else the OS user), e.g. `ci`.
    actor: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.@+-]{1,64}$")
    #: On: an operation whose intent record cannot be appended (full disk, unwritable or missing
    #: volume) is refused before it acts, and one whose outcome record cannot be appended fails
    #: loudly. Off: a warning, and the operation goes on.
    fail_closed: bool = True


class SecurityConfig(Model):
    """The security layer: host firewall, intrusion detection, audit trail."""

    firewall: FirewallConfig = FirewallConfig()
    ids: IdsConfig = IdsConfig()
    audit: AuditConfig = AuditConfig()
