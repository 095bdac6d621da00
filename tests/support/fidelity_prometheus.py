"""The product's own monitoring config on loopback: rendered prometheus.yml, rules, alertmanager.yml.

The files are the ones the Pulumi program uploads into the Prometheus and Alertmanager
containers (`tools.render.evaluate("prod").files()`); the rule files are used verbatim.
`prometheus_yml` changes only what cannot work outside the containers, each change asserted
to have applied:

- `global.scrape_interval` / `evaluation_interval` -> 1s (a test cannot wait 15 s per step);
- the `app` job is kept with its labels (color, instance): each rendered replica (its
  `instance`, scraped through the proxy's relay `proxy-status:8081/scrape/<replica>/metrics`)
  is mapped to a loopback address the test names (or dropped, also by name), and the relay
  path becomes the path the relay forwards to (`app.health.metrics`); every rendered replica
  must be mapped, so a new replica or a renamed target fails here;
- the other jobs are dropped: they scrape containers (exporters, blackbox, the proxy) that
  do not exist on loopback and would only show as down targets;
- the Alertmanager target `alertmanager:9093` -> the test's Alertmanager (or no alerting),
  its `basic_auth.password_file` -> the rendered password file written to the temp dir.

Alertmanager runs the rendered `alertmanager.yml` and the rendered web config (basic auth,
the bcrypt hash of the rendered password); `alertmanager_password()` is the rendered secret.
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

from tests.support import require_tool, stop_process
from tests.support.fakes.validation_servers import free_port, wait_port
from tests.support.fidelity_nginx import prod_settings, rendered_file

PROM_DIR = "paper-trading-prometheus/etc/paper-trading/prometheus"
PROMETHEUS_YML = f"{PROM_DIR}/prometheus.yml"
ALERTMANAGER = "paper-trading-alertmanager"
ALERTMANAGER_YML = f"{ALERTMANAGER}/etc/paper-trading/alertmanager/alertmanager.yml"
INTERVAL_S = 1.0


def rendered_secret(container: str, path: str) -> str:
    """A secret file the prod program uploads into `container`, in clear (masked in `files()`)."""
    from tests.support import rendered
    from tools.render import SECRET_SIG

    graph = rendered("prod")
    (res,) = [r for r in graph.containers if r.inputs.get("name") == container]
    pairs = zip(res.inputs.get("uploads") or [], res.wire.get("uploads") or [], strict=True)
    found = [(u, w) for u, w in pairs if u["file"] == path]
    assert len(found) == 1, f"the program uploads no (single) {path} into {container}"
    upload, wire = found[0]
    assert SECRET_SIG in str(wire), f"{container}:{path} is not uploaded as a secret"
    return str(upload["content"])


def alertmanager_password() -> str:
    """The rendered Alertmanager password (Prometheus's password file)."""
    from render.monitoring import layout

    return rendered_secret("paper-trading-prometheus", layout.ALERTMANAGER_PASSWORD_FILE)


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
    """The rendered `app` job's replicas (their `instance` labels, one per replica of each color)."""
    config = yaml.safe_load(rendered_file(PROMETHEUS_YML))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "app"]
    return [sc["labels"]["instance"] for sc in job["static_configs"]]


def _relayed(static: dict[str, Any], loopback: str) -> dict[str, Any]:
    """A rendered relay target group -> the replica on loopback, at the path the relay forwards to."""
    from render.monitoring import layout

    instance = static["labels"]["instance"]
    assert static["targets"] == [layout.PROXY_STATUS_ADDRESS], static
    assert static["labels"]["__metrics_path__"] == layout.scrape_path(instance, "metrics"), static
    metrics = prod_settings().app.health.metrics
    return {**static, "targets": [loopback], "labels": {**static["labels"], "__metrics_path__": metrics}}


def prometheus_yml(
    targets: Mapping[str, str | None], alertmanager: str | None = None, password_file: Path | None = None
) -> str:
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
        instance = static["labels"]["instance"]
        assert instance in targets, f"rendered app replica {instance!r} is not mapped to loopback"
        if targets[instance] is not None:
            kept.append(_relayed(static, str(targets[instance])))
    unknown = set(targets) - {s["labels"]["instance"] for s in job["static_configs"]}
    assert not unknown, f"mapped replicas the program does not render: {sorted(unknown)}"
    assert kept, "no app target left"
    config["scrape_configs"] = [{**job, "static_configs": kept}]
    managers = config["alerting"]["alertmanagers"]
    assert [t for m in managers for s in m["static_configs"] for t in s["targets"]] == ["alertmanager:9093"]
    if alertmanager is None:
        del config["alerting"]
    else:
        from render.monitoring import layout

        managers[0]["static_configs"][0]["targets"] = [alertmanager.removeprefix("http://")]
        assert managers[0]["basic_auth"]["password_file"] == layout.ALERTMANAGER_PASSWORD_FILE
        assert password_file is not None, "the rendered alerting needs its password file"
        managers[0]["basic_auth"]["password_file"] = str(password_file)
    return str(yaml.safe_dump(config, sort_keys=False))


def with_rule(rules_yml: str, group: str, rule: dict[str, Any]) -> str:
    """A rule file with one more group (a fault the test injects into the product's rules)."""
    doc = yaml.safe_load(rules_yml)
    doc["groups"].append({"name": group, "rules": [rule]})
    return str(yaml.safe_dump(doc, sort_keys=False))


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
    password_file = tmp / "alertmanager_password"
    password_file.write_text(alertmanager_password())
    files["prometheus.yml"] = prometheus_yml(targets, alertmanager, password_file)
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
def alertmanager(tmp: Path, auth: bool = True) -> Iterator[str]:
    """The real Alertmanager with the rendered alertmanager.yml (its receivers need no network) and
    the rendered web config (basic auth)."""
    from render.monitoring import layout
    from tests.support import rendered

    binary = require_tool("prometheus-alertmanager")
    (am,) = [r for r in rendered("prod").containers if r.inputs.get("name") == ALERTMANAGER]
    # The rendered container starts Alertmanager with the web config (basic auth) that is run here.
    assert f"--web.config.file={layout.ALERTMANAGER_WEB_CONFIG}" in am.inputs["command"]
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "alertmanager.yml").write_text(rendered_file(ALERTMANAGER_YML))
    (tmp / "web.yml").write_text(rendered_secret(ALERTMANAGER, layout.ALERTMANAGER_WEB_CONFIG))
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / 'alertmanager.yml'}",
            f"--storage.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            *([f"--web.config.file={tmp / 'web.yml'}"] if auth else []),
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

