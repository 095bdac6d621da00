"""The paper-trading deployment: load settings, build the target's components, export outputs."""

import os
from pathlib import Path

import pulumi

from contract import STACK_LABEL
from release.audit import audit_target
from release.gate import PromotionGate, PromotionGateArgs
from release.guard import ReleaseGuard, ReleaseRecord
from release.plan import plan, read_previous
from release.record import DeployRecord, fingerprint, program_sources
from release.routing import Routing, RoutingArgs
from settings import COLORS, Settings, load_settings, other_color
from stack.app import AppColor, AppColorArgs, AppColorProps, color_fingerprint
from stack.backup import Backup, BackupArgs, BackupProps
from stack.datastores import Datastores, DatastoresArgs, DatastoresProps, handoff_props
from stack.firewall import Firewall, FirewallArgs, FirewallProps
from stack.ids import Ids, IdsArgs, IdsProps
from stack.monitoring import Monitoring, MonitoringArgs, MonitoringProps
from stack.network import Networks, NetworksArgs
from stack.proxy import Proxy, ProxyArgs, ProxyProps
from stack.swarm.program import swarm_program
from stack.volumes import Volumes, VolumesArgs


def single_host(settings: Settings, stack: str) -> None:
    """The single Docker host: containers, the exec-based switch on its one proxy."""
    stack_labels = {STACK_LABEL: stack}

    networks = Networks("networks", NetworksArgs(name_prefix=settings.name_prefix, stack=stack))
    volumes = Volumes("volumes", VolumesArgs(name_prefix=settings.name_prefix, stack=stack))
    datastores = Datastores(
        "datastores",
        DatastoresArgs(props=DatastoresProps.of(settings), networks=networks.names, volumes=volumes,
                       stack_labels=stack_labels),
        opts=pulumi.ResourceOptions(depends_on=[*networks.all, *volumes.by_service.values()]),
    )
    backup = Backup(
        "backup",
        BackupArgs(
            props=BackupProps.of(settings), networks=networks.names, volumes=volumes, datastores=datastores,
            stack_labels=stack_labels,
        ),
    )
    # Releases go to the idle color only (release/plan.py): the live color, as the last
    # confirmed switch left it, is pinned; a change of its own is refused here, at preview.
    release = plan(settings, read_previous(), lambda color: color_fingerprint(settings, color))
    for note in release.notes:
        pulumi.log.info(note)
    release_guard = ReleaseGuard(
        "release-guard", proxy_container_name=f"{settings.name_prefix}-proxy", recorded_live=release.live,
        changing=release.changing,
    )
    apps = {
        color: AppColor(
            f"app-{color}",
            AppColorArgs(
                color=color, props=AppColorProps.of(settings, color), networks=networks.names,
                datastores=datastores, stack_labels=stack_labels, pinned=release.pinned(color),
                depends_on=[release_guard],
            ),
            opts=pulumi.ResourceOptions(depends_on=networks.all),
        )
        for color in COLORS
    }
    # What each color runs, saved as soon as its containers are done (the next run reads it back).
    release_records = [
        ReleaseRecord(
            f"release-{color}", color=color, image=release.releases[color].image,
            replicas=release.releases[color].replicas, fingerprint=release.releases[color].fingerprint,
            opts=pulumi.ResourceOptions(depends_on=apps[color].containers),
        )
        for color in COLORS
    ]
    proxy = Proxy(
        "proxy",
        ProxyArgs(
            props=ProxyProps.of(settings), networks=networks.names, stack_labels=stack_labels,
            depends_on=[container for app in apps.values() for container in app.containers],
        ),
    )
    monitoring = Monitoring(
        "monitoring",
        MonitoringArgs(
            props=MonitoringProps.of(settings, stack), networks=networks.names, volume_names=volumes.names,
            stack_labels=stack_labels, datastores=datastores, textfile_volume=backup.metrics_volume_name,
            depends_on=[*networks.all, *volumes.by_service.values(), *datastores.containers],
        ),
    )
    # Intrusion detection: fail2ban reads the proxy's access-log file and writes ban decisions the
    # host guard enforces (docs/security.md, "Intrusion detection").
    security: list[pulumi.Resource] = []
    if settings.security.ids.enabled:
        security.append(Ids("ids", IdsArgs(
            props=IdsProps.of(settings), networks=networks.names, stack_labels=stack_labels,
            depends_on=[*networks.all, volumes.by_service["proxy-logs"], volumes.by_service["decisions"],
                        proxy.container],  # nginx creates the access-log file the jails read
        )))

    # The host firewall: from outside only the proxy's public ports reach a container; the IDS's
    # bans are dropped first (docs/security.md, "Host firewall").
    if settings.security.firewall.enabled:
        decisions = volumes.by_service.get("decisions")
        security.append(Firewall(
            "firewall",
            FirewallArgs(props=FirewallProps.of(settings), stack_labels=stack_labels,
                         decisions_volume=volumes.names.get("decisions"), networks=networks.all,
                         depends_on=[decisions] if decisions is not None else []),
        ))

    # The desired color is validated through the preview listener before any traffic moves;
    # the routing resource then switches Nginx to the approved color (and back on failure).
    app_containers = [container for app in apps.values() for container in app.containers]
    gate = PromotionGate(
        "promotion-gate",
        PromotionGateArgs.from_settings(settings),
        opts=pulumi.ResourceOptions(depends_on=[proxy.container, *app_containers]),
        # Alertmanager requires basic auth: the gate's monitoring.alertmanager check needs it.
        alertmanager_password=(monitoring.alertmanager_password.result
                               if monitoring.alertmanager_password is not None else None),
        # The approval is bound to the candidate's containers and spent by a failed switch.
        proxy_container_name=proxy.container_name,
        candidate_containers=[c.id for c in apps[settings.deployment.active_color].containers],
    )
    routing = Routing(
        "routing",
        RoutingArgs(
            proxy_container_name=proxy.container_name,
            proxy_container_id=proxy.container.id,
            live_color=gate.approved_color,
            preview_color=gate.approved_color.apply(other_color),
            public_url=proxy.public_url,
            ca_file=settings.validation.ca_file,
            insecure=settings.validation.insecure,
            audit=audit_target(settings, stack),  # switches leave audit records
            # Background work moves with the traffic (none when the stack runs no work).
            handoff=handoff_props(settings.workers, datastores),
        ),
    )
    # `activeColor` moves only once the switch is confirmed through the public listener.
    active_color = pulumi.Output.all(gate.approved_color, routing.switch.id).apply(lambda values: values[0])
    pulumi.export("activeColor", active_color)
    pulumi.export("previewColor", active_color.apply(other_color))
    pulumi.export("appUrl", proxy.public_url)
    pulumi.export("previewUrl", proxy.preview_url)
    pulumi.export("prometheusUrl", monitoring.prometheus_url)
    pulumi.export("grafanaUrl", monitoring.grafana_url)
    pulumi.export("alertmanagerUrl", monitoring.alertmanager_url)
    if monitoring.grafana_admin_password is not None:
        pulumi.export("grafanaAdminPassword", pulumi.Output.secret(monitoring.grafana_admin_password.result))
    if monitoring.alertmanager_password is not None:
        # User `prometheus`; Alertmanager (UI and API) requires it.
        pulumi.export("alertmanagerPassword", pulumi.Output.secret(monitoring.alertmanager_password.result))
    for color in COLORS:
        pulumi.export(f"{color}Image", release.releases[color].image)

    # One `deploy` audit record per changed deployment, registered last and depending on every
    # component above, so the engine reaches it only when all of them are done.
    deployed: list[pulumi.Resource] = [
        networks, volumes, datastores, backup, release_guard, *apps.values(), *release_records, proxy,
        monitoring, *security, gate, routing,
    ]
    DeployRecord(
        "deploy-record",
        stack=stack,
        fingerprint=fingerprint(settings.model_dump_json(), program_sources(Path(__file__).resolve().parent)),
        live_color=active_color,
        audit=audit_target(settings, stack),
        opts=pulumi.ResourceOptions(depends_on=deployed),
    )


settings = load_settings(os.path.dirname(os.path.abspath(__file__)))
if settings.target == "swarm":
    swarm_program(settings, pulumi.get_stack())
else:
    single_host(settings, pulumi.get_stack())
