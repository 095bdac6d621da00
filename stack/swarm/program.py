"""The Swarm target's program: the same release (plan, gate, switch) over services across nodes.

What `__main__.py` runs for `target: swarm`: overlay networks, the datastores on the data node,
both colors as services, the proxy on every edge node, the release records, the gate (its Swarm
checks, then the HTTP checks through an edge node's preview listener) and the switch on every
edge proxy, which moves the background work with the traffic. The live
color's service is pinned (release/plan.py): a release changes only the idle color's service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi_random as random

from release.audit import audit_target
from release.gate import PromotionGate, PromotionGateArgs
from release.guard import ReleaseRecord
from release.plan import plan, read_previous
from release.record import DeployRecord, fingerprint, program_sources
from release.swarm.guard import SwarmReleaseGuard
from release.swarm.nodes import Node
from release.swarm.provider import SwarmRouting, SwarmRoutingArgs
from settings import COLORS, ConfigError, Settings, other_color
from stack.swarm.app import SwarmColor, SwarmColorArgs, SwarmColorProps, swarm_color_fingerprint
from stack.swarm.data import SwarmData, SwarmDataArgs, SwarmDataProps, handoff_props
from stack.swarm.network import SwarmNetworks, SwarmNetworksArgs
from stack.swarm.proxy import SwarmProxy, SwarmProxyArgs, SwarmProxyProps
from stack.swarm.signal import SwarmSignal, SwarmSignalArgs, SwarmSignalProps

#: The project's root (`__main__.py`): the deploy record's fingerprint covers its sources.
ROOT = Path(__file__).resolve().parents[2]


def swarm_program(settings: Settings, stack: str) -> None:
    swarm = settings.swarm
    if swarm is None:  # the settings refuse this; a program without nodes must not guess them
        raise ConfigError(["paper-trading:swarm: is required with target: swarm"])
    networks = SwarmNetworks("swarm-networks",
                             SwarmNetworksArgs(name_prefix=settings.name_prefix, stack=stack))
    # Keys the names of this stack's Docker secrets (stack/swarm/objects.py, `keyed`).
    name_key = random.RandomId("secret-name-key", byte_length=16)
    data = SwarmData("datastores", SwarmDataArgs(props=SwarmDataProps.of(settings), stack=stack,
                                                 backend_network_id=networks.backend.id,
                                                 secret_name_key=name_key))
    release = plan(settings, read_previous(), lambda color: swarm_color_fingerprint(settings, color))
    for note in release.notes:
        pulumi.log.info(note)
    edges = [Node(node.name, node.endpoint, node.address) for node in swarm.labelled("edge")]
    data_node = swarm.labelled("data")[0]
    proxy_name = SwarmProxyProps.service_name(settings.name_prefix)
    guard = SwarmReleaseGuard("release-guard", manager=swarm.manager_node.endpoint,
                              proxy_service=proxy_name, edge_nodes=edges,
                              recorded_live=release.live, changing=release.changing)
    apps = {
        color: SwarmColor(
            f"app-{color}",
            SwarmColorArgs(color=color, props=SwarmColorProps.of(settings, color), stack=stack,
                           frontend_network_id=networks.frontend.id,
                           backend_network_id=networks.backend.id, data_secrets=data.app_secrets,
                           secret_name_key=name_key,
                           pinned=release.pinned(color), autoscaled=swarm.autoscale.enabled,
                           depends_on=[guard]),
            opts=pulumi.ResourceOptions(depends_on=[networks]),
        )
        for color in COLORS
    }
    records = [
        ReleaseRecord(
            f"release-{color}", color=color, image=release.releases[color].image,
            replicas=release.releases[color].replicas, fingerprint=release.releases[color].fingerprint,
            opts=pulumi.ResourceOptions(depends_on=[apps[color].service]),
        )
        for color in COLORS
    ]
    proxy = SwarmProxy(
        "proxy",
        SwarmProxyArgs(props=SwarmProxyProps.of(settings), stack=stack,
                       frontend_network_id=networks.frontend.id,
                       depends_on=[app.service for app in apps.values()]),
    )
    # The auto-scaler's signal, when on: part of what the gate waits for (a deploy is whole first).
    signals: list[pulumi.Resource] = []
    if swarm.autoscale.enabled:
        signal = SwarmSignal("autoscale-signal", SwarmSignalArgs(
            props=SwarmSignalProps.of(settings, stack, {color: apps[color].name for color in COLORS}),
            stack=stack, frontend_network_id=networks.frontend.id))
        signals.append(signal.service)
        pulumi.export("signalService", signal.name)
        pulumi.export("signalUrl", f"http://{swarm.manager_node.address}:{swarm.autoscale.signal_port}")
    candidate = settings.deployment.active_color
    # The audit trail (release/audit.py): a local volume on the data node, written through its engine.
    audit = audit_target(settings, stack)
    port = settings.proxy.http_port
    public_url = f"http://{edges[0].address}:{port}"
    gate = PromotionGate(
        "promotion-gate",
        PromotionGateArgs.from_settings(settings),
        opts=pulumi.ResourceOptions(depends_on=[proxy.service, *(app.service for app in apps.values()),
                                                *data.services, *signals]),
        candidate_containers=[apps[candidate].service.id],
        swarm={
            "manager": swarm.manager_node.endpoint,
            "service": apps[candidate].name,
            "nodes": [Node(n.name, n.endpoint, n.address).props() for n in swarm.nodes],
            "proxyService": proxy.name,
            "edgeNodes": [edge.props() for edge in edges],
        },
    )
    routing = SwarmRouting(
        "routing",
        SwarmRoutingArgs(
            proxy_service=proxy.name, proxy_service_id=proxy.service.id,
            proxy_spec=[config.name for config in proxy.configs], edge_nodes=edges,
            live_color=gate.approved_color, preview_color=gate.approved_color.apply(other_color),
            scheme="http", port=port, public_url=public_url, host_header=settings.server.host,
            ca_file=settings.validation.ca_file, insecure=settings.validation.insecure,
            handoff=handoff_props(settings.workers, data, Node(
                data_node.name, data_node.endpoint, data_node.address).props()),
            audit=audit,
        ),
    )
    # `activeColor` moves only once every edge node confirmed the switch.
    active: pulumi.Output[Any] = pulumi.Output.all(gate.approved_color, routing.switch.id).apply(
        lambda values: values[0])
    pulumi.export("activeColor", active)
    pulumi.export("previewColor", active.apply(other_color))
    pulumi.export("appUrl", public_url)
    pulumi.export("edgeUrls", [f"http://{edge.address}:{port}" for edge in edges])
    pulumi.export("previewUrl", f"http://{edges[0].address}:{settings.proxy.preview_port}")
    for color in COLORS:
        pulumi.export(f"{color}Image", release.releases[color].image)
        pulumi.export(f"{color}Service", apps[color].name)
    pulumi.export("releaseRecords", [record.urn for record in records])
    # One `deploy` audit record per changed deployment, once everything above is done (as on one host).
    DeployRecord(
        "deploy-record", stack=stack,
        fingerprint=fingerprint(settings.model_dump_json(), program_sources(ROOT)),
        live_color=active, audit=audit,
        opts=pulumi.ResourceOptions(depends_on=[networks, data, guard, *apps.values(), *records, proxy,
                                                *signals, gate, routing]),
    )
