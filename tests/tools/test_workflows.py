"""The GitHub workflows deploy only what the tests and the policy pack passed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

WORKFLOWS = Path(__file__).resolve().parents[2] / ".github" / "workflows"


def _load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return document


def _runs(job: dict[str, Any]) -> list[str]:
    return [str(step["run"]) for step in job.get("steps", []) if "run" in step]


def test_deploy_runs_the_test_command_before_pulumi_up() -> None:
    jobs = _load("main.yml")["jobs"]
    (up_name,) = [name for name, job in jobs.items() if any("pulumi up" in r for r in _runs(job))]
    needs = jobs[up_name].get("needs")
    needed = [needs] if isinstance(needs, str) else list(needs or [])
    assert needed, "the deploy job must need the tests job"
    assert any(any(".ci/run" in r for r in _runs(jobs[name])) for name in needed)


def test_deploy_keeps_the_preview_so_stack_policies_run_before_any_change() -> None:
    ups = [r for job in _load("main.yml")["jobs"].values() for r in _runs(job) if "pulumi up" in r]
    assert ups and all("--policy-pack policies" in r and "--skip-preview" not in r for r in ups)


def test_pull_requests_run_the_tests_and_the_policy_preview() -> None:
    jobs = _load("pull-request.yml")["jobs"]
    runs = [r for job in jobs.values() for r in _runs(job)]
    assert any(".ci/run" in r for r in runs)
    assert any("pulumi preview" in r and "--policy-pack policies" in r for r in runs)
