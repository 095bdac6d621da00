"""Swarm services under the container rules: a service's task is a container, so it is read as one.

`docker:index/service:Service` carries what its tasks' containers run under
`taskSpec.containerSpec`. `as_container` projects those props onto the container props the
rules read (image, envs, labels, entrypoint and args, mounts, read-only root, user,
capabilities, memory limit, healthcheck, restart policy, files), so the paper-trading,
exchange-key and hardening rules judge a service exactly as they judge a container, with the
same fail-closed readers: an unknown or malformed value where a rule looks is a violation.

Where the service schema cannot say what a rule asks, the rule is not applied to services
and docs/swarm.md states the residual: no `security_opt` (no-new-privileges), no ulimits or
pids limit. `check_service_ports` replaces the container port rule: Swarm publishes on every
address of a node, so only the proxy may publish, and only in host mode.
"""

from __future__ import annotations

from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs

from contract import ROLE_LABEL, SIGNAL_ROLE

from .props import CONTAINER, as_list, as_map, as_number, as_str, field

SERVICE = "docker:index/service:Service"
#: The container rules that also judge services (by policy name); the others cannot be
#: expressed in the service schema (docs/swarm.md, "Policies on services").
SERVICE_RULES = frozenset({
    "paper-trading-mode", "read-only-exchange-keys", "app-containers-labelled",
    "container-not-privileged", "container-capabilities-dropped", "container-no-sensitive-mounts",
    "container-memory-limit", "container-image-pinned", "proxy-image-current", "host-guard-confined",
    "container-read-only-rootfs", "container-healthcheck", "container-restart-bounded",
})
#: Service roles that may publish ports (on every address of the node they run on), and how many.
PUBLISHING_ROLES: dict[str, int] = {"proxy": 3, SIGNAL_ROLE: 1}


class ServiceAsContainer:
    """A service's validation args, read as its tasks' container (everything else delegated)."""

    resource_type = CONTAINER

    def __init__(self, args: ResourceValidationArgs) -> None:
        self._args = args
        self.props = as_container(args.props)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._args, name)


def _label_entries(value: Any, path: str) -> list[dict[str, Any]]:
    return [{"label": field(entry, "label", f"{path}.{i}"), "value": field(entry, "value", f"{path}.{i}")}
            for i, entry in enumerate(as_list(value, path))]


def as_container(props: Any) -> dict[str, Any]:
    """The container props of a service's tasks (only what the container rules read)."""
    task = as_map(field(props, "taskSpec"), "taskSpec")
    spec = as_map(field(task, "containerSpec", "taskSpec"), "taskSpec.containerSpec")
    where = "taskSpec.containerSpec"
    env = as_map(field(spec, "env", where), f"{where}.env")
    envs = [f"{key}={as_str(field(env, key, f'{where}.env'), f'{where}.env.{key}', optional=False)}"
            for key in env]
    caps = {"drops": field(spec, "capDrops", where), "adds": field(spec, "capAdds", where)}
    mounts = []
    for i, mount in enumerate(as_list(field(spec, "mounts", where), f"{where}.mounts")):
        at = f"{where}.mounts.{i}"
        mounts.append({key: field(mount, key, at) for key in ("type", "source", "target", "readOnly")})
    # Configs and secrets are files in the container: the `.env`-file rule reads them as uploads.
    files = []
    for kind in ("configs", "secrets"):
        for i, item in enumerate(as_list(field(spec, kind, where), f"{where}.{kind}")):
            files.append({"file": as_str(field(item, "fileName", f"{where}.{kind}.{i}"),
                                         f"{where}.{kind}.{i}.fileName", optional=False)})
    limits = as_map(field(as_map(field(task, "resources", "taskSpec"), "taskSpec.resources"), "limits",
                          "taskSpec.resources"), "taskSpec.resources.limits")
    memory = as_number(field(limits, "memoryBytes", "taskSpec.resources.limits"),
                       "taskSpec.resources.limits.memoryBytes")
    restart = as_map(field(task, "restartPolicy", "taskSpec"), "taskSpec.restartPolicy")
    condition = as_str(field(restart, "condition", "taskSpec.restartPolicy"),
                       "taskSpec.restartPolicy.condition")
    return {
        "image": field(spec, "image", where),
        "envs": envs,
        # The service's own labels count too: a role set on either is a role.
        "labels": _label_entries(field(props, "labels"), "labels")
        + _label_entries(field(spec, "labels", where), f"{where}.labels"),
        "entrypoints": field(spec, "commands", where),
        "command": field(spec, "args", where),
        "mounts": mounts,
        "uploads": files,
        "readOnly": field(spec, "readOnly", where),
        "user": field(spec, "user", where),
        "capabilities": {key: value for key, value in caps.items() if value is not None},
        "memory": None if memory is None else memory / (1024 * 1024),
        "healthcheck": field(spec, "healthcheck", where),
        # Swarm's `any` restarts forever, as Docker's `always` does.
        "restart": {"on-failure": "on-failure", "none": "no", "any": "always", None: "always"}.get(condition,
                                                                                                   condition),
        "maxRetryCount": field(restart, "maxAttempts", "taskSpec.restartPolicy"),
    }


def check_service_ports(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Swarm services publish only the proxy's ports, in host mode (no routing mesh)."""
    if args.resource_type != SERVICE:
        return
    endpoint = as_map(field(args.props, "endpointSpec"), "endpointSpec")
    ports = as_list(field(endpoint, "ports", "endpointSpec"), "endpointSpec.ports")
    if not ports:
        return
    view = as_container(args.props)
    roles = sorted({entry["value"] for entry in view["labels"] if entry["label"] == ROLE_LABEL})
    allowed = PUBLISHING_ROLES.get(roles[0]) if len(roles) == 1 else 0
    if not allowed:
        report(f"service with role {roles} publishes ports; only the proxy may (every address of its "
               "nodes), and the auto-scaler's signal its one port", None)
    elif len(ports) > allowed:
        report(f"service with role {roles} publishes {len(ports)} ports; it may publish {allowed}", None)
    for i, port in enumerate(ports):
        at = f"endpointSpec.ports.{i}"
        mode = as_str(field(port, "publishMode", at), f"{at}.publishMode")
        if mode != "host":
            report(f"{at}: publishMode must be host, not {mode or 'ingress (the default)'}: "
                   "the routing mesh hides the client's address from rate limits, the IDS and the firewall",
                   None)
