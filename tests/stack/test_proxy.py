"""The proxy component under the mock runtime: ports, networks, labels, uploads, color independence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from render.nginx import ROUTING_PATH, render_nginx_conf, render_routing
from render.nginx.conf import CONF_PATH
from settings import Settings, parse_settings
from stack.proxy import LOG_ROTATION, LOG_ROTATION_NAME, ProxyProps, preview_url, proxy_paths, public_url
from tools.render import ROOT, Graph, Resource, evaluate, stack_config

CONTAINER = "docker:index/container:Container"

# Until __main__.py builds the proxy, evaluate it in a minimal program of the same shape.
_MINI_MAIN = '''
import pulumi
from contract import STACK_LABEL
from settings import load_settings
from stack.network import Networks, NetworksArgs
from stack.proxy import Proxy, ProxyArgs, ProxyProps

settings = load_settings()
stack_labels = {STACK_LABEL: pulumi.get_stack()}
networks = Networks("networks", NetworksArgs(name_prefix=settings.name_prefix, stack=pulumi.get_stack()))
proxy = Proxy("proxy", ProxyArgs(props=ProxyProps.of(settings), networks=networks.names,
                                  stack_labels=stack_labels))
'''


def _wired() -> bool:
    return "Proxy(" in (ROOT / "__main__.py").read_text()


def _config(stack: str, **overrides: Any) -> tuple[dict[str, str], list[str]]:
    config, secrets = stack_config(stack)
    for key, value in overrides.items():
        config[f"paper-trading:{key}"] = json.dumps(value)
    return config, secrets


def _settings(config: dict[str, str], secrets: list[str]) -> Settings:
    raw = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("paper-trading:")}
    return parse_settings(raw, frozenset(k.split(":", 1)[1] for k in secrets))


def _evaluate(stack: str, tmp: Path, **overrides: Any) -> tuple[Graph, Settings]:
    config, secrets = _config(stack, **overrides)
    if _wired():
        return evaluate(stack, config=config, secret_keys=secrets), _settings(config, secrets)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "__main__.py").write_text(_MINI_MAIN)
    shutil.copy(ROOT / f"Pulumi.{stack}.yaml", tmp / f"Pulumi.{stack}.yaml")
    return evaluate(stack, config=config, secret_keys=secrets, root=tmp), _settings(config, secrets)


def _proxy(graph: Graph) -> Resource:
    found = [r for r in graph.containers if r.label_map.get("paper-trading.role") == "proxy"]
    assert len(found) == 1, [r.name for r in graph.containers]
    return found[0]


def _carrier(graph: Graph) -> Resource:
    """The proxy's never-started file carrier (stack/carrier.py)."""
    name = _proxy(graph).inputs["name"]
    (found,) = [r for r in graph.containers if r.label_map.get("paper-trading.carrier-for") == name]
    return found


@pytest.fixture(scope="module", params=["prod", "dev"])
def rendered_proxy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    stack = request.param
    graph, settings = _evaluate(stack, tmp_path_factory.mktemp(f"proxy-{stack}"))
    return stack, graph, settings, _proxy(graph)


def test_ports_explicit_ip_only_http_https_public_preview_loopback(rendered_proxy: Any) -> None:
    stack, _, settings, proxy = rendered_proxy
    ports = proxy.inputs["ports"]
    assert all(p.get("ip") for p in ports), ports
    by_internal = {int(p["internal"]): p for p in ports}
    public = {int(p["external"]) for p in ports if p["ip"] != "127.0.0.1"}
    expected_public = {settings.proxy.http_port}
    if settings.server.ssl.enabled:
        expected_public.add(settings.proxy.https_port)
        assert by_internal[8443]["ip"] == settings.proxy.public_address
        assert int(by_internal[8443]["external"]) == settings.proxy.https_port
    else:
        assert 8443 not in by_internal
    if settings.proxy.public_address != "127.0.0.1":
        assert public == expected_public
    assert int(by_internal[8080]["external"]) == settings.proxy.http_port
    assert by_internal[9443] == {
        "internal": 9443.0, "external": float(settings.proxy.preview_port),
        "ip": "127.0.0.1", "protocol": "tcp",
    }
    assert 8081 not in by_internal, "the status port must never be published"
    if stack == "prod":
        assert settings.server.ssl.enabled and len(ports) == 3


def test_networks_aliases_and_labels(rendered_proxy: Any) -> None:
    stack, _, settings, proxy = rendered_proxy
    prefix = settings.name_prefix
    nets = {n["name"]: n.get("aliases") for n in proxy.inputs["networksAdvanced"]}
    # The status alias exists only on the metrics network: the status listener binds to it.
    assert nets == {f"{prefix}-frontend": ["proxy"], f"{prefix}-metrics": ["proxy", "proxy-status"]}
    # No networkMode: the aliases would be dropped on the network it names (see common.py).
    assert "networkMode" not in proxy.inputs
    assert proxy.label_map["paper-trading.role"] == "proxy"
    assert proxy.label_map["paper-trading.stack"] == stack
    assert proxy.inputs["name"] == f"{prefix}-proxy"


def test_hardening_image_and_options(rendered_proxy: Any) -> None:
    _, graph, settings, proxy = rendered_proxy
    inputs = proxy.inputs
    assert inputs["image"] == settings.images.nginx
    assert inputs["user"] == "101:101"
    # Issue 21, item 7: read-only; the files come from the carrier's volume, mounted read-only.
    assert inputs["readOnly"] is True and not inputs.get("uploads")
    assert inputs["capabilities"]["drops"] == ["ALL"]
    assert not inputs["capabilities"].get("adds"), "unprivileged ports need no capability"
    assert inputs["wait"] is True
    test = inputs["healthcheck"]["tests"]
    assert test[0] == "CMD-SHELL" and "127.0.0.1:8081/nginx-health" in test[1]
    assert {"/tmp", "/var/cache/nginx", "/var/run"} <= set(inputs["tmpfs"])
    # The IDS's access-log file (issue 14, part 2): the proxy-logs volume and a rotation loop beside nginx.
    ids = settings.security.ids.enabled
    assert [v["containerPath"] for v in inputs["volumes"]] == [
        "/etc/paper-trading/nginx", "/etc/paper-trading/routing",
        *(["/var/log/paper-trading"] if ids else [])]
    conf, routing = inputs["volumes"][:2]
    assert conf["readOnly"] is True and conf["volumeName"].startswith(f"{inputs['name']}-files-")
    # The markers: a volume of the proxy's own (anonymous: removed with it), writable by root only.
    assert not routing.get("readOnly") and not routing.get("volumeName") and not routing.get("hostPath")
    assert _carrier(graph).urn in proxy.options["dependsOn"]
    # With the IDS: programs/proxy/nginx-rotating-log.sh, its arguments after its name ($0).
    log, conf = "/var/log/paper-trading/access.log", "/etc/paper-trading/nginx/nginx.conf"
    assert inputs["command"][:5] == (["sh", "-c", LOG_ROTATION, LOG_ROTATION_NAME, log]
                                     if ids else ["nginx", "-e", "stderr", "-c", conf])
    assert inputs["command"][-1] == "/etc/paper-trading/nginx/nginx.conf" or not ids
    assert proxy.options["deleteBeforeReplace"] is True
    image = [r for r in graph.of_type("docker:index/remoteImage:RemoteImage") if r.parent == proxy.parent]
    assert [r.inputs["name"] for r in image] == [settings.images.nginx]
    assert image[0].urn in proxy.options["dependsOn"]
    mounts = {m["target"]: m for m in inputs.get("mounts") or []}
    if settings.server.ssl.enabled:
        assert mounts["/run/tls/fullchain.pem"]["source"] == settings.server.ssl.cert_path
        assert mounts["/run/tls/privkey.pem"]["source"] == settings.server.ssl.key_path
        assert all(m["readOnly"] is True for m in mounts.values())
    else:
        assert not mounts


def test_uploads_are_the_rendered_config(rendered_proxy: Any) -> None:
    _, graph, settings, proxy = rendered_proxy
    carrier = _carrier(graph)
    uploads = {u["file"]: u["content"] for u in carrier.inputs["uploads"]}
    assert {u["permissions"] for u in carrier.inputs["uploads"]} == {"0444"}
    assert (carrier.inputs["start"], carrier.inputs["mustRun"], carrier.inputs["image"]) == (
        False, False, settings.images.nginx)
    assert uploads == {CONF_PATH: render_nginx_conf(settings, proxy_paths(settings)),
                       ROUTING_PATH: render_routing(None, None)}
    assert "none" in uploads[ROUTING_PATH], "the bootstrap routing must promote nothing"


def test_urls() -> None:
    config, secrets = stack_config("prod")
    prod = ProxyProps.of(_settings(config, secrets))
    assert public_url(prod) == "https://paper.example.com:443"
    assert preview_url(prod) == "https://127.0.0.1:8443"
    config, secrets = stack_config("dev")
    dev = ProxyProps.of(_settings(config, secrets))
    assert public_url(dev) == "http://localhost:8080"
    assert preview_url(dev) == "http://127.0.0.1:8081"


@pytest.mark.parametrize("stack", ["prod", "dev"])
def test_proxy_inputs_do_not_depend_on_active_color(stack: str, tmp_path: Path) -> None:
    config, _ = stack_config(stack)
    deployment = json.loads(config["paper-trading:deployment"])
    seen = []
    for color in ("blue", "green"):
        graph, _ = _evaluate(stack, tmp_path / color, deployment={**deployment, "activeColor": color})
        proxy = _proxy(graph)
        seen.append((proxy.inputs, proxy.options))
    assert seen[0] == seen[1]


def test_proxy_inputs_change_with_proxy_settings(tmp_path: Path) -> None:
    """The color-independence test above can fail: a real proxy setting does change the inputs."""
    config, _ = stack_config("prod")
    proxy_cfg = json.loads(config["paper-trading:proxy"])
    base, _ = _evaluate("prod", tmp_path / "a")
    changed, _ = _evaluate("prod", tmp_path / "b", proxy={**proxy_cfg, "workerShutdownTimeout": "90s"})
    assert _carrier(base).inputs["uploads"] != _carrier(changed).inputs["uploads"]
    # A new file is a new volume name, so the proxy itself is replaced (its inputs change too).
    names = [_proxy(graph).inputs["volumes"][0]["volumeName"] for graph in (base, changed)]
    assert names[0] != names[1]


def test_the_proxy_can_open_new_upstream_connections_at_load(rendered_proxy: Any) -> None:
    """A new upstream connection per request: TIME_WAIT ports are reused and the range is wide,
    or sustained load exhausts the proxy's ephemeral ports and nginx answers 502 (bench/cutover.py)."""
    sysctls = rendered_proxy[3].inputs.get("sysctls") or {}
    assert sysctls.get("net.ipv4.tcp_tw_reuse") == "1"
    low, high = (int(n) for n in sysctls["net.ipv4.ip_local_port_range"].split())
    assert high - low >= 45000
