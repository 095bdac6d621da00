"""Every policy of the pack, importable without starting the pack's gRPC server.

`POLICIES` is what `policies/__main__.py` hands to `PolicyPack` and what the offline check
(`python -m policies.check`) runs. Every validator is wrapped by `fail_closed`: under
`pulumi preview` the SDK would turn an unknown value into an advisory note even for a
mandatory policy, so an unknown (or unreadable) value where a rule must look is reported
as a violation of that rule itself, at its own level.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyComplianceFramework,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

from . import data, gating, hardening, host_guard, segmentation, services, settings, trading, versions
from .props import Malformed

Validator = Callable[[ResourceValidationArgs, ReportViolation], None]
StackValidator = Callable[[StackValidationArgs, ReportViolation], None]

MANDATORY = EnforcementLevel.MANDATORY
ADVISORY = EnforcementLevel.ADVISORY
PACK_NAME = "paper-trading-policies"


AnyValidator = Callable[[Any, ReportViolation], None]


def fail_closed(policy: str, check: AnyValidator) -> AnyValidator:
    """Run `check`; an unknown or malformed value it must read becomes a violation."""

    @wraps(check)
    def validate(args: Any, report: ReportViolation) -> None:
        try:
            check(args, report)
        except UnknownValueError as exc:
            report(f"{exc.message}: {policy} must read this value, so it must be known at preview "
                   "(fail closed); compute it from config, not from another resource's output", None)
        except Malformed as exc:
            report(f"unreadable input: {exc} (fail closed)", None)
        except Exception as exc:  # noqa: BLE001 - any failure to decide must block, not pass
            report(f"policy could not evaluate this resource: {type(exc).__name__}: {exc} "
                   "(fail closed)", None)

    return validate


def _with_services(name: str, check: Validator) -> AnyValidator:
    """`check`, which reads containers; a Swarm service is read as its tasks' container when the
    rule applies to services (`services.SERVICE_RULES`)."""
    if name not in services.SERVICE_RULES:
        return check

    @wraps(check)
    def validate(args: Any, report: ReportViolation) -> None:
        if args.resource_type == services.SERVICE:
            args = services.ServiceAsContainer(args)
        check(args, report)

    return validate


def _cis(section: str) -> PolicyComplianceFramework:
    return PolicyComplianceFramework(name="CIS Docker Benchmark", version="1.6.0", reference=section)


def _policy(
    name: str, check: Validator, level: EnforcementLevel, severity: Severity,
    framework: PolicyComplianceFramework | None = None, remediation: str | None = None,
) -> ResourceValidationPolicy:
    description = (check.__doc__ or name).strip().splitlines()[0]
    return ResourceValidationPolicy(
        name=name,
        description=description,
        validate=fail_closed(name, _with_services(name, check)),
        enforcement_level=level,
        config_schema=settings.schema(name),
        severity=severity,
        framework=framework,
        tags=["paper-trading"] if framework is None else ["cis-docker"],
        remediation_steps=remediation,
    )


CRITICAL, HIGH, MEDIUM, LOW = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW

POLICIES: list[ResourceValidationPolicy] = [
    # The rule above all: no path to real trading.
    _policy("paper-trading-mode", trading.check_paper_trading_mode, MANDATORY, CRITICAL,
            remediation="Build app containers with stack.app; never override their trading envs."),
    _policy("read-only-exchange-keys", trading.check_read_only_exchange_keys, MANDATORY, CRITICAL,
            remediation="Use READ_ONLY sandbox keys; set <EXCHANGE>_PERMISSIONS=READ_ONLY, _SANDBOX=true, "
                        "_BASE_URL to an allowed host."),
    _policy("app-containers-labelled", trading.check_app_containers_labelled, MANDATORY, CRITICAL,
            remediation="Label app containers paper-trading.role=app and paper-trading.color=<blue|green>."),
    # CIS Docker Benchmark, section 5.
    _policy("container-not-privileged", hardening.check_not_privileged, MANDATORY, CRITICAL, _cis("5.4")),
    _policy("container-capabilities-dropped", hardening.check_capabilities_dropped, MANDATORY, HIGH,
            _cis("5.3")),
    _policy("container-no-host-namespaces", hardening.check_no_host_namespaces, MANDATORY, HIGH,
            _cis("5.9")),
    _policy("container-no-sensitive-mounts", hardening.check_no_sensitive_mounts, MANDATORY, CRITICAL,
            _cis("5.5")),
    _policy("container-no-new-privileges", hardening.check_no_new_privileges, MANDATORY, HIGH, _cis("5.25")),
    _policy("container-memory-limit", hardening.check_memory_limit, MANDATORY, MEDIUM, _cis("5.10")),
    _policy("container-ports-bound", hardening.check_ports_bound, MANDATORY, HIGH, _cis("5.13")),
    _policy("service-ports-host-mode", services.check_service_ports, MANDATORY, HIGH, _cis("5.13")),
    _policy("container-image-pinned", hardening.check_image_pinned, MANDATORY, MEDIUM),
    _policy("container-user-networks-only", hardening.check_user_networks_only, MANDATORY, MEDIUM,
            _cis("5.29")),
    # The only internet-facing component runs a current nginx (floor: contract/versions.py).
    _policy("proxy-image-current", versions.check_proxy_image_current, MANDATORY, HIGH,
            remediation="Pin images.nginx to an exact nginx release at or above NGINX_FLOOR in "
                        "contract/versions.py, e.g. nginx:1.30.6-alpine."),
    # The apps reach nothing of the monitoring control plane.
    _policy("monitoring-segmented", segmentation.check_monitoring_segmented, MANDATORY, CRITICAL,
            remediation="Attach apps only to the frontend/backend networks and the control plane only "
                        "to monitoring/metrics (stack/network.py); Prometheus reaches the apps "
                        "through the proxy's status relay."),
    # The host firewall's guard: the one container with host network and NET_ADMIN/NET_RAW.
    _policy("host-guard-confined", host_guard.check_host_guard_confined, MANDATORY, CRITICAL,
            remediation="Build the host guard with stack.firewall; it adds only NET_ADMIN and "
                        "NET_RAW, runs read-only with host networking, publishes nothing."),
    # Data safety.
    _policy("data-volumes-protected", data.check_data_volumes_protected, MANDATORY, HIGH),
    _policy("backend-network-internal", data.check_backend_network_internal, MANDATORY, HIGH),
    # CIS 5.12, mandatory again: files reach containers through carriers.
    _policy("container-read-only-rootfs", hardening.check_read_only_rootfs, MANDATORY, MEDIUM, _cis("5.12")),
    # Advisory hardening.
    _policy("container-healthcheck", hardening.check_healthcheck, ADVISORY, LOW, _cis("4.6")),
    _policy("container-restart-bounded", hardening.check_restart_bounded, ADVISORY, LOW, _cis("5.14")),
]

def _stack_policy(name: str, check: Callable[[StackValidationArgs, ReportViolation], None],
                  remediation: str) -> StackValidationPolicy:
    """A mandatory, critical stack policy whose description is its check's first docstring line."""
    return StackValidationPolicy(
        name=name,
        description=(check.__doc__ or "").strip().splitlines()[0],
        validate=fail_closed(name, check),
        enforcement_level=MANDATORY,
        severity=CRITICAL,
        tags=["paper-trading"],
        remediation_steps=remediation,
    )


STACK_POLICIES: list[StackValidationPolicy] = [
    # Traffic moves only through an enabled promotion gate (docs/policies.md).
    _stack_policy(
        "promotion-gated", gating.check_promotion_gated,
        "Build the gate and the routing switch as __main__.py does: routing's liveColor "
        "is the gate's approvedColor; never disable the gate or skip safety/health checks.",
    ),
    # The same property as monitoring-segmented over the whole graph, each (app, network) pair named.
    _stack_policy(
        "monitoring-segmented-graph", segmentation.check_monitoring_segmented_stack,
        "Keep app containers off every network that holds Prometheus, Alertmanager, "
        "Loki or Grafana (docs/monitoring.md, Networks).",
    ),
    # One owner of the firewall table.
    _stack_policy(
        "host-guard-single", host_guard.check_host_guard_single,
        "Build one Firewall component (stack/firewall.py); no other container "
        "carries the host-guard role.",
    ),
]

ALL_POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [*POLICIES, *STACK_POLICIES]
BY_NAME: dict[str, ResourceValidationPolicy] = {p.name: p for p in POLICIES}
