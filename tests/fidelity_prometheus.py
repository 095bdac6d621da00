"""The product's own monitoring config on loopback: rendered prometheus.yml, rules, alertmanager.yml.

The files are the ones the Pulumi program uploads into the Prometheus and Alertmanager
containers (`tools.render.evaluate("prod").files()`); the rule files are used verbatim.
`prometheus_yml` changes only what cannot work outside the containers, each change asserted
to have applied:

- `global.scrape_interval` / `evaluation_interval` -> 1s (a test cannot wait 15 s per step);
- the `app` job is kept with its labels (color, instance), each rendered target
  `paper-trading-app-<color>-<n>:<port>` mapped to a loopback address the test names (or
  dropped, also by name); every rendered target must be mapped, so a new replica or a
  renamed target fails here;
- the other jobs are dropped: they scrape containers (exporters, blackbox, the proxy) that
  do not exist on loopback and would only show as down targets;
- the Alertmanager target `alertmanager:9093` -> the test's Alertmanager (or no alerting).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.fakes.validation_servers import free_port, wait_port
from tests.fidelity_nginx import rendered_file
from tests.support import require_tool, stop_process

PROM_DIR = "paper-trading-prometheus/etc/paper-trading/prometheus"
PROMETHEUS_YML = f"{PROM_DIR}/prometheus.yml"
ALERTMANAGER_YML = "paper-trading-alertmanager/etc/paper-trading/alertmanager/alertmanager.yml"
INTERVAL_S = 1.0


def rendered_prometheus_files() -> dict[str, str]:
    """prometheus.yml and the rule files it names, by file name, as rendered for prod."""
    config = yaml.safe_load(rendered_file(PROMETHEUS_YML))
    names = config.get("rule_files")
    assert names, "the rendered prometheus.yml names no rule files"
    files = {"prometheus.yml": rendered_file(PROMETHEUS_YML)}
    for name in names:
        assert "/" not in name, f"rule file {name!r} is not beside prometheus.yml"
        files[name] = rendered_file(f"{PROM_DIR}/{name}")
    return files


def app_targets() -> list[str]:
    """The rendered `app` job's targets (one per replica of each color)."""
    config = yaml.safe_load(rendered_file(PROMETHEUS_YML))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "app"]
    return [t for sc in job["static_configs"] for t in sc["targets"]]


def prometheus_yml(targets: Mapping[str, str | None], alertmanager: str | None = None) -> str:
    """The rendered prometheus.yml, adapted to loopback (see the module docstring)."""
    config: dict[str, Any] = yaml.safe_load(rendered_file(PROMETHEUS_YML))
    for key in ("scrape_interval", "evaluation_interval"):
        assert key in config["global"], f"rendered global has no {key}"
        config["global"][key] = f"{INTERVAL_S:g}s"
    jobs = [j for j in config["scrape_configs"] if j["job_name"] == "app"]
    assert len(jobs) == 1, "the rendered prometheus.yml has no (single) app job"
    job = jobs[0]
    kept = []
    for static in job["static_configs"]:
        mapped = []
        for target in static["targets"]:
            assert target in targets, f"rendered app target {target!r} is not mapped to loopback"
            if targets[target] is not None:
                mapped.append(targets[target])
        if mapped:
            kept.append({**static, "targets": mapped})
    unknown = set(targets) - {t for s in job["static_configs"] for t in s["targets"]}
    assert not unknown, f"mapped targets the program does not render: {sorted(unknown)}"
    assert kept, "no app target left"
    config["scrape_configs"] = [{**job, "static_configs": kept}]
    managers = config["alerting"]["alertmanagers"]
    assert [t for m in managers for s in m["static_configs"] for t in s["targets"]] == ["alertmanager:9093"]
    if alertmanager is None:
        del config["alerting"]
    else:
        managers[0]["static_configs"][0]["targets"] = [alertmanager.removeprefix("http://")]
    return yaml.safe_dump(config, sort_keys=False)


def with_rule(rules_yml: str, group: str, rule: dict[str, Any]) -> str:
    """A rule file with one more group (a fault the test injects into the product's rules)."""
    doc = yaml.safe_load(rules_yml)
    doc["groups"].append({"name": group, "rules": [rule]})
    return yaml.safe_dump(doc, sort_keys=False)


def _ready(url: str, path: str, key: str) -> bool:
    try:
        data = httpx.get(f"{url}{path}", timeout=2).json()["data"]
    except (httpx.HTTPError, KeyError, ValueError):
        return False
    items = data[key] if key != "groups" else [r for g in data["groups"] for r in g["rules"]]
    return bool(items) and all(item.get("health") != "unknown" for item in items)


def wait_evaluated(url: str, timeout: float = 30) -> None:
    """Until every target was scraped and every rule evaluated after that."""
    deadline = time.monotonic() + timeout
    while not _ready(url, "/api/v1/targets", "activeTargets"):
        assert time.monotonic() < deadline, f"Prometheus at {url} did not scrape its targets in {timeout}s"
        time.sleep(0.1)
    time.sleep(2 * INTERVAL_S + 0.2)  # two rule evaluations on the scraped data
    while not _ready(url, "/api/v1/rules", "groups"):
        assert time.monotonic() < deadline, f"Prometheus at {url} did not evaluate its rules in {timeout}s"
        time.sleep(0.1)


@contextmanager
def prometheus(
    tmp: Path,
    targets: Mapping[str, str | None],
    alertmanager: str | None = None,
    overrides: Mapping[str, str] | None = None,
    wait: bool = True,
) -> Iterator[str]:
    """The real Prometheus with the rendered config and rule files; `overrides` replace a rule file."""
    binary = require_tool("prometheus")
    tmp.mkdir(parents=True, exist_ok=True)
    files = rendered_prometheus_files()
    files["prometheus.yml"] = prometheus_yml(targets, alertmanager)
    for name, text in (overrides or {}).items():
        assert name in files and name != "prometheus.yml", f"{name} is not a rendered rule file"
        files[name] = text
    for name, text in files.items():
        (tmp / name).write_text(text)
    port = free_port()
    log = (tmp / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        try:
            wait_port(port, timeout=20)
        except TimeoutError:
            raise AssertionError((tmp / "prometheus.log").read_text()[-2000:]) from None
        url = f"http://127.0.0.1:{port}"
        if wait:
            wait_evaluated(url)
        yield url
    finally:
        stop_process(proc)
        log.close()


@contextmanager
def alertmanager(tmp: Path) -> Iterator[str]:
    """The real Alertmanager with the rendered alertmanager.yml (its receivers need no network)."""
    binary = require_tool("prometheus-alertmanager")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "alertmanager.yml").write_text(rendered_file(ALERTMANAGER_YML))
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / 'alertmanager.yml'}",
            f"--storage.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, timeout=20)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)

