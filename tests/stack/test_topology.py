"""The rendered graph of every stack: networks, exposure, volumes, labels, determinism."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import render_with, rendered
from tools.render import Graph, Resource, evaluate, stack_names

STACKS = stack_names()
CONTAINER = "docker:index/container:Container"


def _carrier(res: Resource) -> bool:
    """A never-started file carrier (stack/carrier.py), not a running container."""
    return "paper-trading.carrier-for" in _labels(res)


def _labels(res: Resource) -> dict[str, str]:
    return res.label_map


def _networks(res: Resource) -> list[str]:
    return [n["name"] for n in res.inputs.get("networksAdvanced") or []]


def _prefix(graph: Graph) -> str:
    backend = [n for n in graph.of_type("docker:index/network:Network") if n.name == "backend"]
    return str(backend[0].inputs["name"]).removesuffix("-backend")


def test_repo_has_prod_and_dev_stacks() -> None:
    assert {"prod", "dev"} <= set(STACKS)


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_evaluates(stack: str) -> None:
    graph = rendered(stack)
    assert graph.containers, "no containers rendered"
    assert graph.outputs["activeColor"] in ("blue", "green")


@pytest.mark.parametrize("stack", STACKS)
def test_no_container_on_default_bridge(stack: str) -> None:
    graph = rendered(stack)
    prefix = _prefix(graph)
    for res in graph.containers:
        nets = _networks(res)
        if _labels(res).get("paper-trading.role") == "host-guard":
            # The one exemption (docs/policies.md): the firewall guard lives in the host's namespace.
            assert res.inputs.get("networkMode") == "host" and not nets, res.name
            continue
        assert nets, f"{res.name} has no user network"
        assert all(n.startswith(f"{prefix}-") for n in nets), (res.name, nets)
        # Unset: pulumi-docker detaches `bridge` and attaches these networks (with aliases) before start.
        assert "networkMode" not in res.inputs, res.name


@pytest.mark.parametrize("stack", STACKS)
def test_backend_network_internal(stack: str) -> None:
    graph = rendered(stack)
    nets = {n.name: n.inputs for n in graph.of_type("docker:index/network:Network")}
    assert nets["backend"]["internal"] is True
    # metrics: exporters, RabbitMQ and the proxy's status listener need no route off the host.
    assert nets["metrics"]["internal"] is True
    assert nets["frontend"]["internal"] is False and nets["monitoring"]["internal"] is False
    assert set(nets) == {"frontend", "backend", "monitoring", "metrics"}


#: Which networks (by suffix) each service joins: the segmentation of issue 13, item 1.
LAYOUT = {
    "app-blue": {"frontend", "backend"}, "app-green": {"frontend", "backend"},
    "proxy": {"frontend", "metrics"},
    "postgres": {"backend"}, "redis": {"backend"}, "rabbitmq": {"backend", "metrics"}, "backup": {"backend"},
    "prometheus": {"monitoring", "metrics"},
    "alertmanager": {"monitoring"}, "grafana": {"monitoring"}, "loki": {"monitoring"},
    "victorialogs": {"monitoring"},
    "log-collector": {"monitoring"},
    "node-exporter": {"metrics"}, "blackbox-exporter": {"metrics"}, "nginx-exporter": {"metrics"},
    "postgres-exporter": {"backend", "metrics"}, "redis-exporter": {"backend", "metrics"},
    "ids": {"metrics"},  # issue 14, part 2: scraped there, calls nobody
    # Never-started file carriers (stack/carrier.py): one network, no alias; the apps' on backend.
    "proxy-files": {"frontend"},
    "host-guard": set(),  # issue 14, part 1: the host's network namespace (networkMode host), no user network
}


@pytest.mark.parametrize("stack", STACKS)
def test_network_layout(stack: str) -> None:
    graph = rendered(stack)
    prefix = _prefix(graph)
    found: dict[str, set[str]] = {}
    for res in graph.containers:
        service = _labels(res)["paper-trading.service"]
        found.setdefault(service, set()).update(n.removeprefix(f"{prefix}-") for n in _networks(res))
    assert found == {s: nets for s, nets in LAYOUT.items() if s in found}, found
    assert {"app-blue", "app-green", "proxy", "prometheus"} <= set(found)


CONTROL_PLANE = {"prometheus", "alertmanager", "grafana", "loki"}


@pytest.mark.parametrize("stack", STACKS)
def test_no_app_shares_a_network_with_the_monitoring_control_plane(stack: str) -> None:
    """Issue 13, item 1: a compromised app reaches no Alertmanager, Loki, Prometheus or Grafana."""
    graph = rendered(stack)
    members: dict[str, set[str]] = {}
    for res in graph.containers:
        for net in _networks(res):
            members.setdefault(net, set()).add(_labels(res)["paper-trading.service"])
    apps = [r for r in graph.containers
            if _labels(r).get("paper-trading.role") == "app" and not _carrier(r)]
    assert apps
    shared = [(r.inputs["name"], net, sorted(members[net] & CONTROL_PLANE))
              for r in apps for net in _networks(r) if members[net] & CONTROL_PLANE]
    assert shared == []
    # The internet-facing proxy meets only Prometheus (which scrapes it; it has no write API):
    # never Alertmanager, Grafana or Loki.
    proxy = graph.by_name("proxy")
    writable = CONTROL_PLANE - {"prometheus"}
    assert [net for net in _networks(proxy) if members[net] & writable] == []


@pytest.mark.parametrize("stack", STACKS)
def test_only_proxy_publishes_beyond_loopback(stack: str) -> None:
    graph = rendered(stack)
    for res in graph.containers:
        for port in res.inputs.get("ports") or []:
            ip = port.get("ip")
            assert ip, f"{res.name}: port {port} has no explicit address"
            if not ip.startswith("127."):
                assert _labels(res).get("paper-trading.role") == "proxy", (res.name, port)


@pytest.mark.parametrize("stack", STACKS)
def test_datastores_only_on_internal_networks(stack: str) -> None:
    graph = rendered(stack)
    prefix = _prefix(graph)
    for name in ("postgres", "redis"):
        res = graph.by_name(name)
        assert _networks(res) == [f"{prefix}-backend"]
        assert not res.inputs.get("ports")


@pytest.mark.parametrize("stack", STACKS)
def test_data_volumes_protected_and_retained(stack: str) -> None:
    graph = rendered(stack)
    volumes = {v.name: v for v in graph.of_type("docker:index/volume:Volume")}
    expected = {f"{s}-data" for s in (
        "postgres", "redis", "rabbitmq", "prometheus", "alertmanager", "grafana", "logs", "backups")}
    assert expected <= set(volumes)
    for name in expected:
        assert volumes[name].options["protect"] is True, name
        assert volumes[name].options["retainOnDelete"] is True, name


@pytest.mark.parametrize("stack", STACKS)
def test_both_colors_deployed_with_safety_envs_and_labels(stack: str) -> None:
    graph = rendered(stack)
    apps = [r for r in graph.containers
            if _labels(r).get("paper-trading.role") == "app" and not _carrier(r)]
    colors = {_labels(r)["paper-trading.color"] for r in apps}
    assert colors == {"blue", "green"}
    for res in apps:
        envs = res.inputs["envs"]
        color = _labels(res)["paper-trading.color"]
        assert envs.count("PAPER_TRADING_MODE=true") == 1
        assert envs.count("ALLOW_REAL_TRADES=false") == 1
        assert f"DEPLOYMENT_COLOR={color}" in envs
        assert not [e for e in envs if e.startswith(("PAPER_TRADING_MODE=", "ALLOW_REAL_TRADES="))
                    and e not in ("PAPER_TRADING_MODE=true", "ALLOW_REAL_TRADES=false")]
        aliases = {a for n in res.inputs["networksAdvanced"] for a in n.get("aliases") or []}
        assert f"app-{color}" in aliases


@pytest.mark.parametrize("stack", STACKS)
def test_app_containers_hardened(stack: str) -> None:
    graph = rendered(stack)
    for res in graph.containers:
        if _labels(res).get("paper-trading.role") != "app" or _carrier(res):
            continue
        i = res.inputs
        # Issue 21, item 7: read-only, the secret files mounted read-only from the carrier's volume.
        assert i["readOnly"] is True and not i.get("uploads"), res.name
        assert [v.get("readOnly") for v in i["volumes"]] == [True], res.name
        assert i["privileged"] is False
        assert i["capabilities"]["drops"] == ["ALL"] and not i["capabilities"].get("adds")
        assert "no-new-privileges:true" in i["securityOpts"]
        assert i["memory"] > 0 and float(i["cpus"]) > 0
        assert i["user"] and not i["user"].startswith("0")
        assert i["restart"] == "on-failure" and i["maxRetryCount"] <= 10
        assert i["logOpts"]["max-size"] and i["wait"] is True
        assert i["healthcheck"]["tests"][0] == "CMD-SHELL"


@pytest.mark.parametrize("stack", STACKS)
def test_secrets_never_in_envs_or_plain_uploads(stack: str) -> None:
    graph = rendered(stack)
    for res in graph.containers:
        for env in res.inputs.get("envs") or []:
            assert "secret:" not in env and "mock-" not in env, (res.name, env)
        for upload, wire in zip(res.inputs.get("uploads") or [], res.wire.get("uploads") or [], strict=True):
            if "secret:" in str(upload.get("content")) or "mock-" in str(upload.get("content")):
                assert "4dabf18193072939515e22adb298388d" in json.dumps(wire), (res.name, upload["file"])


def test_secret_outputs_are_not_plain() -> None:
    graph = rendered("prod")
    for name, value in graph.outputs.items():
        if name not in graph.secret_outputs:
            assert "secret:" not in str(value) and "mock-" not in str(value), name


def _without_start_time(resource: Any) -> dict[str, Any]:
    """The deploy record's `startedAt` is the program's start (it measures the deploy's duration)."""
    raw = resource.to_json()
    if raw["name"] == "deploy-record":
        raw["inputs"].pop("startedAt", None)
    return dict(raw)


def test_two_evaluations_give_the_same_graph() -> None:
    first = [_without_start_time(r) for r in evaluate("prod").resources]
    second = [_without_start_time(r) for r in evaluate("prod").resources]
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


def _by_urn(graph: Graph) -> dict[str, dict[str, Any]]:
    return {r.urn: r.to_json()["inputs"] for r in graph.resources}


def test_flipping_active_color_changes_only_routing_resources() -> None:
    blue = rendered("prod")
    config = json.loads(json.dumps(blue.outputs))
    assert config["activeColor"] == "blue"
    from tools.render import stack_config

    raw, _ = stack_config("prod")
    deployment = json.loads(raw["paper-trading:deployment"])
    deployment["activeColor"] = "green"
    green = render_with("prod", deployment=deployment)
    assert green.outputs["activeColor"] == "green"
    before, after = _by_urn(blue), _by_urn(green)
    assert set(before) == set(after), "flipping the color must not add or remove resources"
    changed = sorted(urn for urn in before if before[urn] != after[urn])
    routing_types = ("pulumi-python:dynamic:Resource",)
    for urn in changed:
        kind = urn.split("::")[2].split("$")[-1]
        assert kind in routing_types, f"flip changed a non-routing resource: {urn}"
    for res in green.containers:
        assert before[res.urn] == after[res.urn], res.name


@pytest.mark.parametrize("stack", STACKS)
def test_urns_unique(stack: str) -> None:
    """The engine rejects two resources with one URN (a child name reused under one parent type)."""
    urns = [r.urn for r in rendered(stack).resources]
    duplicates = sorted({u for u in urns if urns.count(u) > 1})
    assert not duplicates, duplicates


def test_volume_aliases_are_registered(tmp_path: Path) -> None:
    """A renamed volume resource keeps its data: the old name travels as an alias."""
    (tmp_path / "__main__.py").write_text(
        "from stack.volumes import Volumes, VolumesArgs\n"
        "Volumes('volumes', VolumesArgs(name_prefix='t', stack='s', aliases={'postgres': ['pg-data']}))\n"
    )
    graph = evaluate("dev", config={}, secret_keys=[], root=tmp_path)
    volume = graph.by_name("postgres-data")
    assert volume.options["aliases"] == ["pg-data"]
    assert graph.by_name("redis-data").options["aliases"] == []


# --------------------------------------------------------------------------- issue 15, part C


def _settings(stack: str) -> Any:
    from settings import parse_settings
    from tools.render import stack_config

    config, secrets = stack_config(stack)
    raw = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("paper-trading:")}
    return parse_settings(raw, frozenset(k.split(":", 1)[1] for k in secrets))


@pytest.mark.parametrize("stack", STACKS)
def test_apps_get_the_work_settings_the_same_for_both_colors(stack: str) -> None:
    graph, w = rendered(stack), _settings(stack).workers
    expected = {
        "WORK_ENABLED": "true" if w.enabled else "false", "WORK_QUEUES": ",".join(w.queues),
        "WORK_LEASE_TTL_MS": str(w.lease_ttl_ms), "WORK_PREFETCH": str(w.prefetch),
        "WORK_TICK_MS": str(w.tick_ms),
    }
    apps = [r for r in graph.containers
            if _labels(r).get("paper-trading.role") == "app" and not _carrier(r)]
    assert apps
    for res in apps:
        work = [e.split("=", 1) for e in res.inputs["envs"] if e.startswith("WORK_")]
        assert dict(work) == expected and len(work) == len(expected), res.name


def test_work_envs_follow_the_config() -> None:
    graph = render_with("prod", workers={"enabled": False, "queues": ["a.b", "c"], "prefetch": 3})
    [env] = {tuple(e for e in r.inputs["envs"] if e.startswith("WORK_"))
             for r in graph.containers if _labels(r).get("paper-trading.role") == "app" and not _carrier(r)}
    assert env == ("WORK_ENABLED=false", "WORK_QUEUES=a.b,c", "WORK_LEASE_TTL_MS=3000", "WORK_PREFETCH=3",
                   "WORK_TICK_MS=1000")


@pytest.mark.parametrize("stack", STACKS)
def test_rabbitmq_loads_secret_definitions_with_single_active_consumer_queues(stack: str) -> None:
    from stack.datastores import RABBITMQ_DEFINITIONS, rabbitmq_password_hash

    graph, w = rendered(stack), _settings(stack).workers
    res = graph.by_name("rabbitmq")
    prefix = _prefix(graph)
    # The management API (15672) is published nowhere; the broker stays on backend (+ metrics for the scrape).
    assert not res.inputs.get("ports") and not res.inputs.get("publishAllPorts")
    assert sorted(_networks(res)) == [f"{prefix}-backend", f"{prefix}-metrics"]
    uploads = {u["file"]: (u, wire)
               for u, wire in zip(res.inputs["uploads"], res.wire["uploads"], strict=True)}
    conf = uploads["/etc/rabbitmq/conf.d/20-paper-trading.conf"][0]["content"]
    settings = dict(line.split(" = ", 1) for line in conf.splitlines())
    assert settings["load_definitions"] == RABBITMQ_DEFINITIONS
    assert settings["prometheus.return_per_object_metrics"] == "true"
    assert "default_pass" not in settings  # dead with definitions: the user lives in them
    upload, wire = uploads[RABBITMQ_DEFINITIONS]
    assert "4dabf18193072939515e22adb298388d" in json.dumps(wire), \
        "definitions hold the password hash: secret"
    document = json.loads(upload["content"])
    password = "mock-rabbitmq-password-32"  # tools.render's stand-in for the RandomPassword
    assert password not in upload["content"]
    assert document["users"] == [{"name": "trading", "password_hash": rabbitmq_password_hash(password),
                                  "hashing_algorithm": "rabbit_password_hashing_sha256",
                                  "tags": ["administrator"]}]
    assert document["vhosts"] == [{"name": "/"}]
    queues = [(q["name"], q["vhost"], q["durable"], q["auto_delete"], q["arguments"])
              for q in document["queues"]]
    assert queues == [(name, "/", True, False, {"x-single-active-consumer": True}) for name in w.queues]
    assert set(document) == {"vhosts", "users", "permissions", "queues"}


def test_rabbitmq_password_hash_is_rabbitmqs_sha256_format() -> None:
    """base64(4-byte salt + sha256(salt + password)), stable for one password (no churn on `up`)."""
    import base64
    import hashlib

    from stack.datastores import rabbitmq_password_hash

    raw = base64.b64decode(rabbitmq_password_hash("s3cret"))
    salt, digest = raw[:4], raw[4:]
    assert len(raw) == 36 and digest == hashlib.sha256(salt + b"s3cret").digest()
    assert rabbitmq_password_hash("s3cret") == rabbitmq_password_hash("s3cret")
    assert rabbitmq_password_hash("s3cret") != rabbitmq_password_hash("s3cres")
