"""The auto-scaler's signal on Swarm: one Prometheus task on the manager node, scraping both colors.

Only what the decision rule reads (release/swarm/autoscale.py): every app task's requests in
flight, found by DNS on the overlay, kept for an hour on the task's own tmpfs (a signal, not a
history: the monitoring stack is the history, and the swarm target does not deploy it yet). Its
API is published on the manager node's `swarm.autoscale.signalPort` in host mode, where the
auto-scaler reads it; the same read-only root, dropped capabilities and non-root user as every
other task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from contract import ROLE_LABEL, SERVICE_LABEL, SIGNAL_ROLE, STACK_LABEL
from render.monitoring.signal import SIGNAL_PORT, signal_config
from settings import Limits, Settings
from stack.common import http_probe
from stack.swarm.objects import (
    RESTART,
    TIMEZONE_ENV,
    config_object,
    container_labels,
    converge,
    health,
    resources,
    rollout,
    service_labels,
    tmpfs,
)

CONFIG_FILE = "/etc/prometheus/prometheus.yml"
#: Not the image's /prometheus: Docker copies an existing directory's owner and mode onto the tmpfs
#: mounted over it (root, 0755 in this image), and Prometheus runs as nobody (found on the lab).
DATA_DIR = "/run/prometheus-signal"
NOBODY = "65534:65534"


@dataclass(frozen=True)
class SwarmSignalProps:
    """What the signal reads: its image, where it runs and publishes, what it scrapes."""

    name_prefix: str
    image: str
    manager: str
    port: int
    limits: Limits
    config: str

    @classmethod
    def of(cls, settings: Settings, stack: str, services: Mapping[str, str]) -> SwarmSignalProps:
        assert settings.swarm is not None  # the settings require it with target: swarm
        return cls(settings.name_prefix, settings.images.prometheus, settings.swarm.manager,
                   settings.swarm.autoscale.signal_port, settings.limits.monitoring,
                   signal_config(services, settings.server.port, stack))


@dataclass(frozen=True)
class SwarmSignalArgs:
    props: SwarmSignalProps
    stack: str
    frontend_network_id: pulumi.Input[str]
    depends_on: Sequence[pulumi.Resource] = ()


class SwarmSignal(pulumi.ComponentResource):
    """Prometheus for the auto-scaler: `<prefix>-autoscale-signal`, one task on the manager node."""

    def __init__(self, name: str, args: SwarmSignalArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("paper-trading:swarm:AutoscaleSignal", name, None, opts)
        s = args.props
        self.name = f"{s.name_prefix}-autoscale-signal"
        self.config = config_object("config", f"{s.name_prefix}-signal-prometheus", s.config, self)
        uid, gid = NOBODY.split(":")
        update, rollback = rollout("stop-first")
        self.service = docker.Service(
            "signal",
            name=self.name,
            labels=service_labels(args.stack),
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=s.image,
                    args=[f"--config.file={CONFIG_FILE}", f"--storage.tsdb.path={DATA_DIR}",
                          "--storage.tsdb.retention.time=1h", f"--web.listen-address=:{SIGNAL_PORT}"],
                    env=TIMEZONE_ENV,
                    labels=container_labels({STACK_LABEL: args.stack, SERVICE_LABEL: SIGNAL_ROLE,
                                             ROLE_LABEL: SIGNAL_ROLE}),
                    user=NOBODY,
                    read_only=True,
                    cap_drops=["ALL"],
                    configs=[docker.ServiceTaskSpecContainerSpecConfigArgs(
                        config_id=self.config.id, config_name=self.config.name, file_name=CONFIG_FILE,
                        file_uid=uid, file_gid=gid, file_mode=0o444)],
                    mounts=[tmpfs(DATA_DIR, 128)],
                    healthcheck=health(http_probe(f"http://127.0.0.1:{SIGNAL_PORT}/-/ready")),
                    stop_grace_period="10s",
                ),
                networks_advanceds=[docker.ServiceTaskSpecNetworksAdvancedArgs(id=args.frontend_network_id)],
                placement=docker.ServiceTaskSpecPlacementArgs(constraints=[f"node.hostname=={s.manager}"]),
                resources=resources(s.limits),
                restart_policy=RESTART,
            ),
            mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=1)),
            endpoint_spec=docker.ServiceEndpointSpecArgs(mode="dnsrr", ports=[
                docker.ServiceEndpointSpecPortArgs(target_port=SIGNAL_PORT, published_port=s.port,
                                                   protocol="tcp", publish_mode="host")]),
            update_config=update,
            rollback_config=rollback,
            converge_config=converge(),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.config, *args.depends_on]),
        )
        self.register_outputs({"service": self.service.name})
