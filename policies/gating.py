"""`promotion-gated`: traffic can only move through an enabled promotion gate that runs every safety check.

A stack policy, because the rule is about the graph, not one resource: exactly one gate
exists, it is enabled and skips no `safety.*`/`health.*` check, and the routing switch's live
color is computed from the gate (the engine gives stack policies each input's property
dependencies). A graph where the switch reads its color from anywhere else (the config, a
constant, another resource) is refused at `pulumi preview`, before anything is created. The
switch must also be able to switch back: `postPromotionChecks` exactly true and a `publicUrl`
that is an http(s) URL with a host (the switch probes the live site through it; without one it
skips its checks). Missing counts as off.

Dynamic resources all share one type token, so the gate and the switch are recognised by the
`kind` marker the components set; where the pickled `__provider` is visible it must name the
matching class (read with `pickletools`, never unpickled). The engine itself does not pass
`__provider` to stack policies. Anything unreadable is a violation (fail closed).
"""

from __future__ import annotations

import base64
import binascii
import pickletools
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pulumi_policy import PolicyResource, ReportViolation, StackValidationArgs
from pulumi_policy.proxy import UnknownValueError

from .props import Malformed, as_list, as_str, field, known

DYNAMIC = "pulumi-python:dynamic:Resource"
GATE_KIND = "paper-trading:promotion-gate"
SWITCH_KIND = "paper-trading:routing-switch"
#: kind marker -> the provider classes (module, qualified name) that may implement it: the switch
#: on the single host's proxy, or on every edge proxy of a swarm.
PROVIDERS: dict[str, frozenset[tuple[str, str]]] = {
    GATE_KIND: frozenset({("release.gate", "PromotionGateProvider")}),
    SWITCH_KIND: frozenset({("release.routing.provider", "RoutingProvider"),
                            ("release.swarm.provider", "SwarmRoutingProvider")}),
}
UNSKIPPABLE_PREFIXES = ("safety.", "health.")
#: The switch inputs that decide which color is live: each must come from the gate.
LIVE_INPUTS = ("liveColor",)


def provider_class(encoded: Any, where: str) -> tuple[str, str]:
    """(module, class) that a dynamic resource's pickled provider refers to, without unpickling it."""
    if not isinstance(encoded, str) or not encoded:
        raise Malformed(f"{where}: __provider is not a pickled provider")
    try:
        raw = base64.b64decode(encoded, validate=True)
        strings = [arg for op, arg, _ in pickletools.genops(raw) if isinstance(arg, str)]
    except (binascii.Error, ValueError) as exc:
        raise Malformed(f"{where}: __provider is not a pickled provider ({exc})") from exc
    if len(strings) < 2:
        raise Malformed(f"{where}: __provider names no class")
    return strings[0], strings[1]


def _role(resource: PolicyResource) -> str | None:
    """GATE_KIND, SWITCH_KIND or None, by the `kind` marker; Malformed when the provider disagrees.

    The engine does not hand `__provider` to stack policies (checked under the real engine), so
    the marker decides; where the provider is visible (other engines, offline graphs) it must agree.
    """
    where = resource.name
    kind = known(field(resource.props, "kind", where), f"{where}.kind")
    role = kind if kind in PROVIDERS else None
    encoded = known(field(resource.props, "__provider", where), f"{where}.__provider")
    if encoded is not None:
        module_class = provider_class(encoded, where)
        by_provider = next((k for k, classes in PROVIDERS.items() if module_class in classes), None)
        if role != by_provider:
            raise Malformed(
                f"{where}: kind {kind!r} does not match its provider {'.'.join(module_class)} "
                f"(expected kind {by_provider!r})"
            )
    return role


def _skipped(options: Any, where: str) -> list[str]:
    if not isinstance(options, Mapping):
        raise Malformed(f"{where}.options must be an object")
    skip = as_list(field(options, "skip", f"{where}.options"), f"{where}.options.skip")
    return [str(as_str(name, f"{where}.options.skip", optional=False)) for name in skip]


def _check_gate(gate: PolicyResource, report: ReportViolation) -> None:
    where = gate.name
    enabled = known(field(gate.props, "enabled", where), f"{where}.enabled")
    if enabled is not True:
        report(f"{where}: the promotion gate is disabled (enabled={enabled!r}); it must always run", gate.urn)
    options = known(field(gate.props, "options", where), f"{where}.options")
    protected = sorted(n for n in _skipped(options, where) if n.startswith(UNSKIPPABLE_PREFIXES))
    if protected:
        report(f"{where}: skips checks that must always run: {', '.join(protected)}", gate.urn)


def _check_switch(switch: PolicyResource, gate: PolicyResource | None, report: ReportViolation) -> None:
    where = switch.name
    for key in LIVE_INPUTS:
        sources = [dep.urn for dep in switch.property_dependencies.get(key) or []]
        if gate is None or gate.urn not in sources:
            came_from = ", ".join(sources) or "no resource (a constant or the stack config)"
            report(f"{where}.{key} must come from the promotion gate's approved color; it comes from "
                   f"{came_from}", switch.urn)
    checks = _read(switch, "postPromotionChecks", report)
    if checks is not UNREAD and checks is not True:
        state = "missing" if checks is None else f"{checks!r}"
        report(f"{where}.postPromotionChecks must be true, found {state}: post-promotion checks are "
               "off, so a failed switch would not switch back", switch.urn)
    url = _read(switch, "publicUrl", report)
    problem = None if url is UNREAD else _public_url_problem(url)
    if problem is not None:
        report(f"{where}.publicUrl {problem}: the post-promotion checks probe the live site through "
               "it, so without it a failed switch would not switch back", switch.urn)


#: What `_read` returns for an input it could not read (already reported).
UNREAD = object()


def _read(resource: PolicyResource, key: str, report: ReportViolation) -> Any:
    """The input `key` (None when absent), or UNREAD after reporting that it is unknown at preview.

    Reported here rather than by `rules.fail_closed` so the violation names the resource and
    the property and carries the resource's URN.
    """
    where = f"{resource.name}.{key}"
    try:
        return known(field(resource.props, key, resource.name), where)
    except UnknownValueError:
        report(f"{where} can't be known during preview: promotion-gated must read it, so it must be "
               "known at preview (fail closed); compute it from config, not from another resource's "
               "output", resource.urn)
        return UNREAD


def _public_url_problem(url: Any) -> str | None:
    """Why `url` is not an http(s) URL with a host (None when it is one)."""
    if url is None:
        return "is missing"
    if not isinstance(url, str):
        return f"must be a string, not {type(url).__name__} {url!r}"
    if not url.strip():
        return "is empty"
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # raises ValueError on a port outside 0-65535
    except ValueError as exc:
        return f"{url!r} is not a URL ({exc})"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL with a host"
    return None


def check_promotion_gated(args: StackValidationArgs, report: ReportViolation) -> None:
    """Traffic moves only through one enabled promotion gate that skips no safety or health check."""
    by_role: dict[str, list[PolicyResource]] = {GATE_KIND: [], SWITCH_KIND: []}
    for resource in args.resources:
        if resource.resource_type != DYNAMIC:
            continue
        role = _role(resource)
        if role is not None:
            by_role[role].append(resource)
    gates, switches = by_role[GATE_KIND], by_role[SWITCH_KIND]
    if len(gates) != 1:
        names = ", ".join(g.name for g in gates) or "none"
        report(f"exactly one promotion gate must exist, found {len(gates)} ({names})", None)
    if not switches:
        report("no routing switch: the live color must be moved by the gated routing resource", None)
    for gate in gates:
        _check_gate(gate, report)
    only_gate = gates[0] if len(gates) == 1 else None
    for switch in switches:
        _check_switch(switch, only_gate, report)
