"""The proxy's nginx release has a floor (contract/versions.py), enforced by config and policy.

Issue 13, item 2. The mandatory `proxy-image-current` policy runs through the pack's own
harness (props as the engine hands them) on the real rendered graphs and on mutants of the
proxy container and its RemoteImage; each case names which resource was refused and for which
version. The config refuses the same images with a message naming `images.nginx`.
"""

from __future__ import annotations

import re
from copy import deepcopy
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from pulumi_policy.deserialize import deserialize_properties

from contract.versions import NGINX_FLOOR, dotted, nginx_floor_problem, release_in_tag
from policies.check import check_graph, effective_config
from policies.harness import Analyzer
from policies.rules import BY_NAME, POLICIES
from settings import ConfigError, Images, parse_settings
from tests.support import rendered
from tools.render import Graph, Resource

ROOT = Path(__file__).resolve().parents[2]
POLICY = "proxy-image-current"
CONTAINER = "docker:index/container:Container"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
FLOOR = dotted(NGINX_FLOOR)

#: image -> the release read from it (None: unreadable, refused).
TAGS = {
    "nginx:1.30.6-alpine": (1, 30, 6),
    "nginx:1.30.6": (1, 30, 6),
    "docker.io/library/nginx:1.31.3-alpine-slim": (1, 31, 3),
    "registry.local:5000/nginx:1.30.6-bookworm@sha256:" + "a" * 64: (1, 30, 6),
    "paper-trading-ci/nginx:1.30.6": (1, 30, 6),
    "nginx:1.27.3-alpine": (1, 27, 3),
    "nginx:1.30.5-alpine": (1, 30, 5),
    "nginx:1.22": None,
    "nginx:1.30-alpine": None,
    "nginx:latest": None,
    "nginx:alpine": None,
    "nginx:stable-alpine": None,
    "nginx": None,
    "nginx@sha256:" + "b" * 64: None,
    "registry.local:5000/nginx": None,
}

#: Images the policy must refuse, with the version it must report (None: "names no exact release").
REFUSED = {
    "nginx:1.27.3-alpine": "1.27.3",
    "nginx:1.30.5-alpine": "1.30.5",
    "nginx:1.22.1": "1.22.1",
    "nginx:latest": None,
    "nginx:alpine": None,
    "nginx:1.30-alpine": None,
    "nginx@sha256:" + "b" * 64: None,
}
ACCEPTED = ["nginx:1.30.6-alpine", "nginx:1.31.3-alpine", "ghcr.io/example/nginx:2.0.0"]


def _labels(res: Resource) -> dict[str, str]:
    return {e["label"]: e["value"] for e in res.inputs.get("labels") or []}


def proxy_container(graph: Graph) -> Resource:
    found = [r for r in graph.containers if _labels(r).get("paper-trading.service") == "proxy"]
    assert len(found) == 1, [r.name for r in found]
    return found[0]


def proxy_remote_image(graph: Graph) -> Resource:
    found = [r for r in graph.of_type(REMOTE_IMAGE) if "paper-trading:proxy:Proxy$" in r.urn]
    assert len(found) == 1, [r.urn for r in found]
    return found[0]


def with_image(res: Resource, image: str, key: str) -> Resource:
    wire = deepcopy(res.wire)
    wire[key] = image
    return replace(res, wire=wire, inputs=deserialize_properties(wire))


def policy_findings(stack: str, res: Resource) -> list[tuple[str, str, str]]:
    """(type, name, message) of every proxy-image-current violation for `res`."""
    analyzer = Analyzer(POLICIES, effective_config(rendered(stack), {}))
    return [(v.type, v.name, v.message) for v in analyzer.analyze(res) if v.policy == POLICY]


# ----------------------------------------------------------------------------- reading versions


@pytest.mark.parametrize("image", sorted(TAGS))
def test_release_in_tag(image: str) -> None:
    assert release_in_tag(image) == TAGS[image]


def test_floor_is_kept_in_one_place() -> None:
    """Only contract/versions.py spells the floor; everything else imports it."""
    spelled = re.compile(r"NGINX_FLOOR\s*(?::[^=]*)?=\s*\(")
    owners = [
        str(path.relative_to(ROOT))
        for folder in ("stack", "release", "contract", "policies", "validation", "tools", "scripts")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if spelled.search(path.read_text())
    ]
    assert owners == ["contract/versions.py"]


def test_default_pin_and_every_stack_satisfy_the_floor() -> None:
    assert release_in_tag(Images().nginx) is not None
    assert nginx_floor_problem(Images().nginx) is None
    for stack_file in sorted(ROOT.glob("Pulumi.*.yaml")):
        config = (yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}
        image = (config.get("paper-trading:images") or {}).get("nginx", Images().nginx)
        assert nginx_floor_problem(image) is None, f"{stack_file.name}: {image}"


# ----------------------------------------------------------------------------- config


def _raw(image: str) -> dict[str, str]:
    return {
        "paperTradingMode": "true",
        "allowRealTrades": "false",
        "deployment": '{"blue": {"image": "app:1"}, "green": {"image": "app:1"}}',
        "images": f'{{"nginx": "{image}"}}',
    }


@pytest.mark.parametrize("image", sorted(REFUSED))
def test_config_refuses_an_old_or_unreadable_nginx(image: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(_raw(image))
    problems = [p for p in caught.value.problems if p.startswith("paper-trading:images.nginx: ")]
    assert len(problems) == 1, caught.value.problems
    message = problems[0].removeprefix("paper-trading:images.nginx: ")
    if image.endswith(":latest"):  # the pin rule speaks first
        assert "latest" in message
    else:
        assert message == nginx_floor_problem(image)


@pytest.mark.parametrize("image", ACCEPTED)
def test_config_accepts_a_current_nginx(image: str) -> None:
    assert parse_settings(_raw(image)).images.nginx == image


# ----------------------------------------------------------------------------- the policy


def test_policy_is_registered_mandatory() -> None:
    policy = BY_NAME[POLICY]
    assert policy.enforcement_level is not None and policy.enforcement_level.value == "mandatory"


@pytest.mark.parametrize("stack", ["prod", "dev", "ci"])
def test_real_graphs_pass_and_the_policy_sees_the_proxy(stack: str) -> None:
    graph = rendered(stack)
    assert [v.line() for v in check_graph(graph) if v.policy == POLICY] == []
    # Not vacuous: the proxy container and its RemoteImage are what the policy reads.
    container, remote = proxy_container(graph), proxy_remote_image(graph)
    assert release_in_tag(container.inputs["image"]) is not None
    assert remote.inputs["name"] == container.inputs["image"]


@pytest.mark.parametrize("image", sorted(REFUSED))
@pytest.mark.parametrize("which", ["container", "remote-image"])
def test_policy_refuses_the_proxy_image(image: str, which: str) -> None:
    graph = rendered("prod")
    res = proxy_container(graph) if which == "container" else proxy_remote_image(graph)
    key = "image" if which == "container" else "name"
    found = policy_findings("prod", with_image(res, image, key))
    assert found == [(res.type, res.name, nginx_floor_problem(image))]
    version = REFUSED[image]
    message = found[0][2]
    if version is None:
        assert "names no exact nginx release in its tag" in message
        assert f"cannot be checked against the floor {FLOOR}" in message
    else:
        assert f"runs nginx {version}, older than the floor {FLOOR}" in message


@pytest.mark.parametrize("image", ACCEPTED)
def test_policy_accepts_a_current_proxy_image(image: str) -> None:
    graph = rendered("prod")
    assert policy_findings("prod", with_image(proxy_container(graph), image, "image")) == []
    assert policy_findings("prod", with_image(proxy_remote_image(graph), image, "name")) == []


def test_an_unlabelled_nginx_container_is_checked_too() -> None:
    """Losing the proxy labels does not hide an nginx image: its repository name gives it away."""
    graph = rendered("prod")
    proxy = proxy_container(graph)
    wire = deepcopy(proxy.wire)
    dropped = ("paper-trading.service", "paper-trading.role")
    wire["labels"] = [e for e in wire["labels"] if e["label"] not in dropped]
    wire["image"] = "docker.io/library/nginx:1.27.3-alpine"
    found = policy_findings("prod", replace(proxy, wire=wire, inputs=deserialize_properties(wire)))
    assert found == [(CONTAINER, proxy.name, nginx_floor_problem("docker.io/library/nginx:1.27.3-alpine"))]


def test_other_images_are_not_read_as_nginx() -> None:
    """The nginx exporter (nginx/nginx-prometheus-exporter:1.3.0) is not the proxy."""
    graph = rendered("prod")
    exporter = next(r for r in graph.containers
                    if _labels(r).get("paper-trading.service") == "nginx-exporter")
    assert policy_findings("prod", exporter) == []
