"""The swarm target's settings: a stack that cannot be deployed on Swarm is refused, by key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from release.audit import AuditTarget, audit_target
from release.swarm.cli import Target
from settings import ConfigError, Settings, parse_settings
from tools.render import ROOT, stack_config

STACK = "swarmlab"


def _lab(**changes: Any) -> tuple[dict[str, str], frozenset[str]]:
    config, secrets = stack_config(STACK)
    raw = {key.split(":", 1)[1]: value for key, value in config.items() if key.startswith("paper-trading:")}
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value if isinstance(value, str) else json.dumps(value)
    return raw, frozenset(secrets)


def _parse(**changes: Any) -> Settings:
    raw, secrets = _lab(**changes)
    return parse_settings(raw, secrets)


def _problems(**changes: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        _parse(**changes)
    return caught.value.problems


def _swarm(**changes: Any) -> dict[str, Any]:
    raw, _ = _lab()
    swarm: dict[str, Any] = json.loads(raw["swarm"])
    swarm.update(changes)
    return swarm


def test_the_lab_stack_is_a_swarm_stack() -> None:
    settings = _parse()
    assert settings.target == "swarm" and settings.swarm is not None
    assert [n.name for n in settings.swarm.labelled("edge")] == ["ptsl-n1", "ptsl-n2"]
    assert settings.swarm.manager_node.endpoint == "unix:///run/ptsl/n1.sock"
    assert settings.swarm.preview_from == ("192.168.77.254/32",)


@pytest.mark.parametrize(("case", "changes", "key"), [
    ("no-nodes", {"swarm": None}, "paper-trading:swarm: is required with target: swarm"),
    ("one-replica", {"deployment": {"activeColor": "blue", "blue": {"image": "a:1", "replicas": 1},
                                    "green": {"image": "a:1", "replicas": 2}}},
     "paper-trading:deployment.blue.replicas:"),
    ("backup-on", {"backup": {"enabled": True}}, "paper-trading:backup.enabled:"),
    ("firewall-on", {"security": {"firewall": {"enabled": True}, "ids": {"enabled": False},
                                  "audit": {"enabled": False}}}, "paper-trading:security.firewall.enabled:"),
    ("tls-on", {"server": {"ssl": {"enabled": True}}}, "paper-trading:server.ssl.enabled:"),
    ("prometheus-on", {"monitoring": {"prometheus": {"enabled": True}, "alertmanager": {"enabled": False},
                                      "grafana": {"enabled": False}, "logs": {"enabled": False}}},
     "paper-trading:monitoring.prometheus.enabled:"),
])
def test_what_swarm_cannot_deploy_is_refused_by_its_key(case: str, changes: dict[str, Any], key: str) -> None:
    problems = _problems(**changes)
    assert len(problems) == 1 and problems[0].startswith(key), problems


def test_the_audit_trail_is_written_through_the_data_nodes_engine() -> None:
    """Swarm never moves a local volume: the trail lives on the first `data` node, written with the
    image it already runs; the emergency CLI finds the same trail in the stack file alone."""
    target = AuditTarget.from_props(audit_target(_parse(), STACK))
    assert target is not None
    assert (target.endpoint, target.volume, target.image, target.fail_closed) == (
        "unix:///run/ptsl/n3.sock", "paper-trading-lab-audit-data", "paper-trading-ci/postgres:15", True)
    assert Target(ROOT / f"Pulumi.{STACK}.yaml", STACK).audit == target
    assert audit_target(_parse(security={"audit": {"enabled": False}, "firewall": {"enabled": False},
                                         "ids": {"enabled": False}}), STACK) is None


def test_swarm_nodes_on_a_docker_target_are_refused() -> None:
    assert _problems(target="docker")[0].startswith("paper-trading:swarm: set only with target: swarm")


@pytest.mark.parametrize(("case", "swarm", "key"), [
    ("same-name", {"nodes": [
        {"name": "a", "endpoint": "unix:///a.sock", "address": "10.0.0.1", "labels": ["edge"]},
        {"name": "a", "endpoint": "unix:///b.sock", "address": "10.0.0.2", "labels": ["data"]}],
        "manager": "a"}, "paper-trading:swarm.nodes: name 'a' is given to more than one node"),
    ("no-edge", {"nodes": [
        {"name": "a", "endpoint": "unix:///a.sock", "address": "10.0.0.1", "labels": ["data"]},
        {"name": "b", "endpoint": "unix:///b.sock", "address": "10.0.0.2", "labels": ["data"]}],
        "manager": "a"}, "paper-trading:swarm.nodes: no node is labelled 'edge'"),
    ("unknown-manager", {"manager": "ptsl-n9"}, "paper-trading:swarm.manager: 'ptsl-n9' is not one of"),
    ("bad-endpoint", {"nodes": [
        {"name": "a", "endpoint": "http://a:2375", "address": "10.0.0.1", "labels": ["edge"]},
        {"name": "b", "endpoint": "unix:///b.sock", "address": "10.0.0.2", "labels": ["data"]}],
        "manager": "a"}, "paper-trading:swarm.nodes.0.endpoint: 'http://a:2375' is not a Docker endpoint"),
    ("bad-label", {"nodes": [
        {"name": "a", "endpoint": "unix:///a.sock", "address": "10.0.0.1", "labels": ["edge", "gpu"]},
        {"name": "b", "endpoint": "unix:///b.sock", "address": "10.0.0.2", "labels": ["data"]}],
        "manager": "a"}, "paper-trading:swarm.nodes.0.labels.1:"),
    ("one-node", {"nodes": [
        {"name": "a", "endpoint": "unix:///a.sock", "address": "10.0.0.1", "labels": ["edge", "data"]}],
        "manager": "a"}, "paper-trading:swarm.nodes:"),
    ("one-app-node", {"nodes": [
        {"name": "a", "endpoint": "unix:///a.sock", "address": "10.0.0.1", "labels": ["edge"]},
        {"name": "b", "endpoint": "unix:///b.sock", "address": "10.0.0.2", "labels": ["edge", "data"]}],
        "manager": "a"}, "paper-trading:swarm.nodes: the apps run on nodes without the 'data' label"),
    ("preview-open", {"previewFrom": []}, "paper-trading:swarm.previewFrom:"),
    ("preview-typo", {"previewFrom": ["192.168.77.x"]}, "paper-trading:swarm.previewFrom:"),
    ("autoscale-flat", {"autoscale": {"scaleOutAbove": 4, "scaleInBelow": 4}},
     "paper-trading:swarm.autoscale.scaleInBelow: must be below"),
    ("autoscale-bounds", {"autoscale": {"minReplicas": 5, "maxReplicas": 3}},
     "paper-trading:swarm.autoscale.maxReplicas: must be at least"),
    ("typo", {"managr": "ptsl-n1"}, "paper-trading:swarm.managr: unknown key"),
    ("autoscale-no-alerts", {"autoscale": {"enabled": True}},
     "paper-trading:swarm.autoscale.alertmanagerUrl: is required"),
    ("autoscale-bad-alerts", {"autoscale": {"enabled": True, "alertmanagerUrl": "am:9093"}},
     "paper-trading:swarm.autoscale.alertmanagerUrl:"),
    ("autoscale-replicas-outside", {"autoscale": {"enabled": True, "alertmanagerUrl": "http://am:9093",
                                                  "minReplicas": 3}},
     "paper-trading:deployment.blue.replicas: 2 is outside swarm.autoscale's bounds"),
])
def test_bad_swarm_sections_name_the_key(case: str, swarm: dict[str, Any], key: str) -> None:
    problems = _problems(swarm=_swarm(**swarm))
    assert any(p.startswith(key) for p in problems), problems
