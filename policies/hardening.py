"""Container hardening after the CIS Docker Benchmark, section 5 (container runtime).

Mandatory: privileges, capabilities, host namespaces, host mounts, no-new-privileges,
memory, published ports, pinned images, user networks, read-only root filesystem (with
listed exceptions, never for the apps or the proxy). Advisory: healthcheck, bounded restarts.
"""

from __future__ import annotations

import ipaddress
import posixpath

from pulumi_policy import ReportViolation, ResourceValidationArgs

from contract import CARRIER_LABEL, ROLE_LABEL
from settings import image_pin_problem

from . import settings
from .host_guard import HOST_CAPABILITIES, is_host_guard
from .props import (
    CONTAINER,
    REMOTE_IMAGE,
    as_bool,
    as_list,
    as_map,
    as_number,
    as_str,
    field,
    is_image_id,
    labels,
    service,
    strings,
)
from .segmentation import is_app


def _say(report: ReportViolation, message: str) -> None:
    report(message, None)


def check_not_privileged(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """CIS 5.4 / 5.17: no privileged mode, no host devices or GPUs handed in."""
    if args.resource_type != CONTAINER:
        return
    if as_bool(field(args.props, "privileged"), "privileged"):
        _say(report, "privileged must be false")
    if as_list(field(args.props, "devices"), "devices"):
        _say(report, "devices hands host devices to the container; remove it")
    if as_str(field(args.props, "gpus"), "gpus"):
        _say(report, "gpus hands host GPUs to the container; remove it")


def _cap(name: str) -> str:
    return name.strip().upper().removeprefix("CAP_")


def check_capabilities_dropped(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """CIS 5.3: drop ALL capabilities; add back only what the service's allow-list names."""
    if args.resource_type != CONTAINER:
        return
    caps = as_map(field(args.props, "capabilities"), "capabilities")
    drops = {_cap(c) for c in strings(caps, "drops")}
    adds = [_cap(c) for c in strings(caps, "adds")]
    if "ALL" not in drops:
        _say(report, f"capabilities.drops must include ALL (found {sorted(drops)})")
    svc = service(args.props)
    allowed_by_service = settings.config(args, "container-capabilities-dropped")["allowedCapabilities"]
    allowed = {_cap(str(c)) for c in (allowed_by_service.get(svc or "") or [])}
    guard = is_host_guard(args.props)
    for cap in adds:
        if cap in HOST_CAPABILITIES:
            # Only the host guard, whatever the pack config says (policies/host_guard.py).
            if not guard:
                _say(report, f"capability {cap} is reserved for the host guard (role host-guard); "
                             f"service {svc!r} may not add it")
            continue
        if cap == "ALL" or cap not in allowed:
            _say(report, f"capability {cap} may not be added to service {svc!r} "
                         f"(allowed: {sorted(allowed) or 'none'})")


def check_no_host_namespaces(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """CIS 5.9, 5.15, 5.16, 5.30: no host network, PID, IPC, user or cgroup namespace."""
    if args.resource_type != CONTAINER:
        return
    guard = is_host_guard(args.props)
    for key in ("networkMode", "pidMode", "ipcMode", "usernsMode", "cgroupnsMode"):
        value = as_str(field(args.props, key), key)
        if key == "networkMode" and guard:
            continue  # the host guard's exemption (policies/host_guard.py)
        if value is not None and value.strip().lower() == "host":
            _say(report, f"{key} must not be 'host'")


# Host paths whose mounting is the CIS 5.5 finding: the directory itself or any ancestor of one.
SENSITIVE = ("/", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/sys", "/usr", "/bin", "/sbin",
             "/root", "/home", "/run", "/var/run", "/var/lib/docker", "/var/lib/containerd")
RUNTIME_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
                   "/var/run/containerd/containerd.sock", "/run/podman/podman.sock")


def _norm(path: str) -> str:
    return posixpath.normpath("/" + path.strip().lstrip("/")) if path.strip() else "/"


def _is_or_contains(path: str, target: str) -> bool:
    return target == path or target.startswith(path.rstrip("/") + "/")


def _allowed(path: str, entries: list[str]) -> bool:
    for entry in entries:
        if entry.endswith("/"):
            if path.startswith(_norm(entry).rstrip("/") + "/"):
                return True
        elif path == _norm(entry):
            return True
    return False


def check_no_sensitive_mounts(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """CIS 5.5 / 5.31: host paths only read-only and allow-listed per service; never the Docker socket."""
    if args.resource_type != CONTAINER:
        return
    svc = service(args.props) or ""
    by_service = settings.config(args, "container-no-sensitive-mounts")["allowedHostMounts"]
    entries = [str(e) for e in (by_service.get(svc) or [])]
    binds: list[tuple[str, bool | None, str]] = []
    for i, volume in enumerate(as_list(field(args.props, "volumes"), "volumes")):
        host = as_str(field(volume, "hostPath", f"volumes.{i}"), f"volumes.{i}.hostPath")
        if host is not None:
            binds.append((host, as_bool(field(volume, "readOnly", f"volumes.{i}"), f"volumes.{i}.readOnly"),
                          f"volumes.{i}"))
    for i, mount in enumerate(as_list(field(args.props, "mounts"), "mounts")):
        kind = (as_str(field(mount, "type", f"mounts.{i}"), f"mounts.{i}.type") or "").lower()
        if kind in ("volume", "tmpfs"):
            continue
        source = as_str(field(mount, "source", f"mounts.{i}"), f"mounts.{i}.source") or ""
        binds.append((source, as_bool(field(mount, "readOnly", f"mounts.{i}"), f"mounts.{i}.readOnly"),
                      f"mounts.{i}"))
    for raw, read_only, where in binds:
        path = _norm(raw)
        if any(_is_or_contains(path, sock) for sock in RUNTIME_SOCKETS) or "docker.sock" in raw \
                or "containerd.sock" in raw:
            _say(report, f"{where}: host path {raw!r} exposes the container runtime socket; never allowed")
            continue
        sensitive = any(_is_or_contains(path, s) for s in SENSITIVE)
        exact = path in {_norm(e) for e in entries if not e.endswith("/")}
        if sensitive and not exact:
            _say(report, f"{where}: host path {raw!r} is (or contains) a sensitive host directory")
        elif not _allowed(path, entries):
            _say(report, f"{where}: host path {raw!r} is not allow-listed for service {svc!r}")
        if read_only is not True:
            _say(report, f"{where}: host path {raw!r} must be mounted read-only")


def check_no_new_privileges(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """CIS 5.25 (+5.1, 5.2, 5.21): no-new-privileges on, no unconfined seccomp/AppArmor/SELinux."""
    if args.resource_type != CONTAINER:
        return
    opts = [o.strip().lower().replace("=", ":") for o in strings(args.props, "securityOpts")]
    enabled = [o for o in opts if o in ("no-new-privileges", "no-new-privileges:true")]
    disabled = [o for o in opts if o.startswith("no-new-privileges") and o not in enabled]
    if not enabled or disabled:
        _say(report, "securityOpts must contain no-new-privileges:true and nothing that turns it off")
    for opt in opts:
        if opt in ("seccomp:unconfined", "apparmor:unconfined", "label:disable", "systempaths:unconfined"):
            _say(report, f"securityOpts {opt!r} removes a kernel confinement")


def check_memory_limit(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """CIS 5.10: a memory limit (MB) on every container; swap never unlimited."""
    if args.resource_type != CONTAINER:
        return
    memory = as_number(field(args.props, "memory"), "memory")
    if memory is None or memory <= 0:
        _say(report, f"memory must be a positive limit in MB (found {memory})")
    swap = as_number(field(args.props, "memorySwap"), "memorySwap")
    if swap is not None and swap < 0:
        _say(report, "memorySwap must not be unlimited (-1)")


def _public(ip: str) -> bool:
    text = ip.strip().strip("[]")
    if text.lower() == "localhost":
        return False
    try:
        return not ipaddress.ip_address(text).is_loopback
    except ValueError:
        return True


def check_ports_bound(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """CIS 5.13: every published port names its host address; public ones only the proxy's 80/443."""
    if args.resource_type != CONTAINER:
        return
    cfg = settings.config(args, "container-ports-bound")
    public_ports = {int(float(p)) for p in cfg["publicPorts"]}
    public_services = {str(s) for s in cfg["publicServices"]}
    svc = service(args.props)
    if as_bool(field(args.props, "publishAllPorts"), "publishAllPorts"):
        _say(report, "publishAllPorts publishes every exposed port on all addresses")
    for i, port in enumerate(as_list(field(args.props, "ports"), "ports")):
        where = f"ports.{i}"
        ip = as_str(field(port, "ip", where), f"{where}.ip")
        external = as_number(field(port, "external", where), f"{where}.external")
        internal = as_number(field(port, "internal", where), f"{where}.internal")
        if not ip or not ip.strip():
            _say(report, f"{where} (container {internal}) must name its host address in `ip` "
                         "(Docker's default is every address)")
            continue
        if _public(ip):
            if svc not in public_services:
                _say(report, f"{where}: service {svc!r} may not publish on public address {ip}")
            elif external is None or int(external) not in public_ports:
                _say(report, f"{where}: only host ports {sorted(public_ports)} may be public "
                             f"(found {ip}:{external})")


def _image_problem(image: str) -> str | None:
    if not image.strip() or any(c.isspace() for c in image):
        return f"image {image!r} is not a valid reference"
    if is_image_id(image):
        return None
    return image_pin_problem(image, latest_in_any_case=True)


def check_image_pinned(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Supply chain: every image reference carries a tag or digest, never `latest` or none."""
    if args.resource_type == CONTAINER:
        key = "image"
    elif args.resource_type == REMOTE_IMAGE:
        key = "name"
    else:
        return
    image = as_str(field(args.props, key), key, optional=False)
    assert image is not None
    problem = _image_problem(image)
    if problem:
        _say(report, problem)


BUILTIN_NETWORKS = ("bridge", "default", "host")


def check_user_networks_only(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """CIS 5.29: never Docker's default bridge (or host): only user-defined networks.

    pulumi-docker creates a container in `networkMode` (default `bridge`) and, when
    `networksAdvanced` is set, detaches it from `bridge` and attaches the listed networks
    before it starts. So `bridge`/unset is fine exactly when user networks are listed; `host`,
    `none` and `container:` never are.
    """
    if args.resource_type != CONTAINER:
        return
    names = []
    for i, net in enumerate(as_list(field(args.props, "networksAdvanced"), "networksAdvanced")):
        where = f"networksAdvanced.{i}"
        name = as_str(field(net, "name", where), f"{where}.name", optional=False)
        assert name is not None
        names.append(name)
        if name.strip().lower() in BUILTIN_NETWORKS:
            _say(report, f"networksAdvanced.{i} attaches the built-in network {name!r}")
    mode = (as_str(field(args.props, "networkMode"), "networkMode") or "").strip()
    if mode.lower() == "host" and is_host_guard(args.props):
        return  # the host guard's exemption (policies/host_guard.py confines it)
    if mode.lower() in ("", "bridge", "default"):
        if not names:
            _say(report, "no user network: networkMode unset or bridge and no networksAdvanced means "
                         "Docker's default bridge")
    elif mode.lower() in BUILTIN_NETWORKS or mode.lower().startswith("container:"):
        _say(report, f"networkMode {mode!r} is not a user-defined network")


# --------------------------------------------------------------------------- advisory




def is_carrier(props: object) -> bool:
    """A never-started file carrier (stack/carrier.py): labelled, `start` exactly false.

    No process ever runs in it, so its root (writable for the provider's copy at `/`) is never written.
    """
    return len(labels(props).get(CARRIER_LABEL) or []) == 1 \
        and as_bool(field(props, "start"), "start") is False \
        and as_bool(field(props, "mustRun"), "mustRun") is not True


def check_read_only_rootfs(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """CIS 5.12: read-only root filesystem; an app or the proxy never has a writable one.

    Exempt: a never-started carrier, and the services in `writableServices` (each with its reason
    in docs/policies.md) unless it is an app (role, color or `app*` service label) or the proxy.
    """
    if args.resource_type != CONTAINER:
        return
    if as_bool(field(args.props, "readOnly"), "readOnly") is True or is_carrier(args.props):
        return
    writable = {str(s) for s in settings.config(args, "container-read-only-rootfs")["writableServices"]}
    svc = service(args.props)
    found = labels(args.props)
    protected = is_app(args.props) or svc in settings.NEVER_WRITABLE \
        or any(role in settings.NEVER_WRITABLE for role in found.get(ROLE_LABEL) or [])
    if protected:
        _say(report, f"readOnly (root filesystem) must be true for service {svc!r} (an app or the proxy "
                     "never runs with a writable root; deliver files through stack/carrier.py)")
    elif svc not in writable:
        _say(report, "readOnly (root filesystem) must be true; use tmpfs/volumes for writable paths, or "
                     "list the service in writableServices with its reason (docs/policies.md)")


def check_healthcheck(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """CIS 4.6: a healthcheck, so Docker (and `wait`) know when the service is really up."""
    if args.resource_type != CONTAINER:
        return
    check = as_map(field(args.props, "healthcheck"), "healthcheck")
    tests = strings(check, "tests") if check else []
    if not tests or tests[0].upper() == "NONE":
        _say(report, "a healthcheck should be defined")


def check_restart_bounded(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """CIS 5.14: on-failure with a bounded retry count, never always/unless-stopped."""
    if args.resource_type != CONTAINER:
        return
    limit = int(float(settings.config(args, "container-restart-bounded")["maxRetries"]))
    policy = (as_str(field(args.props, "restart"), "restart") or "no").strip().lower()
    retries = as_number(field(args.props, "maxRetryCount"), "maxRetryCount")
    if policy in ("always", "unless-stopped"):
        _say(report, f"restart {policy!r} is unbounded; use on-failure with maxRetryCount")
    elif policy == "on-failure" and (retries is None or retries <= 0 or retries > limit):
        _say(report, f"restart on-failure should set maxRetryCount between 1 and {limit} (found {retries})")
