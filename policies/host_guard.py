"""The host guard's exemption: host network and NET_ADMIN + NET_RAW, one role only.

The host firewall's table must live in the host's network namespace, and `nft` needs
NET_ADMIN and NET_RAW. The pack refuses both everywhere else (CIS 5.3, 5.9); the exemption is
narrow and itself mandatory:

- only a container labelled `paper-trading.role=host-guard` (exactly one role label, service
  `host-guard`) may set `networkMode=host` or add NET_ADMIN/NET_RAW, and no pack config can
  widen that to another service (`host-guard-confined`, and the two CIS rules);
- that container adds exactly NET_ADMIN and NET_RAW (all others dropped), runs with a
  read-only root, publishes no ports, receives no uploads, mounts every volume read-only,
  joins no user network and no other host namespace (`host-guard-confined`);
- at most one host guard exists in the stack (`host-guard-single`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs, StackValidationArgs

from contract import ROLE_LABEL, SERVICE_LABEL

from .props import CONTAINER, as_bool, as_list, as_map, as_str, field, labels, strings

ROLE = "host-guard"
#: What nft needs; nothing else is ever granted through the exemption.
HOST_CAPABILITIES = frozenset({"NET_ADMIN", "NET_RAW"})


def cap(name: str) -> str:
    return name.strip().upper().removeprefix("CAP_")


def is_host_guard(props: Any) -> bool:
    """Exactly one role label `host-guard` and the service label `host-guard`."""
    found = labels(props)
    return found.get(ROLE_LABEL) == [ROLE] and found.get(SERVICE_LABEL) == [ROLE]


def claims_host_guard(props: Any) -> bool:
    """Any label that says host-guard (a half-labelled container is refused, not exempted)."""
    found = labels(props)
    return ROLE in (found.get(ROLE_LABEL) or []) or ROLE in (found.get(SERVICE_LABEL) or [])


def check_host_guard_confined(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """The host guard (role host-guard) is confined: host network, NET_ADMIN+NET_RAW only, read-only."""
    if args.resource_type != CONTAINER:
        return
    props = args.props
    if not claims_host_guard(props):
        return
    if not is_host_guard(props):
        report(f"a host guard carries exactly one {ROLE_LABEL}={ROLE} and {SERVICE_LABEL}={ROLE} label", None)
        return
    caps = as_map(field(props, "capabilities"), "capabilities")
    drops = {cap(c) for c in strings(caps, "drops")}
    adds = {cap(c) for c in strings(caps, "adds")}
    if "ALL" not in drops:
        report("host guard: capabilities.drops must include ALL", None)
    if adds != HOST_CAPABILITIES:
        report(f"host guard adds exactly {sorted(HOST_CAPABILITIES)} (found {sorted(adds)})", None)
    if (as_str(field(props, "networkMode"), "networkMode") or "").strip().lower() != "host":
        report("host guard: networkMode must be 'host' (its table lives in the host's namespace)", None)
    if as_list(field(props, "networksAdvanced"), "networksAdvanced"):
        report("host guard joins no user network", None)
    if as_bool(field(props, "readOnly"), "readOnly") is not True:
        report("host guard: readOnly (root filesystem) must be true", None)
    if as_list(field(props, "ports"), "ports"):
        report("host guard publishes no ports", None)
    if as_list(field(props, "uploads"), "uploads"):
        report("host guard receives no uploads (its ruleset comes through its configuration)", None)
    for i, volume in enumerate(as_list(field(props, "volumes"), "volumes")):
        if as_bool(field(volume, "readOnly", f"volumes.{i}"), f"volumes.{i}.readOnly") is not True:
            report(f"host guard: volumes.{i} must be read-only", None)
    for i, mount in enumerate(as_list(field(props, "mounts"), "mounts")):
        kind = (as_str(field(mount, "type", f"mounts.{i}"), f"mounts.{i}.type") or "").lower()
        read_only = as_bool(field(mount, "readOnly", f"mounts.{i}"), f"mounts.{i}.readOnly")
        if kind != "tmpfs" and read_only is not True:
            report(f"host guard: mounts.{i} must be read-only", None)


def host_guards(resources: Iterable[tuple[str, Any]]) -> list[str]:
    return [name for name, props in resources if claims_host_guard(props)]


def check_host_guard_single(args: StackValidationArgs, report: ReportViolation) -> None:
    """At most one host guard (role host-guard) in the stack: one owner of the firewall table."""
    containers = []
    for resource in args.resources:
        if resource.resource_type == CONTAINER:
            name = as_str(field(resource.props, "name"), "name") or resource.name
            containers.append((name, resource.props))
    found = host_guards(containers)
    if len(found) > 1:
        report(f"{len(found)} host guards ({', '.join(sorted(found))}): at most one may exist", None)
