"""The routing resource offline: diff semantics, the render hook, the component under mocks, the graph.

The Docker proof (real switch against a real proxy) is tests/docker/test_routing_docker.py.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import dill
import pulumi
import pytest
from pulumi.dynamic.dynamic import serialize_provider

from release import routing
from release.routing import cli
from release.routing.base import SWITCH_KIND
from release.routing.docker_side import Served
from render.nginx.routing import (
    ROUTING_DIR,
    marker_path,
    render_markers,
    render_routing,
    routing_directives,
)
from tools.render import stack_config

BASE = {
    "proxyContainerName": "pt-proxy", "proxyContainerId": "id-1",
    "liveColor": "blue", "previewColor": "green",
    "publicUrl": "https://trading.example.com", "caFile": None, "insecure": False, "hostHeader": None,
    "probePath": "/health", "postPromotionChecks": True,
    "renderedFiles": render_markers("blue", "green"),
}


def flip(props: dict[str, Any]) -> dict[str, Any]:
    live = "green" if props["liveColor"] == "blue" else "blue"
    preview = props["liveColor"]
    return {**props, "liveColor": live, "previewColor": preview,
            "renderedFiles": render_markers(live, preview)}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("news", "changes"),
    [
        (BASE, False),
        (flip(BASE), True),
        ({**BASE, "proxyContainerId": "id-2"}, True),  # a replaced proxy gets the choice again
        ({**BASE, "publicUrl": "https://other.example.com"}, False),
        ({**BASE, "postPromotionChecks": False}, False),
    ],
)
def test_diff_updates_on_color_or_proxy_identity_never_replaces(news: dict[str, Any], changes: bool) -> None:
    result = routing.RoutingProvider().diff("pt-proxy-routing", BASE, news)
    assert bool(result.changes) is changes
    assert not result.replaces
    assert not result.delete_before_replace


def test_pickled_provider_renders_offline_without_an_engine() -> None:
    """tools/render.py decodes the provider and calls render_outputs: no Docker, no network."""
    provider = dill.loads(base64.b64decode(serialize_provider(routing.RoutingProvider())))
    outs = provider.render_outputs(dict(BASE))
    assert outs["liveColor"] == "blue"
    assert outs["renderedFiles"] == render_markers("blue", "green")
    assert outs["handoffMs"] is None
    # By reference, not by value: the pickle stays small and picks up fixed code.
    assert len(serialize_provider(routing.RoutingProvider())) < 2000


@pytest.mark.parametrize(
    ("content", "color"),
    [(Served("blue", "green").describe(), "blue"),
     (Served("none", "none").describe(), "none"),
     (render_routing("green", None), "green"), (render_routing(None, None), "none"), ("garbage", None),
     (None, None)],
)
def test_live_color_is_read_back_from_the_served_state(content: str | None, color: str | None) -> None:
    assert routing.live_color_of(content) == color


def test_markers_name_the_choice_and_never_a_color_inside() -> None:
    """The switch renames markers, so their content must not say a color (it moves with the rename)."""
    files = render_markers("green", "blue")
    assert set(files) == {marker_path("live", "green"), marker_path("preview", "blue")}
    assert all(path.startswith(ROUTING_DIR + "/") for path in files)
    assert len(set(files.values())) == 1
    assert not any(color in body for body in files.values() for color in ("blue", "green"))
    assert set(render_markers("blue", None)) == {marker_path("live", "blue")}


def test_cli_requires_a_color_and_a_container() -> None:
    with pytest.raises(SystemExit):
        cli.main(["switch", "--to", "purple", "--container", "x"])
    with pytest.raises(SystemExit):
        cli.main(["switch", "--to", "blue"])


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


def test_component_registers_the_sdk_dynamic_type_with_the_rendered_file() -> None:
    mocks = _Mocks()
    pulumi.runtime.set_mocks(mocks, project="paper-trading", stack="test", preview=False)

    @pulumi.runtime.test  # type: ignore[untyped-decorator]  # the SDK's decorator is untyped
    def check() -> Any:
        component = routing.Routing("routing", routing.RoutingArgs(
            proxy_container_name="pt-proxy", proxy_container_id=pulumi.Output.from_input("id-1"),
            live_color=pulumi.Output.from_input("green"), preview_color="blue",
            public_url="http://127.0.0.1:8080",
        ))

        def verify(_: Any) -> None:
            dynamic = [r for r in mocks.resources if r.typ == "pulumi-python:dynamic:Resource"]
            assert len(dynamic) == 1
            inputs = dynamic[0].inputs
            assert inputs["liveColor"] == "green" and inputs["proxyContainerId"] == "id-1"
            assert inputs["renderedFiles"] == render_markers("green", "blue")
            assert any(r.typ == "paper-trading:routing:Routing" for r in mocks.resources)

        return component.switch.urn.apply(verify)

    check()


def _routing_resources(graph: Any) -> list[Any]:
    return [
        r for r in graph.resources
        if r.type == "pulumi-python:dynamic:Resource"
        and r.inputs.get("kind") == SWITCH_KIND
    ]


@pytest.mark.parametrize("stack", ["prod", "dev"])
def test_flipping_the_active_color_changes_only_routing_and_gate(stack: str) -> None:
    from tests.support import render_with, rendered

    graph = rendered(stack)
    assert _routing_resources(graph), "the routing resource must be in the program's graph"
    deployment = json.loads(stack_config(stack)[0]["paper-trading:deployment"])
    other = "green" if deployment.get("activeColor", "blue") == "blue" else "blue"
    flipped = render_with(stack, deployment={**deployment, "activeColor": other})
    before = {r.urn: r.inputs for r in graph.resources}
    after = {r.urn: r.inputs for r in flipped.resources}
    assert before.keys() == after.keys()
    changed = {urn for urn in before if before[urn] != after[urn]}
    routing_urns = {r.urn for r in _routing_resources(graph)}
    assert routing_urns <= changed
    for urn in changed - routing_urns:
        # The gate re-validates the new candidate; the deploy record writes one record per release.
        assert "gate" in urn.lower() or urn.endswith("::deploy-record"), \
            f"{urn} changed when only activeColor flipped"
    for res in graph.containers:
        assert before[res.urn] == after[res.urn]
    files = flipped.files()
    # The graph shows the marker the switch leaves: live-<other>, and no live marker of the old color.
    live_markers = {path.rpartition("/")[2] for path in files if "/routing/live-" in path}
    assert live_markers == {f"live-{other}"}


@pytest.mark.parametrize("role", ["live", "preview"])
@pytest.mark.parametrize(("before", "after"), [("green", "blue"), ("blue", "green")])
def test_a_rename_between_two_marker_tests_never_leaves_a_request_without_a_color(
        role: str, before: str, after: str) -> None:
    """Each `if (-f ...)` is its own stat(2). Whichever test the one rename falls before, the
    request ends with one of the two colors, never the default (a 503 on the live listener)."""
    tests = []
    for line in routing_directives(role, "/r"):
        found = re.match(r"^if \(-f /r/(\w+)-(\w+)\) \{ set \$\w+ (\w+); \}$", line)
        if found:
            assert found.group(1) == role and found.group(2) == found.group(3)
            tests.append(found.group(2))
    assert set(tests) == {"blue", "green"}
    for renamed_at in range(len(tests) + 1):
        color = "default"
        for index, tested in enumerate(tests):
            present = before if index < renamed_at else after
            if tested == present:
                color = tested
        assert color in (before, after), (tests, renamed_at)
