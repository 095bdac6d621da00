"""The policy pack against the real program's graphs and mutants of them.

Every case runs the pack the way the engine does (props deserialized from the wire form and
wrapped in pulumi_policy's unknown-checking proxy; see policies/harness.py). Each mutant is
one way to break one rule, applied to a resource of the real rendered graph; it must be
caught by the named policy at mandatory level. A meta-test replaces each mandatory policy's
validator with a no-op and shows that some mutant then passes the whole pack.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import replace
from typing import Any

import pytest
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy

from policies import hardening, trading
from policies.check import check_graph, effective_config
from policies.harness import Analyzer
from policies.rules import BY_NAME, POLICIES
from tests.support import rendered
from tests.support.policy_mutants import (
    APP_IMAGE,
    DROP,
    KEY,
    MEM,
    MNT,
    MUTANTS,
    PTM,
    Mutant,
    Options,
    Wire,
    _labels,
    analyzer,
    app,
    app_carrier,
    append,
    backend,
    both,
    failures,
    mutated,
    put,
    set_label,
    svc,
    violations_of,
)
from tools.render import UNKNOWN, Graph, Resource, stack_names

CONTAINER = "docker:index/container:Container"
MANDATORY_NAMES = [p.name for p in POLICIES if p.enforcement_level == EnforcementLevel.MANDATORY]
ADVISORY_NAMES = [p.name for p in POLICIES if p.enforcement_level == EnforcementLevel.ADVISORY]


# --------------------------------------------------------------------------- the real graphs pass


@pytest.mark.parametrize("stack", stack_names())
def test_real_graph_has_no_mandatory_violation(stack: str) -> None:
    graph = rendered(stack)
    assert graph.containers, "the program registers no containers"
    found = check_graph(graph)
    assert [v.line() for v in found if v.mandatory] == []


@pytest.mark.parametrize("stack", ["prod", "dev"])
@pytest.mark.parametrize("policy", MANDATORY_NAMES)
def test_each_policy_passes_the_real_graph(stack: str, policy: str) -> None:
    graph = rendered(stack)
    found = [v for v in check_graph(graph) if v.policy == policy]
    assert [v.line() for v in found] == []


def test_policies_see_the_app_containers() -> None:
    """Guards against a vacuous pass: the trading rules really apply to the real app containers."""
    graph = rendered("prod")
    apps = [r for r in graph.containers if _labels(r).get("paper-trading.role") == "app"]
    assert len(apps) >= 2
    assert any("BINANCE_PERMISSIONS=READ_ONLY" in (r.inputs.get("envs") or []) for r in apps)


# --------------------------------------------------------------------------- mutants fail


@pytest.mark.parametrize("mutant", MUTANTS, ids=str)
def test_mutant_is_caught_by_its_policy(mutant: Mutant) -> None:
    found = violations_of(mutant)
    level = BY_NAME[mutant.policy].enforcement_level
    assert level is not None
    ours = [v for v in found if v.policy == mutant.policy]
    assert ours, f"{mutant} passed {mutant.policy}; all violations: {[v.line() for v in found]}"
    assert all(v.level == level.value for v in ours)


def test_every_policy_has_mutants() -> None:
    assert {m.policy for m in MUTANTS} == {p.name for p in POLICIES}


def test_no_mutant_slips_through() -> None:
    assert failures() == []


@pytest.mark.parametrize("policy", MANDATORY_NAMES)
def test_deleting_a_policy_check_fails_the_suite(policy: str) -> None:
    """Meta-test: with this policy's validator a no-op, some mutant passes the whole pack."""
    missed = failures(disabled=policy)
    assert missed, f"deleting {policy}'s check changed nothing"
    escaped = [m for m in MUTANTS if m.policy == policy
               and not any(v.mandatory for v in violations_of(m, disabled=policy))]
    assert escaped, f"every {policy} mutant is also caught by another mandatory policy"


# --------------------------------------------------------------------------- unknowns fail closed

UNKNOWN_CASES: list[tuple[str, Callable[[Graph], Resource], str]] = [
    ("paper-trading-mode", app, "envs"),
    ("paper-trading-mode", app, "envs.1"),
    ("paper-trading-mode", app, "labels"),
    ("paper-trading-mode", app, "labels.0.value"),
    ("read-only-exchange-keys", app, "envs"),
    ("read-only-exchange-keys", app, "envs.1"),
    ("read-only-exchange-keys", app_carrier, "uploads.0.file"),
    ("app-containers-labelled", svc("postgres"), "image"),
    ("app-containers-labelled", svc("postgres"), "envs"),
    ("app-containers-labelled", app, "labels"),
    ("container-not-privileged", svc("proxy"), "privileged"),
    ("container-capabilities-dropped", app, "capabilities"),
    ("container-capabilities-dropped", svc("postgres"), "capabilities.adds"),
    ("container-no-host-namespaces", app, "networkMode"),
    ("container-no-host-namespaces", svc("postgres"), "pidMode"),
    ("container-no-sensitive-mounts", svc("proxy"), "mounts"),
    ("container-no-sensitive-mounts", svc("proxy"), "mounts.0.source"),
    ("container-no-sensitive-mounts", app, "volumes"),
    ("container-no-new-privileges", svc("redis"), "securityOpts"),
    ("container-memory-limit", app, "memory"),
    ("container-ports-bound", svc("proxy"), "ports"),
    ("container-ports-bound", svc("proxy"), "ports.0.ip"),
    ("container-image-pinned", svc("proxy"), "image"),
    ("container-user-networks-only", svc("postgres"), "networkMode"),
    ("backend-network-internal", backend, "internal"),
]


@pytest.mark.parametrize(("policy", "select", "path"), UNKNOWN_CASES,
                         ids=[f"{p}:{path}" for p, _, path in UNKNOWN_CASES])
def test_unknown_safety_value_is_a_mandatory_violation(
    policy: str, select: Callable[[Graph], Resource], path: str,
) -> None:
    resource = mutated(select(rendered("prod")), put(path, UNKNOWN))
    found = [v for v in analyzer("prod").analyze(resource) if v.policy == policy]
    assert found, f"unknown {path} passed {policy}"
    assert all(v.mandatory for v in found)
    assert any("known at preview" in v.message for v in found)


def test_unknown_secret_contents_do_not_trip_the_pack() -> None:
    """At preview, generated passwords (upload contents) are unknown: no policy may need them."""
    graph = rendered("prod")
    changed = 0

    def blank(wire: Wire, _: Options) -> None:
        for upload in wire["uploads"]:
            upload["content"] = UNKNOWN

    for res in graph.containers:
        if res.wire.get("uploads"):
            before = {v.line() for v in analyzer("prod").analyze(res)}
            after = {v.line() for v in analyzer("prod").analyze(mutated(res, blank))}
            assert after == before
            assert not any(v.mandatory for v in analyzer("prod").analyze(mutated(res, blank)))
            changed += 1
    assert changed >= 4


def test_without_fail_closed_the_sdk_would_downgrade_an_unknown_to_advisory() -> None:
    """Why the wrapper exists: the same check, unwrapped, lets an unknown env through at preview."""
    bare = ResourceValidationPolicy(
        name="paper-trading-mode", description="bare", validate=trading.check_paper_trading_mode,
        enforcement_level=EnforcementLevel.MANDATORY,
    )
    resource = mutated(app(rendered("prod")), put("envs", UNKNOWN))
    found = Analyzer([bare]).analyze(resource)
    assert found and all(v.level == "advisory" for v in found)
    wrapped = analyzer("prod").analyze(resource)
    assert any(v.policy == "paper-trading-mode" and v.mandatory for v in wrapped)


def test_props_reach_the_policies_wrapped_like_the_runtime() -> None:
    """The args a policy receives: unknown-checking proxies, secrets unwrapped, options from the graph."""
    from collections.abc import Mapping

    from pulumi_policy.proxy import _DictProxy, _ListProxy

    seen: list[Any] = []

    def spy(args: Any, report: Any) -> None:
        if args.resource_type == CONTAINER and args.name == "blue-1-carrier":
            seen.append(args)

    probe = ResourceValidationPolicy(name="probe", description="probe", validate=spy)
    Analyzer([probe]).run(rendered("prod").resources)
    (args,) = seen
    assert isinstance(args.props, _DictProxy) and isinstance(args.props, Mapping)
    assert isinstance(args.props["envs"], _ListProxy)
    assert not isinstance(args.props["envs"], list)
    secret = [u["content"] for u in args.props["uploads"] if u["file"] == KEY]
    assert secret == ["secret:exchanges.binance.apiKey"]
    assert args.props["memory"] == 512.0 and args.props["start"] is False
    assert args.opts.protect is False


# --------------------------------------------------------------------------- exact runtime path


def test_fast_path_matches_the_sdk_analyzer() -> None:
    """The offline fast path and pulumi_policy's own `Analyze` (protobuf in, diagnostics out) agree."""
    graph = rendered("prod")
    config = effective_config(graph, {})
    subjects = [*graph.resources]
    subjects += [mutated(m.select(rendered(m.stack)), m.change) for m in MUTANTS if m.stack == "prod"]
    subjects += [mutated(s(graph), put(p, UNKNOWN)) for _, s, p in UNKNOWN_CASES]
    fast, exact = Analyzer(POLICIES, config), Analyzer(POLICIES, config, exact=True)
    for subject in subjects:
        key = lambda v: (v.policy, v.level, v.message)  # noqa: E731
        expected = sorted(map(key, exact.analyze(subject)))
        assert sorted(map(key, fast.analyze(subject))) == expected, subject.name


# --------------------------------------------------------------------------- config


def test_pack_config_widens_the_endpoint_allow_list() -> None:
    mutant = next(m for m in MUTANTS if m.id == "base-url-production")
    resource = mutated(mutant.select(rendered("prod")), mutant.change)
    assert any(v.policy == "read-only-exchange-keys" for v in analyzer("prod").analyze(resource))
    config = {"read-only-exchange-keys": {"allowedEndpoints": ["testnet.binance.vision", "api.binance.com",
                                                               "openapi-sandbox.kucoin.com"]}}
    found = Analyzer(POLICIES, config).analyze(resource)
    assert [v for v in found if v.policy == "read-only-exchange-keys"] == []


def test_pack_config_sets_enforcement_levels() -> None:
    resource = mutated(svc("redis")(rendered("prod")), put("memory", DROP))
    config: dict[str, Any] = {"container-memory-limit": {"enforcementLevel": "advisory"}}
    (found,) = [v for v in Analyzer(POLICIES, config).analyze(resource) if v.policy == MEM]
    assert found.level == "advisory"
    assert [v for v in Analyzer(POLICIES, {"container-memory-limit": "disabled"}).analyze(resource)
            if v.policy == "container-memory-limit"] == []


def test_allowed_host_mounts_are_per_service() -> None:
    """node-exporter may read /proc (read-only); the same mount on another service, or writable, fails."""
    proc = {"hostPath": "/proc", "containerPath": "/host/proc", "readOnly": True}

    def mounts_violations(resource: Resource) -> list[str]:
        return [v.line() for v in analyzer("prod").analyze(resource) if v.policy == MNT]

    redis = svc("redis")(rendered("prod"))
    exporter = mutated(redis, both(set_label("paper-trading.service", "node-exporter"),
                                   append("volumes", proc)))
    assert mounts_violations(exporter) == []
    assert mounts_violations(mutated(redis, append("volumes", proc)))
    index = len(exporter.wire["volumes"]) - 1
    assert mounts_violations(mutated(exporter, put(f"volumes.{index}.readOnly", False)))


def test_helpers_are_strict_about_names() -> None:
    assert hardening._image_problem("nginx:1.27.3-alpine") is None
    assert hardening._image_problem("localhost:5000/app") is not None
    assert hardening._image_problem(f"{APP_IMAGE}@sha256:{'c' * 64}") is None
    assert trading._exchange_of("binance-api-key", ["binance"]) == "BINANCE"
    assert trading._exchange_of("GATEWAY_URL", ["gate"]) is None


def test_all_stacks_listed() -> None:
    assert {"prod", "dev"} <= set(stack_names())


def _names(items: Sequence[ResourceValidationPolicy]) -> list[str]:
    return [p.name for p in items]


def test_interface_names_and_levels() -> None:
    required = {"paper-trading-mode", "read-only-exchange-keys", "app-containers-labelled",
                "container-not-privileged", "container-capabilities-dropped", "container-no-host-namespaces",
                "container-no-sensitive-mounts", "container-no-new-privileges", "container-memory-limit",
                "container-ports-bound", "container-image-pinned", "container-user-networks-only",
                "data-volumes-protected", "backend-network-internal"}
    assert required <= set(MANDATORY_NAMES)
    assert "container-read-only-rootfs" in MANDATORY_NAMES
    assert set(ADVISORY_NAMES) == {"container-healthcheck", "container-restart-bounded"}
    assert len(set(_names(POLICIES))) == len(POLICIES)


def test_a_mutation_of_either_view_is_caught() -> None:
    """`Resource.inputs` and `Resource.wire` are both checked when they disagree."""
    real = app(rendered("prod"))
    inputs = deepcopy(real.inputs)
    inputs["envs"] = [e.replace("ALLOW_REAL_TRADES=false", "ALLOW_REAL_TRADES=true") for e in inputs["envs"]]
    only_inputs = replace(real, inputs=inputs)
    assert any(v.policy == PTM and v.mandatory for v in analyzer("prod").analyze(only_inputs))
    assert any(v.policy == PTM and v.mandatory
               for v in check_graph(replace(rendered("prod"), resources=[only_inputs])))
