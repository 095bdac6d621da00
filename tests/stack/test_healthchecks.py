"""Every rendered container has a healthcheck, or a stated reason not to (issue 13, item 6).

The reasons live in one structured place, `stack.monitoring.NO_HEALTHCHECK`
(`{service: reason}`), are listed in docs/monitoring.md, and each exempt container must
still be watched: a Prometheus scrape job targets it and an alert fires on its `up == 0`.
That the checks really run in the images is proven by tests/docker/test_ci_images.py (ci stack,
real Docker: every container healthy by its own check).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from contract import SERVICE_LABEL
from render.monitoring import layout
from stack.monitoring import NO_HEALTHCHECK
from tests.support import rendered

ROOT = Path(__file__).resolve().parents[2]
STACKS = ["prod", "dev", "ci"]


def _service(res: Any) -> str:
    return str(res.label_map[SERVICE_LABEL])


@pytest.mark.parametrize("stack", STACKS)
def test_every_container_has_a_healthcheck_or_a_stated_reason(stack: str) -> None:
    graph = rendered(stack)
    unexplained = {r.inputs["name"]: _service(r) for r in graph.containers
                   if not r.inputs.get("healthcheck") and _service(r) not in NO_HEALTHCHECK}
    assert unexplained == {}
    # An exempt container really has none (the list is not a blanket pass).
    exempt_with_check = {r.inputs["name"] for r in graph.containers
                         if r.inputs.get("healthcheck") and _service(r) in NO_HEALTHCHECK}
    assert exempt_with_check == set()


@pytest.mark.parametrize("stack", STACKS)
def test_every_healthcheck_runs_a_command(stack: str) -> None:
    bad = {}
    for res in rendered(stack).containers:
        check = res.inputs.get("healthcheck")
        if not check:
            continue
        tests = list(check.get("tests") or [])
        if not (len(tests) >= 2 and tests[0] in ("CMD", "CMD-SHELL") and all(str(t).strip() for t in tests)):
            bad[res.inputs["name"]] = tests
        elif int(check.get("retries") or 0) < 1 or not check.get("interval") or not check.get("timeout"):
            bad[res.inputs["name"]] = check
    assert bad == {}


def test_the_exemption_list_is_small_explained_and_current() -> None:
    services = {_service(r) for r in rendered("prod").containers}
    assert set(NO_HEALTHCHECK) <= services, "an exemption names no container"
    assert {s: len(reason) > 40 and "FROM scratch" in reason for s, reason in NO_HEALTHCHECK.items()} == \
        dict.fromkeys(NO_HEALTHCHECK, True)


def test_the_exemptions_are_documented() -> None:
    text = (ROOT / "docs" / "monitoring.md").read_text()
    rows = {m.group(1) for m in re.finditer(r"^\| `([a-z-]+)` \| no healthcheck \|", text, re.M)}
    assert rows == set(NO_HEALTHCHECK)


def test_exempt_containers_are_watched_by_prometheus_up() -> None:
    graph = rendered("prod")
    files = graph.files()
    config = yaml.safe_load(files[f"paper-trading-prometheus{layout.PROMETHEUS_CONFIG}"])
    alerts = yaml.safe_load(files[f"paper-trading-prometheus{layout.ALERT_RULES}"])
    targets = {t: job["job_name"] for job in config["scrape_configs"]
               for group in job.get("static_configs") or [] for t in group["targets"]}
    up_alerts = {rule["alert"]: rule["expr"].strip() for group in alerts["groups"] for rule in group["rules"]
                 if "alert" in rule and re.fullmatch(r'up(\{[^}]*\})? == 0', rule["expr"].strip())}
    for res in graph.containers:
        service = _service(res)
        if service not in NO_HEALTHCHECK:
            continue
        port = next(int(m.group(1)) for arg in res.inputs["command"]
                    if (m := re.fullmatch(r"--web\.listen-address=[^:]*:([0-9]+)", str(arg))))
        job = targets.get(f"{layout.ALIASES[service]}:{port}")
        assert job is not None, f"{service}: no scrape job targets it"
        covering = [name for name, expr in up_alerts.items()
                    if expr == "up == 0" or re.search(rf'job="{re.escape(job)}"', expr)]
        assert covering, f"{service} (job {job}): no alert fires on its up == 0"
