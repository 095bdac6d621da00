"""`monitoring-segmented`: no app container shares a network with the monitoring control plane.

A compromised app on a network with Alertmanager could silence the paper-mode and real-trade
alerts; with Loki or VictoriaLogs, write the audit trail; with Prometheus or Grafana, read or reshape what
operators see. Two rules enforce it:

- the resource rule (mandatory, runs at `pulumi preview` before anything exists): an app
  container (`paper-trading.role=app`, or anything carrying an app marker: a `color` label or
  an `app*` service label) joins only networks whose names end with an app suffix
  (`-frontend`, `-backend`); a control-plane container (`paper-trading.service` in
  prometheus/alertmanager/grafana/loki/victorialogs) joins only networks whose names end with a
  control-plane suffix (`-monitoring`, `-metrics`). The two suffix lists must be disjoint,
  so the two sets of networks cannot meet. A network name that is unknown at preview, or
  `networkMode` `host`/`none`/`container:...`, is a violation (fail closed); `networkMode`
  naming a network counts as joining it, and `bridge` (the provider's default, which it
  detaches before the container starts) counts as nothing;
- the stack rule: over the whole graph, every (app container, network) pair where that
  network also holds a control-plane container, named exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs, StackValidationArgs

from contract import COLOR_LABEL, ROLE_LABEL, SERVICE_LABEL

from . import settings
from .props import CONTAINER, Malformed, as_list, as_str, field, labels, squash

POLICY = "monitoring-segmented"
CONTROL_PLANE = ["prometheus", "alertmanager", "grafana", "loki", "victorialogs"]
APP_NETWORK_SUFFIXES = ["-frontend", "-backend"]
CONTROL_PLANE_NETWORK_SUFFIXES = ["-monitoring", "-metrics"]


def is_app(props: Any) -> bool:
    """The app role, or any marker of it (a stripped role label must not hide an app)."""
    found = labels(props)
    if "app" in (found.get(ROLE_LABEL) or []) or COLOR_LABEL in found:
        return True
    return any(squash(s).startswith("APP") for s in found.get(SERVICE_LABEL) or [])


def control_plane_service(props: Any, services: Iterable[str]) -> str | None:
    wanted = {squash(s) for s in services}
    for svc in labels(props).get(SERVICE_LABEL) or []:
        if squash(svc) in wanted:
            return svc
    return None


#: `networkMode` values meaning "created on the default bridge": pulumi-docker (which also fills in
#: `bridge` as the default, seen under the real engine) detaches it and attaches `networksAdvanced`.
DEFAULT_MODES = ("", "bridge", "default")


def network_mode(props: Any) -> str:
    return (as_str(field(props, "networkMode"), "networkMode") or "").strip()


def networks(props: Any) -> list[str]:
    """Every network the container joins, by name; an unknown name raises (fail closed).

    A `networkMode` naming a network counts as joining it; the default bridge does not (see
    DEFAULT_MODES); `host`, `none` and `container:...` are reported by the rule itself.
    """
    mode = network_mode(props)
    names: list[str] = [] if mode.lower() in DEFAULT_MODES or _special(mode) else [mode]
    for i, entry in enumerate(as_list(field(props, "networksAdvanced"), "networksAdvanced")):
        name = as_str(field(entry, "name", f"networksAdvanced.{i}"), f"networksAdvanced.{i}.name",
                      optional=False)
        assert name is not None
        names.append(name)
    return names


def _special(mode: str) -> bool:
    return mode.lower() in ("host", "none") or mode.lower().startswith("container:")


def _suffixed(name: str, suffixes: Iterable[str]) -> bool:
    return any(name.endswith(s) for s in suffixes)


def check_monitoring_segmented(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """No app container on a network of the monitoring control plane (Prometheus, Alertmanager, ...)."""
    if args.resource_type != CONTAINER:
        return
    cfg = settings.config(args, POLICY)
    app_suffixes = [str(s) for s in cfg["appNetworkSuffixes"]]
    plane_suffixes = [str(s) for s in cfg["controlPlaneNetworkSuffixes"]]
    overlap = [a for a in app_suffixes for p in plane_suffixes if a.endswith(p) or p.endswith(a)]
    if overlap or not app_suffixes or not plane_suffixes:
        raise Malformed(f"{POLICY} config: app and control-plane network suffixes must be non-empty "
                        f"and disjoint (app {app_suffixes}, control plane {plane_suffixes})")
    app = is_app(args.props)
    plane = control_plane_service(args.props, [str(s) for s in cfg["controlPlaneServices"]])
    if not app and plane is None:
        return
    who = "app container" if app else f"control-plane container ({plane})"
    mode = network_mode(args.props)
    if _special(mode):
        # host: every address of the host; container:<x>: x's networks, whatever they are.
        report(f"{who} sets networkMode={mode!r}: join named networks only (networksAdvanced)", None)
    if app and plane is not None:
        report(f"container is both an app and the control-plane service {plane}", None)
        return
    joined = networks(args.props)
    if not joined:
        report(f"{who} joins no named network", None)
    for name in joined:
        if app and not _suffixed(name, app_suffixes):
            report(f"{who} joins network {name!r}: apps may join only networks ending in "
                   f"{app_suffixes}, never one the monitoring control plane can join", None)
        elif not app and not _suffixed(name, plane_suffixes):
            report(f"{who} joins network {name!r}: the control plane may join only networks ending "
                   f"in {plane_suffixes}, never one an app can join", None)


# --------------------------------------------------------------------------- the whole graph


@dataclass(frozen=True)
class Shared:
    """An app container on a network that also holds a control-plane container."""

    container: str
    network: str
    control_plane: tuple[str, ...]

    def message(self) -> str:
        return (f"app container {self.container!r} shares network {self.network!r} with the monitoring "
                f"control plane ({', '.join(self.control_plane)})")


def shared_networks(containers: Iterable[tuple[str, Any]],
                    services: Iterable[str] = CONTROL_PLANE) -> list[Shared]:
    """(name, props) of every container -> each app/network pair that meets the control plane."""
    services = list(services)
    members: dict[str, list[str]] = {}
    apps: list[tuple[str, list[str]]] = []
    for name, props in containers:
        joined = networks(props)
        plane = control_plane_service(props, services)
        if plane is not None:
            for net in joined:
                members.setdefault(net, []).append(plane)
        if is_app(props):
            apps.append((name, joined))
    return [Shared(name, net, tuple(sorted(members[net])))
            for name, joined in apps for net in joined if net in members]


def check_monitoring_segmented_stack(args: StackValidationArgs, report: ReportViolation) -> None:
    """Over the graph: no app container shares a network with Prometheus, Alertmanager, Loki, Grafana."""
    containers = []
    for resource in args.resources:
        if resource.resource_type == CONTAINER:
            props: Mapping[str, Any] = resource.props
            name = as_str(field(props, "name"), "name") or resource.name
            containers.append((name, props))
    for finding in shared_networks(containers):
        report(finding.message(), None)
