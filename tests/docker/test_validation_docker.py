"""The gate and the CLI against the real proxy config (generated nginx.conf) and reference-app containers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import require_docker
from tests.support.fidelity_report import assert_failed_checks, assert_failed_exactly
from tests.support.validation_cli import run_cli

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def env() -> Iterator[Any]:
    require_docker()
    from tests.support.docker_env import docker_env

    with docker_env() as running:
        if not running.app_image:
            pytest.fail("the reference app image was not built")
        yield running


def set_faults(env: Any, color: str, *faults: str) -> None:
    """Flip faults from inside the app container (the admin endpoint trusts loopback only)."""
    container = next(c for c in env.containers if c.name.endswith(f"-app-{color}-1"))
    code = (
        "import json,urllib.request as u;"
        f"u.urlopen(u.Request('http://127.0.0.1:3000/admin/faults',data=json.dumps({{'faults':{list(faults)!r}}})"
        ".encode(),method='POST'),timeout=5)"
    )
    result = container.exec_run(["python3", "-c", code])
    assert result.exit_code == 0, result.output


def gate_props(env: Any, color: str) -> dict[str, Any]:
    burst = env.settings.proxy.auth_rate_limit.burst
    return {
        "candidateColor": color,
        "previewUrl": env.preview_url,
        "image": env.app_image,
        "replicas": 1.0,
        "options": {"rate_limit_burst": burst, "check_timeout": 5, "timeout": 20},
        "enabled": True,
    }


@pytest.mark.parametrize("color", ["blue", "green"])
def test_gate_approves_each_healthy_color_through_the_preview_listener(env: Any, color: str) -> None:
    from release.gate import PromotionGateProvider

    outs = PromotionGateProvider().create(gate_props(env, color)).outs
    assert outs is not None and outs["approvedColor"] == color
    assert outs["report"]["passed"] >= 15, outs["report"]


def test_gate_refuses_a_faulty_candidate_and_names_the_check(env: Any) -> None:
    from release.gate import PromotionGateProvider
    from validation.errors import DeploymentError

    set_faults(env, "green", "paper_mode_off")
    try:
        with pytest.raises(DeploymentError) as caught:
            PromotionGateProvider().create(gate_props(env, "green"))
        # paper mode off shows in /metrics too: safety.metrics is implied, nothing else fails.
        assert_failed_checks(caught.value, {"safety.paper_trading_mode", "safety.metrics"})
        # The other color is unaffected: the header picks the candidate.
        assert PromotionGateProvider().create(gate_props(env, "blue")).outs["approvedColor"] == "blue"  # type: ignore[index]
    finally:
        set_faults(env, "green")


def test_cli_through_the_proxy(env: Any, tmp_path: Any) -> None:
    report = tmp_path / "r.json"
    burst = str(env.settings.proxy.auth_rate_limit.burst)
    result = run_cli(
        "--base-url",
        env.preview_url,
        "--color",
        "blue",
        "--report",
        str(report),
        env={"VALIDATION_RATE_LIMIT_BURST": burst},
    )
    assert result.returncode == 0, result.stdout
    assert_failed_exactly(json.loads(report.read_text()), set())
    checks = {c["name"]: c["status"] for c in json.loads(report.read_text())["checks"]}
    for name in (
        "security.headers",
        "security.rate_limit",
        "security.sql_injection",
        "safety.deployment_color",
        "safety.metrics",
    ):
        assert checks[name] == "passed", (name, result.stdout)
