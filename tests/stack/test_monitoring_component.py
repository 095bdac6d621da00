"""The Monitoring component under the SDK mocks, in a small program next to the real components.

Checks the graph a policy would see: every container on the monitoring network, UIs
published only on bindAddress, no Docker socket, host paths only the allowed
read-only ones, secrets only as files, uploads equal to the builders' output, and
an activeColor flip leaves every monitoring container's inputs unchanged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from contract import SECRETS_DIR
from render.monitoring import alertmanager, grafana, layout, prometheus, rules
from tests.support.monitoring import stack_settings
from tools.render import ROOT, Graph, evaluate, stack_config

PROGRAM = '''
import pulumi
from contract import STACK_LABEL
from settings import load_settings
from stack.datastores import Datastores, DatastoresArgs, DatastoresProps
from stack.monitoring import Monitoring, MonitoringArgs, MonitoringProps
from stack.network import Networks, NetworksArgs
from stack.volumes import Volumes, VolumesArgs
import tests.stack.test_monitoring_component as probe

settings = load_settings()
stack = pulumi.get_stack()
stack_labels = {STACK_LABEL: stack}
networks = Networks("networks", NetworksArgs(name_prefix=settings.name_prefix, stack=stack))
volumes = Volumes("volumes", VolumesArgs(name_prefix=settings.name_prefix, stack=stack))
datastores = Datastores("datastores", DatastoresArgs(
    props=DatastoresProps.of(settings), networks=networks.names, volumes=volumes, stack_labels=stack_labels))
probe.LAST = Monitoring("monitoring", MonitoringArgs(
    props=MonitoringProps.of(settings, stack), networks=networks.names, volume_names=volumes.names,
    stack_labels=stack_labels,
    datastores=datastores, textfile_volume=settings.name_prefix + "-backup-metrics",
    depends_on=[datastores.postgres, datastores.redis, datastores.rabbitmq]))
'''

LAST: Any = None
MONITORING_SERVICES = {"prometheus", "alertmanager", "grafana", "loki", "log-collector", "node-exporter",
                       "blackbox-exporter", "nginx-exporter", "postgres-exporter", "redis-exporter"}
ALLOWED_HOST_PATHS = {
    "node-exporter": {"/proc", "/sys"},
    "log-collector": {layout.DOCKER_CONTAINERS_DIR},
}


def _evaluate(tmp_path: Path, stack: str, config: dict[str, str] | None = None) -> tuple[Graph, Any]:
    global LAST
    LAST = None
    (tmp_path / "__main__.py").write_text(PROGRAM)
    shutil.copy(ROOT / f"Pulumi.{stack}.yaml", tmp_path / f"Pulumi.{stack}.yaml")
    base, secrets = stack_config(stack)
    graph = evaluate(stack, config={**base, **(config or {})}, secret_keys=secrets, root=tmp_path)
    assert LAST is not None
    return graph, LAST


def _monitoring(graph: Graph) -> dict[str, dict[str, Any]]:
    found = {}
    for res in graph.containers:
        service = res.label_map.get("paper-trading.service")
        if service in MONITORING_SERVICES:
            found[service] = res.inputs
    return found


@pytest.fixture(scope="module")
def prod(tmp_path_factory: pytest.TempPathFactory) -> tuple[Graph, Any]:
    return _evaluate(tmp_path_factory.mktemp("prod"), "prod")


def test_every_service_is_deployed_on_its_monitoring_networks(prod: tuple[Graph, Any]) -> None:
    graph, _ = prod
    containers = _monitoring(graph)
    assert set(containers) == MONITORING_SERVICES
    for service, inputs in containers.items():
        nets = {n["name"]: n.get("aliases") or [] for n in inputs["networksAdvanced"]}
        # The control plane alone on `monitoring`; what Prometheus scrapes on `metrics`.
        expected = {"paper-trading-monitoring"} if service in layout.CONTROL_PLANE else set()
        if service in layout.SCRAPED:
            expected.add("paper-trading-metrics")
        backend = service in ("postgres-exporter", "redis-exporter")
        if backend:
            expected.add("paper-trading-backend")
        assert set(nets) == expected, service
        for net in expected - {"paper-trading-backend"}:
            assert layout.ALIASES[service] in nets[net], (service, net)
        assert inputs["readOnly"] is (not inputs.get("uploads")), service  # writable only for uploads
        assert inputs["privileged"] is False, service
        assert inputs["labels"], service


def test_uis_published_only_on_bind_address(prod: tuple[Graph, Any]) -> None:
    graph, _ = prod
    published = {}
    for service, inputs in _monitoring(graph).items():
        for port in inputs.get("ports") or []:
            assert port["ip"] == "127.0.0.1", (service, port)
            published[service] = int(port["external"])
    assert published == {"prometheus": 9090, "alertmanager": 9093, "grafana": 3001, "loki": 3100}


#: Flags that would open a write endpoint on Prometheus (issue 13, item 1: no unauthenticated writes).
PROMETHEUS_WRITE_FLAGS = ("--web.enable-admin-api", "--web.enable-lifecycle",
                          "--web.enable-remote-write-receiver", "--enable-feature=remote-write-receiver")


def test_prometheus_has_no_write_endpoint(prod: tuple[Graph, Any]) -> None:
    graph, _ = prod
    command = _monitoring(graph)["prometheus"]["command"]
    words = ("admin-api", "lifecycle", "remote-write")
    opened = [a for a in command if a in PROMETHEUS_WRITE_FLAGS or any(w in a for w in words)]
    assert command and opened == []


def test_alertmanager_requires_basic_auth(prod: tuple[Graph, Any]) -> None:
    """The web config and the password reach only the containers that need them, as secrets."""
    graph, _ = prod
    containers = _monitoring(graph)
    assert f"--web.config.file={layout.ALERTMANAGER_WEB_CONFIG}" in containers["alertmanager"]["command"]
    holders = sorted(s for s, inputs in containers.items()
                     if layout.ALERTMANAGER_PASSWORD_FILE in [u["file"] for u in inputs.get("uploads") or []])
    assert holders == ["alertmanager", "grafana", "prometheus"]
    for res in graph.containers:
        if res.label_map.get("paper-trading.service") in ("alertmanager", "grafana", "prometheus"):
            for upload, wire in zip(res.inputs["uploads"], res.wire["uploads"], strict=True):
                if upload["file"].startswith(SECRETS_DIR):
                    assert "4dabf18193072939515e22adb298388d" in json.dumps(wire), upload["file"]
    check = containers["alertmanager"]["healthcheck"]["tests"]
    assert check[0] == "CMD-SHELL" and f"$(cat {layout.ALERTMANAGER_PASSWORD_FILE})@127.0.0.1" in check[1]


def test_loki_reachable_only_from_the_control_plane(prod: tuple[Graph, Any]) -> None:
    """Loki has no auth: only the log collector, Grafana, Prometheus (and Alertmanager) share its network."""
    graph, _ = prod
    loki_nets = {n["name"] for n in _monitoring(graph)["loki"]["networksAdvanced"]}
    neighbours = sorted({res.label_map.get("paper-trading.service", "") for res in graph.containers
                         if loki_nets & {n["name"] for n in res.inputs["networksAdvanced"]}})
    assert neighbours == ["alertmanager", "grafana", "log-collector", "loki", "prometheus"]


def test_bind_address_is_configurable(tmp_path: Path) -> None:
    config, _ = stack_config("prod")
    mon = json.loads(config["paper-trading:monitoring"])
    mon["bindAddress"] = "10.1.2.3"
    graph, component = _evaluate(tmp_path, "prod", {"paper-trading:monitoring": json.dumps(mon)})
    ips = {p["ip"] for inputs in _monitoring(graph).values() for p in inputs.get("ports") or []}
    assert ips == {"10.1.2.3"}
    assert component.grafana_url == "http://10.1.2.3:3001"


def test_no_docker_socket_and_only_allowed_host_paths(prod: tuple[Graph, Any]) -> None:
    graph, _ = prod
    for service, inputs in _monitoring(graph).items():
        blob = json.dumps(inputs)
        assert "docker.sock" not in blob, service
        host_paths = {v["hostPath"] for v in inputs.get("volumes") or [] if v.get("hostPath")}
        host_paths |= {m["source"] for m in inputs.get("mounts") or [] if m.get("type") == "bind"}
        assert host_paths <= ALLOWED_HOST_PATHS.get(service, set()), service
        for volume in inputs.get("volumes") or []:
            if volume.get("hostPath"):
                assert volume.get("readOnly") is True, (service, volume)


def test_secrets_are_files_never_envs(prod: tuple[Graph, Any]) -> None:
    graph, _ = prod
    for res in graph.containers:
        if res.label_map.get("paper-trading.service") not in MONITORING_SERVICES:
            continue
        envs = " ".join(res.inputs.get("envs") or [])
        assert "mock-" not in envs and "PASSWORD=" not in envs, res.name
    grafana_res = next(r for r in graph.containers if r.label_map.get("paper-trading.service") == "grafana")
    pairs = zip(grafana_res.inputs["uploads"], grafana_res.wire["uploads"], strict=True)
    uploads = {u["file"]: (u, w) for u, w in pairs}
    upload, wire = uploads[layout.GRAFANA_ADMIN_PASSWORD_FILE]
    assert "4dabf18193072939515e22adb298388d" in json.dumps(wire), "admin password upload must be secret"
    # Root-owned, readable by Grafana's user (uid 472); never owner-mapped (see secret_file).
    assert upload["permissions"] == "0444" and not upload.get("owner") and not upload.get("group")
    env = f"GF_SECURITY_ADMIN_PASSWORD__FILE={layout.GRAFANA_ADMIN_PASSWORD_FILE}"
    assert env in grafana_res.inputs["envs"]


def test_uploaded_files_equal_the_builders(prod: tuple[Graph, Any]) -> None:
    graph, component = prod
    settings = stack_settings("prod")
    expected = {
        "paper-trading-prometheus": {
            layout.PROMETHEUS_CONFIG: prometheus.prometheus_config(settings, "prod"),
            layout.ALERT_RULES: rules.alert_rules(settings),
            layout.RECORDING_RULES: rules.recording_rules(),
        },
        "paper-trading-alertmanager": {
            layout.ALERTMANAGER_CONFIG: alertmanager.alertmanager_config(settings, None),
        },
    }
    for container, files in expected.items():
        assert {p: component.files[container][p] for p in files} == files
    boards = {f"{layout.GRAFANA_DASHBOARDS_DIR}/{n}": t for n, t in grafana.dashboards(settings).items()}
    assert boards.items() <= component.files["paper-trading-grafana"].items()
    rendered = graph.files()
    for container, files in component.files.items():
        for path, text in files.items():
            assert rendered[f"{container}{path}"] == text, (container, path)


def test_outputs_and_children(prod: tuple[Graph, Any]) -> None:
    _, component = prod
    assert component.prometheus_url == "http://127.0.0.1:9090"
    assert component.alertmanager_url == "http://127.0.0.1:9093"
    assert component.grafana_url == "http://127.0.0.1:3001"
    assert component.grafana_admin_password is not None
    for attr in ("prometheus", "alertmanager", "grafana", "loki", "log_collector", "node_exporter",
                 "blackbox_exporter", "nginx_exporter", "postgres_exporter", "redis_exporter"):
        assert getattr(component, attr) is not None, attr


def test_active_color_flip_changes_no_monitoring_input(prod: tuple[Graph, Any], tmp_path: Path) -> None:
    config, _ = stack_config("prod")
    deployment = json.loads(config["paper-trading:deployment"])
    assert deployment["activeColor"] == "blue"
    deployment["activeColor"] = "green"
    flipped, _ = _evaluate(tmp_path, "prod", {"paper-trading:deployment": json.dumps(deployment)})
    before, after = _monitoring(prod[0]), _monitoring(flipped)
    assert before.keys() == after.keys()
    for service in before:
        assert before[service] == after[service], f"{service} changes when activeColor flips"


def test_textfile_volume_mounted_read_only(prod: tuple[Graph, Any]) -> None:
    node = _monitoring(prod[0])["node-exporter"]
    textfile = [v for v in node["volumes"] if v.get("containerPath") == layout.TEXTFILE_DIR]
    assert textfile == [{"containerPath": "/textfile", "readOnly": True,
                         "volumeName": "paper-trading-backup-metrics"}]
    assert f"--collector.textfile.directory={layout.TEXTFILE_DIR}" in node["command"]
