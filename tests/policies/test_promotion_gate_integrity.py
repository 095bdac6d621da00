"""The promotion gate cannot be switched off: program topology, config, runtime and policy.

Each layer is tested on its own so that removing any one of them turns a test red:
- topology: the routing switch's live color is computed from the gate (data flow and
  property dependencies), never from the config;
- the gate as built from every committed stack is enabled and skips no safety/health check;
- the config refuses a disabled gate and protected skips, naming the key;
- the mandatory `promotion-gated` stack policy refuses mutated graphs, failing closed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from policies.check import check_graph
from policies.harness import Analyzer
from policies.rules import STACK_POLICIES
from release.gate import ALWAYS_REQUIRED, GATE_KIND, PromotionGateArgs, PromotionGateProvider, refusal
from release.routing.base import SWITCH_KIND
from settings import SKIPPABLE_CHECKS, ConfigError, Settings, parse_settings
from tests.support.gate_mutants import MUTANTS, POLICY
from tools.render import ROOT, UNKNOWN, Graph, Resource, evaluate, stack_config, stack_names
from validation.runner import CHECKS

#: Every committed stack, the swarm one included: the gate and switch are wired the same.
STACKS = stack_names(target=None)


def _settings(stack: str, **overrides: Any) -> Settings:
    config, secret_keys = stack_config(stack)
    raw = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("paper-trading:")}
    raw.update({k: json.dumps(v) for k, v in overrides.items()})
    return parse_settings(raw, frozenset(k.split(":", 1)[1] for k in secret_keys))


def _registry() -> dict[str, str]:
    return {check.name: check.category.value for check in CHECKS}


def _gated_violations(graph: Graph | list[Resource]) -> list[str]:
    resources = graph.resources if isinstance(graph, Graph) else graph
    return [v.message for v in Analyzer(STACK_POLICIES).analyze_stack(resources) if v.policy == POLICY]


# --------------------------------------------------------------------------- topology


@pytest.mark.parametrize("stack", STACKS)
def test_routing_live_color_is_computed_from_the_gate(stack: str) -> None:
    graph = evaluate(stack)
    gate, switch = graph.by_name("promotion-gate"), graph.by_name("routing-switch")
    deps = switch.options["propertyDependencies"]
    assert deps["liveColor"] == [gate.urn]
    assert deps["previewColor"] == [gate.urn]
    assert gate.urn in switch.options["dependsOn"]
    # The gate runs only once the proxy and every app container of both colors exist.
    needed = {c.urn for c in graph.containers
              if (c.label_map.get("paper-trading.role") == "app"
                  and "paper-trading.carrier-for" not in c.label_map)
              or c.inputs.get("name", "").endswith("-proxy")}
    # On Swarm: both colors' services and the proxy's.
    needed |= {service.urn for service in graph.of_type("docker:index/service:Service")}
    assert len(needed) >= 3
    assert needed <= set(gate.options["dependsOn"])


def test_routing_follows_the_gates_verdict_not_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gate that approves another color than the config asks moves traffic to *its* color."""
    monkeypatch.setattr(PromotionGateProvider, "render_outputs",
                        lambda self, inputs: {"approvedColor": "green"})
    graph = evaluate("prod")
    assert graph.by_name("promotion-gate").inputs["candidateColor"] == "blue"
    assert graph.by_name("routing-switch").inputs["liveColor"] == "green"
    assert graph.outputs["activeColor"] == "green"


def test_no_approval_means_no_live_color(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gate that approves nothing leaves routing and activeColor without a color from the config."""
    monkeypatch.setattr(PromotionGateProvider, "render_outputs", lambda self, inputs: {})
    graph = evaluate("prod")
    assert graph.by_name("routing-switch").inputs.get("liveColor") in (None, UNKNOWN)
    assert graph.outputs.get("activeColor") in (None, UNKNOWN)


# --------------------------------------------------------------------------- the gate per stack


@pytest.mark.parametrize("stack", STACKS)
def test_gate_from_each_committed_stack_is_enabled_and_runs_every_safety_check(stack: str) -> None:
    settings = _settings(stack)
    args = PromotionGateArgs.from_settings(settings)
    assert args.enabled is True
    assert args.candidate_color == settings.deployment.active_color
    skipped = set(args.options["skip"])
    assert not {n for n in skipped if n.startswith(("safety.", "health."))}
    props = {"enabled": args.enabled, "options": dict(args.options)}
    assert refusal(props) is None
    rendered_gate = evaluate(stack).by_name("promotion-gate").inputs
    assert rendered_gate["enabled"] is True and rendered_gate["kind"] == GATE_KIND
    assert not [n for n in rendered_gate["options"]["skip"] if n.startswith(("safety.", "health."))]


def test_required_checks_are_every_registered_safety_and_health_check() -> None:
    registry = _registry()
    protected = {name for name, category in registry.items() if category in ("safety", "health")}
    assert set(ALWAYS_REQUIRED) <= set(registry)
    # exchange_keys is required whenever keys are given (it skips itself without them).
    assert protected - set(ALWAYS_REQUIRED) == {"safety.exchange_keys"}


def test_skippable_checks_exist_and_exclude_safety_and_health() -> None:
    registry = _registry()
    assert set(SKIPPABLE_CHECKS) <= set(registry)
    assert not [n for n in SKIPPABLE_CHECKS if registry[n] in ("safety", "health")]


# --------------------------------------------------------------------------- config refusals


def _protected_checks() -> list[str]:
    return sorted(n for n, c in _registry().items() if c in ("safety", "health"))


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("validation", [{"enabled": False}, {"enabled": "false"}, {"enabled": None}],
                         ids=["false", "string", "null"])
def test_config_refuses_a_disabled_gate(stack: str, validation: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(stack, validation=validation)
    assert [p for p in caught.value.problems if p.startswith("paper-trading:validation.enabled:")]


@pytest.mark.parametrize("check", _protected_checks())
def test_config_refuses_skipping_a_safety_or_health_check(check: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings("prod", validation={"skip": [check]})
    (problem,) = caught.value.problems
    assert problem.startswith("paper-trading:validation.skip:") and repr(check) in problem


def test_config_refuses_skipping_every_safety_check_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        _settings("prod", validation={"skip": [n for n in _protected_checks() if n.startswith("safety.")]})
    assert all(p.startswith("paper-trading:validation.skip:") for p in caught.value.problems)


@pytest.mark.parametrize(("stack", "check", "allowed"), [
    ("prod", "security.certificate", False),  # TLS applies to a TLS stack
    ("dev", "security.certificate", True),  # ... and cannot apply to plain HTTP
    ("prod", "security.headers", False),  # always applies
    ("dev", "monitoring.alertmanager", False),  # alertmanager is enabled in dev
    ("prod", "performance.p95_latency", True),  # advisory: never blocks anyway
    ("prod", "security.certficate", False),  # a typo is an error, not a silent no-op
])
def test_config_allows_skipping_only_checks_that_cannot_apply(stack: str, check: str, allowed: bool) -> None:
    if allowed:
        assert _settings(stack, validation={"skip": [check]}).validation.skip == (check,)
        return
    with pytest.raises(ConfigError) as caught:
        _settings(stack, validation={"skip": [check]})
    assert caught.value.problems[0].startswith("paper-trading:validation.skip:")


# --------------------------------------------------------------------------- the stack policy


def test_committed_stacks_pass_promotion_gated() -> None:
    for stack in STACKS:
        assert _gated_violations(evaluate(stack)) == [], stack








@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_promotion_gated_refuses_each_mutated_graph(mutant: str) -> None:
    graph = evaluate("prod")
    violations = [v for v in check_graph(Graph(graph.stack, MUTANTS[mutant](graph), graph.outputs))
                  if v.mandatory]
    assert {v.policy for v in violations} == {POLICY}, [v.line() for v in violations]


def test_kinds_are_the_ones_the_components_set() -> None:
    graph = evaluate("prod")
    assert graph.by_name("promotion-gate").inputs["kind"] == GATE_KIND
    assert graph.by_name("routing-switch").inputs["kind"] == SWITCH_KIND


def _program_with(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the real program with one line changed (the change must apply exactly once)."""
    source = (ROOT / "__main__.py").read_text()
    assert source.count(old) == 1, f"the program no longer contains {old!r}"
    (tmp_path / "__main__.py").write_text("import dataclasses\n" + source.replace(old, new))
    shutil.copy(ROOT / "Pulumi.prod.yaml", tmp_path / "Pulumi.prod.yaml")
    return tmp_path


GATE_ARGS = "PromotionGateArgs.from_settings(settings),"


@pytest.mark.parametrize(("old", "new"), [
    ("live_color=gate.approved_color,", "live_color=settings.deployment.active_color,"),
    (GATE_ARGS, f"dataclasses.replace({GATE_ARGS[:-1]}, enabled=False),"),
    (GATE_ARGS, f"dataclasses.replace({GATE_ARGS[:-1]}, "
                f"options={{**{GATE_ARGS[:-1]}.options, 'skip': ['safety.metrics']}}),"),
], ids=["routing-from-config", "gate-disabled", "gate-skips-safety"])
def test_the_program_with_its_gate_bypassed_is_refused(tmp_path: Path, old: str, new: str) -> None:
    """The holes of issue 11, reintroduced into a copy of `__main__.py`: the pack refuses each."""
    graph = evaluate("prod", root=_program_with(tmp_path, old, new))
    mandatory = {v.policy for v in check_graph(graph) if v.mandatory}
    assert mandatory == {POLICY}


# --------------------------------------------------------------------------- the gate at run time


@pytest.mark.parametrize("status", ["missing", "skipped"])
@pytest.mark.parametrize("check", ["safety.metrics", "health.ready", "safety.paper_trading_mode"])
def test_gate_refuses_when_a_required_check_did_not_run_and_pass(
    monkeypatch: pytest.MonkeyPatch, check: str, status: str
) -> None:
    """A required check that vanished from the report, or skipped itself, blocks the promotion."""
    import release.gate as gate
    from tests.support.fakes.validation_servers import reference_app
    from validation.errors import DeploymentError

    real = gate._run_report

    def tampered(props: Any, expect_work_role: str | None = None) -> Any:
        report = real(props, expect_work_role)
        if status == "missing":
            checks = [c for c in report.checks if c.name != check]
        else:
            checks = [c.model_copy(update={"status": "skipped"}) if c.name == check else c
                      for c in report.checks]
        return report.model_copy(update={"checks": checks})

    monkeypatch.setattr(gate, "_run_report", tampered)
    with reference_app(color="green") as app:
        props = {"candidateColor": "green", "previewUrl": app.url, "image": "app:1", "replicas": 1.0,
                 # Generous bounds: only the tampered check may fail, also on a loaded machine
                 # (with 3 s a slow health answer failed more checks than the one under test).
                 "options": {"check_timeout": 15, "timeout": 60, "retries": 2,
                             "latency_threshold_ms": 10_000},
                 "enabled": True, "exchanges": None}
        with pytest.raises(DeploymentError) as caught:
            PromotionGateProvider().create(props)
    assert caught.value.failed_checks == (check,)


@pytest.mark.parametrize(
    ("method", "approved_before", "spent", "expected"),
    [("create", None, True, "standby"), ("update", "blue", False, "standby"),
     ("update", "green", False, None), ("update", "green", True, "standby")],
)
def test_gate_expects_a_moving_candidate_to_be_standby(
    monkeypatch: pytest.MonkeyPatch, method: str, approved_before: str | None, spent: bool,
    expected: str | None,
) -> None:
    """A candidate that is not the color approved last must do no background work (issue 15):
    the gate tells `safety.background_work` so instead of trusting the app's own `liveColor`.
    Nor is the color approved last when its switch failed (`spent`: the proxy does not serve
    it; read from a real proxy in tests/docker/test_release_guard_docker.py)."""
    import release.gate as gate

    seen: list[str | None] = []
    monkeypatch.setattr(gate, "spent", lambda _olds, _news, client=None: spent)

    def verdict(props: Any, expect_work_role: str | None = None) -> dict[str, Any]:
        seen.append(expect_work_role)
        return {"approvedColor": props["candidateColor"]}

    monkeypatch.setattr(gate, "_verdict", verdict)
    provider = gate.PromotionGateProvider()
    news = {"candidateColor": "green", "previewUrl": "http://127.0.0.1:1", "options": {}}
    if method == "create":
        provider.create(news)
    else:
        provider.update("gate", {"approvedColor": approved_before}, news)
    assert seen == [expected]
