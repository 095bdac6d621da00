"""The pack as the engine talks to it (its gRPC analyzer), and the offline check command."""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime import proto
from pulumi.runtime.proto import analyzer_pb2_grpc

from policies.check import check_graph, effective_config
from policies.rules import ALL_POLICIES, POLICIES
from tests.support import rendered, stop_process
from tools.render import UNKNOWN

ROOT = Path(__file__).resolve().parents[2]
LEVELS = {proto.ADVISORY: "advisory", proto.MANDATORY: "mandatory"}


@pytest.fixture(scope="module")
def pack() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """The pack started the way the engine starts a Python pack (`python -u -m pulumi.policy <engine> <dir>`,
    which `runpy`s `policies/__main__.py`); the analyzer's port is read from its stdout."""
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", str(ROOT / "policies")],
        cwd=ROOT / "policies",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": ""},
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30)
        line = process.stdout.readline().decode().strip() if ready else ""
        assert line.isdigit(), f"pack did not print its port: {line!r} {process.poll()}"
        channel = grpc.insecure_channel(f"127.0.0.1:{line}")
        grpc.channel_ready_future(channel).result(timeout=10)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        stop_process(process)


def test_pack_describes_every_policy_with_level_and_schema(pack: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = pack.GetAnalyzerInfo(empty_pb2.Empty(), timeout=10)
    described = {p.name: p for p in info.policies}
    assert set(described) == {p.name for p in ALL_POLICIES}
    assert "promotion-gated" in described
    for policy in ALL_POLICIES:
        assert policy.enforcement_level is not None
        assert LEVELS[described[policy.name].enforcementLevel] == policy.enforcement_level.value
    schema = json_format.MessageToDict(described["read-only-exchange-keys"].configSchema)
    assert "testnet.binance.vision" in schema["properties"]["allowedEndpoints"]["default"]


def test_pack_over_grpc_agrees_with_the_offline_check(pack: analyzer_pb2_grpc.AnalyzerStub) -> None:
    """Every prod resource sent as the engine sends it; a mutant app container too."""
    graph = rendered("prod")
    config = effective_config(graph, {})
    request = proto.ConfigureAnalyzerRequest()
    for policy in POLICIES:
        assert policy.enforcement_level is not None
        entry = request.policyConfig[policy.name]
        mandatory = policy.enforcement_level.value == "mandatory"
        entry.enforcementLevel = proto.MANDATORY if mandatory else proto.ADVISORY
        entry.properties.update({k: v for k, v in (config.get(policy.name) or {}).items()})
    pack.Configure(request, timeout=10)

    def analyze(resource: object) -> set[tuple[str, str]]:
        struct = struct_pb2.Struct()
        json_format.ParseDict(resource.wire, struct)  # type: ignore[attr-defined]
        reply = pack.Analyze(proto.AnalyzeRequest(
            type=resource.type, urn=resource.urn, name=resource.name,  # type: ignore[attr-defined]
            properties=struct,
            options=proto.AnalyzerResourceOptions(protect=resource.options["protect"]),  # type: ignore[attr-defined]
        ), timeout=10)
        return {(d.policyName, LEVELS[d.enforcementLevel]) for d in reply.diagnostics}

    offline = {(v.urn, v.policy, v.level) for v in check_graph(graph)}
    online = {(r.urn, *found) for r in graph.resources for found in analyze(r)}
    assert online == offline
    app = next(r for r in graph.containers if r.label_map.get("paper-trading.role") == "app")
    flip = "ALLOW_REAL_TRADES="
    envs = [e if not e.startswith(flip) else f"{flip}true" for e in app.wire["envs"]]
    bad = replace(app, wire={**app.wire, "envs": envs})
    assert ("paper-trading-mode", "mandatory") in analyze(bad)
    unknown = replace(app, wire={**app.wire, "envs": UNKNOWN})
    assert ("paper-trading-mode", "mandatory") in analyze(unknown)


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policies.check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_check_command_passes_every_stack() -> None:
    result = _check("--all")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "prod:" in result.stderr and "dev:" in result.stderr
    assert "0 mandatory" in result.stderr


def test_check_command_fails_on_a_mandatory_violation(tmp_path: Path) -> None:
    config = tmp_path / "policy-config.json"
    config.write_text(json.dumps({"container-ports-bound": {"publicServices": []}}))
    result = _check("--stack", "prod", "--policy-pack-config", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if "container-ports-bound" in x)
    assert "MANDATORY" in line and "::proxy" in line and "public address" in line
    relaxed = tmp_path / "relaxed.json"
    relaxed.write_text(json.dumps({"container-ports-bound": {"enforcementLevel": "advisory",
                                                             "publicServices": []}}))
    result = _check("--stack", "prod", "--policy-pack-config", str(relaxed))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ADVISORY" in result.stdout


def test_policies_add_little_to_rendering() -> None:
    """The policy run over the prod graph is far below the 0.2 s budget (median of 5, in-process)."""
    graph = rendered("prod")
    times = []
    for _ in range(5):
        started = time.perf_counter()
        check_graph(graph)
        times.append(time.perf_counter() - started)
    assert statistics.median(times) < 0.2, times


def test_pack_over_grpc_runs_promotion_gated_on_the_stack(pack: analyzer_pb2_grpc.AnalyzerStub) -> None:
    """The stack policy as the engine calls it (AnalyzeStack with property dependencies)."""
    graph = rendered("prod")

    def analyze_stack(resources: list[Any]) -> set[tuple[str, str]]:
        request = proto.AnalyzeStackRequest()
        for resource in resources:
            entry = request.resources.add(type=resource.type, urn=resource.urn, name=resource.name)
            entry.properties.update(resource.wire)
            for key, urns in resource.options.get("propertyDependencies", {}).items():
                entry.propertyDependencies[key].urns.extend(urns)
        reply = pack.AnalyzeStack(request, timeout=10)
        return {(d.policyName, LEVELS[d.enforcementLevel]) for d in reply.diagnostics}

    assert analyze_stack(graph.resources) == set()
    switch = graph.by_name("routing-switch")
    ungated = replace(switch, options={**switch.options, "propertyDependencies": {}})
    mutated = [ungated if r is switch else r for r in graph.resources]
    assert analyze_stack(mutated) == {("promotion-gated", "mandatory")}
