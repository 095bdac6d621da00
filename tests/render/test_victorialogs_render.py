"""`monitoring.logs.backend: victorialogs` rendered: flags, containers, scrape jobs, Grafana (no Docker).

The flags are parsed back (`victorialogs.flags`) and checked as structure; the containers are the
program's own render of the ci stack (which runs this backend) and of dev switched to it. The real
store and collector run in tests/docker/test_victorialogs_docker.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from release.audit import AUDIT_DIR, AUDIT_FILE, Auditor, FileSink, parse
from render.monitoring import grafana, layout, loki, victorialogs
from settings import ConfigError, parse_settings
from tests.support import render_with, rendered
from tools.render import stack_config

CI_PREFIX = "paper-trading-ci"


def _settings(stack: str, **logs: Any) -> Any:
    config, secrets = stack_config(stack)
    raw = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("paper-trading:")}
    if logs:
        monitoring = json.loads(raw["monitoring"])
        monitoring["logs"] = {**monitoring.get("logs", {}), **logs}
        raw["monitoring"] = json.dumps(monitoring)
    return parse_settings(raw, frozenset(k.split(":", 1)[1] for k in secrets))


def _by_service(graph: Any) -> dict[str, dict[str, Any]]:
    return {r.label_map["paper-trading.service"]: r.inputs for r in graph.containers}


def _dev_on_victorialogs() -> Any:
    config, _ = stack_config("dev")
    monitoring = json.loads(config["paper-trading:monitoring"])
    monitoring["logs"]["backend"] = "victorialogs"
    # Grafana on too (dev has it off: nothing builds it here), to check what it reads.
    monitoring["grafana"]["enabled"] = True
    return render_with("dev", monitoring=monitoring)


# ------------------------------------------------------------------ config


def test_backend_defaults_to_loki_and_ci_runs_victorialogs() -> None:
    assert _settings("prod").monitoring.logs.backend == "loki"
    ci = _settings("ci")
    assert (ci.monitoring.logs.enabled, ci.monitoring.logs.backend) == (True, "victorialogs")
    assert (ci.images.victoria_logs, ci.images.vlagent) == (
        "paper-trading-ci/victoria-logs:1.52.2", "paper-trading-ci/vlagent:1.52.2")


@pytest.mark.parametrize("logs,key", [
    ({"backend": "elasticsearch"}, "monitoring.logs.backend"),
    ({"store": "victorialogs"}, "monitoring.logs.store"),
])
def test_an_unknown_backend_or_key_is_refused_by_name(logs: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings("ci", **logs)
    assert any(problem.startswith(f"paper-trading:{key}:") for problem in caught.value.problems), \
        caught.value.problems


# ------------------------------------------------------------------ flags


def test_server_flags_keep_everything_as_long_as_the_audit_trail() -> None:
    settings = _settings("ci")
    parsed = victorialogs.flags(victorialogs.server_args(settings))
    assert parsed == {
        "storageDataPath": [layout.VICTORIALOGS_DATA],
        "httpListenAddr": [f":{layout.VICTORIALOGS_PORT}"],
        "retentionPeriod": [loki.audit_retention(settings)],
        "loggerLevel": ["WARN"],
    }
    hours = int(parsed["retentionPeriod"][0].rstrip("h"))
    assert hours >= settings.security.audit.retention_days * 24
    assert hours >= int(settings.monitoring.logs.retention.rstrip("h"))


def test_collector_flags_pair_each_source_with_its_fields() -> None:
    parsed = victorialogs.flags(victorialogs.collector_args("ci"))
    sources = dict(zip(parsed["fileCollector.glob"],
                       [json.loads(f) for f in parsed["fileCollector.extraFields"]], strict=True))
    assert sources == {
        f"{layout.DOCKER_CONTAINERS_DIR}/*/*-json.log": {"job": "containers", "stack": "ci"},
        f"{AUDIT_DIR}/{AUDIT_FILE}": {"job": "audit"},
    }
    assert parsed["remoteWrite.url"] == [
        f"http://{layout.ALIASES['victorialogs']}:{layout.VICTORIALOGS_PORT}{victorialogs.INSERT_PATH}"]
    assert parsed["tmpDataPath"] == [layout.VLAGENT_DATA]
    assert parsed["httpListenAddr"] == [f":{layout.VLAGENT_PORT}"]
    assert parsed["fileCollector.streamFields"][0].split(",") == list(victorialogs.STREAM_FIELDS)
    assert (parsed["fileCollector.msgField"], parsed["fileCollector.timeField"]) == (["log"], ["time"])
    assert parsed["fileCollector.hostnameField"] == [""]


def test_collector_without_an_audit_volume_ships_only_the_containers() -> None:
    parsed = victorialogs.flags(victorialogs.collector_args("ci", audit=False))
    assert parsed["fileCollector.glob"] == [f"{layout.DOCKER_CONTAINERS_DIR}/*/*-json.log"]
    assert len(parsed["fileCollector.extraFields"]) == 1


def test_the_audit_labels_and_time_are_fields_of_a_real_record(tmp_path: Path) -> None:
    """Stream fields `operation`/`result` and the time field exist in what the writer writes,
    and the record has no `stack` clash: the audit source adds only `job`."""
    Auditor("ci", FileSink(str(tmp_path / AUDIT_FILE)), actor="a").record("gate", "refused", 3, to="green")
    record = parse((tmp_path / AUDIT_FILE).read_text().splitlines()[0])
    parsed = victorialogs.flags(victorialogs.collector_args("ci"))
    assert {"operation", "result", "stack"} <= set(record) & set(victorialogs.STREAM_FIELDS)
    assert parsed["fileCollector.timeField"][0] in record
    audit_fields = json.loads(parsed["fileCollector.extraFields"][1])
    assert not set(audit_fields) & set(record)


def test_flags_parser_refuses_a_bare_word() -> None:
    with pytest.raises(ValueError, match="not a -name=value flag"):
        victorialogs.flags(["-a=1", "b"])


# ------------------------------------------------------------------ containers


def test_ci_renders_victorialogs_and_vlagent_hardened() -> None:
    services = _by_service(rendered("ci"))
    assert "loki" not in services
    store, collector = services["victorialogs"], services["log-collector"]
    for inputs in (store, collector):
        assert inputs["readOnly"] is True and not inputs.get("uploads")
        assert inputs["capabilities"] == {"drops": ["ALL"]}
        assert inputs["securityOpts"] == ["no-new-privileges:true"]
        assert inputs["memory"] > 0 and float(inputs["cpus"]) > 0
        assert inputs["healthcheck"]["tests"][0] in ("CMD", "CMD-SHELL")
    assert store["image"] == "paper-trading-ci/victoria-logs:1.52.2" and store["user"] == "65534:65534"
    assert victorialogs.flags(store["command"]) == victorialogs.flags(
        victorialogs.server_args(_settings("ci")))
    assert store["volumes"] == [
        {"volumeName": f"{CI_PREFIX}-logs-data", "containerPath": layout.VICTORIALOGS_DATA}]
    assert store["ports"] == [{"internal": layout.VICTORIALOGS_PORT, "external": 23100, "ip": "127.0.0.1",
                               "protocol": "tcp"}]
    assert [(n["name"], n["aliases"]) for n in store["networksAdvanced"]] == [
        (f"{CI_PREFIX}-monitoring", ["victorialogs"])]

    assert collector["image"] == "paper-trading-ci/vlagent:1.52.2" and collector["user"] == "0:0"
    assert [(n["name"], n["aliases"]) for n in collector["networksAdvanced"]] == [
        (f"{CI_PREFIX}-monitoring", [layout.COLLECTOR_ALIASES["victorialogs"]])]
    assert collector["volumes"] == [
        {"containerPath": layout.VLAGENT_DATA},
        {"hostPath": layout.DOCKER_CONTAINERS_DIR, "containerPath": layout.DOCKER_CONTAINERS_DIR,
         "readOnly": True},
        {"volumeName": f"{CI_PREFIX}-audit-data", "containerPath": AUDIT_DIR, "readOnly": True},
    ]
    assert not collector.get("ports")
    check = collector["healthcheck"]["tests"]
    assert check[0] == "CMD-SHELL" and f"{layout.DOCKER_CONTAINERS_DIR}/*/*-json.log" in check[1]


def test_prometheus_scrapes_the_store_and_the_collector() -> None:
    graph = rendered("ci")
    [text] = [c for k, c in graph.files().items() if k.endswith(layout.PROMETHEUS_CONFIG)]
    jobs = {j["job_name"]: j for j in yaml.safe_load(text)["scrape_configs"]}
    assert not {"loki", "promtail"} & set(jobs)
    assert jobs["victorialogs"]["static_configs"] == [
        {"targets": [f"victorialogs:{layout.VICTORIALOGS_PORT}"]}]
    assert jobs["vlagent"]["static_configs"] == [{"targets": [f"vlagent:{layout.VLAGENT_PORT}"]}]


def test_grafana_reads_logs_from_the_chosen_store() -> None:
    graph = _dev_on_victorialogs()
    services = _by_service(graph)
    assert "loki" not in services and "victorialogs" in services
    files = graph.files()
    [sources] = [c for k, c in files.items() if k.endswith(layout.GRAFANA_DATASOURCES)]
    by_uid = {d["uid"]: d for d in yaml.safe_load(sources)["datasources"]}
    assert layout.LOKI_UID not in by_uid
    assert by_uid[layout.VICTORIALOGS_UID]["type"] == grafana.VICTORIALOGS_PLUGIN
    assert by_uid[layout.VICTORIALOGS_UID]["url"] == f"http://victorialogs:{layout.VICTORIALOGS_PORT}"
    envs = services["grafana"]["envs"]
    assert f"GF_INSTALL_PLUGINS={grafana.VICTORIALOGS_PLUGIN} {grafana.VICTORIALOGS_PLUGIN_VERSION}" in envs
    # Every logs panel queries the store that exists.
    boards = [json.loads(c) for k, c in files.items() if k.startswith("paper-trading-dev-grafana")
              and k.endswith(".json")]
    panels = [p for b in boards for p in b["panels"] if p["type"] == "logs"]
    assert panels and all(p["datasource"] == grafana.VICTORIALOGS for p in panels)
    assert {t["expr"] for p in panels for t in p["targets"]} == {victorialogs.ACCESS_LOG_QUERY}


def test_loki_stacks_are_unchanged_by_the_choice() -> None:
    services = _by_service(rendered("prod"))
    assert "victorialogs" not in services
    assert services["log-collector"]["image"].startswith("grafana/promtail")
    envs = services["grafana"]["envs"]
    assert not any(e.startswith("GF_INSTALL_PLUGINS=") for e in envs)
