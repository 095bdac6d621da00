"""The host guard's exemption and the one-guard stack rule (issue 14, part 1), on rendered graphs."""

from __future__ import annotations

from copy import deepcopy
from types import SimpleNamespace
from typing import Any

from policies.host_guard import check_host_guard_single
from policies.rules import STACK_POLICIES
from tests.support import rendered

CONTAINER = "docker:index/container:Container"


def _stack_args(stack: str, extra_guards: int = 0) -> Any:
    resources = [SimpleNamespace(resource_type=r.type, props=r.inputs, name=r.name)
                 for r in rendered(stack).resources]
    guard = next(r for r in resources if r.resource_type == CONTAINER
                 and str(r.props.get("name", "")).endswith("-host-guard"))
    for n in range(extra_guards):
        props = deepcopy(dict(guard.props))
        props["name"] = f"second-guard-{n}"
        resources.append(SimpleNamespace(resource_type=CONTAINER, props=props, name=f"second-guard-{n}"))
    return SimpleNamespace(resources=resources)


def _violations(args: Any) -> list[str]:
    found: list[str] = []
    check_host_guard_single(args, lambda message, _urn: found.append(message))
    return found


def test_prod_has_exactly_one_host_guard_and_passes() -> None:
    assert _violations(_stack_args("prod")) == []


def test_a_second_host_guard_is_refused() -> None:
    found = _violations(_stack_args("prod", extra_guards=1))
    assert len(found) == 1 and "2 host guards" in found[0]


def test_stack_rule_is_registered_mandatory() -> None:
    policy = next(p for p in STACK_POLICIES if p.name == "host-guard-single")
    assert policy.enforcement_level is not None
    assert policy.enforcement_level.value == "mandatory"


def test_ci_stack_has_no_host_guard() -> None:
    """The ci stack runs on the CI host itself: no table may be loaded there (docs/security.md)."""
    names = [str(r.inputs.get("name")) for r in rendered("ci").containers]
    assert not any(n.endswith("-host-guard") for n in names)


def test_host_guard_container_shape() -> None:
    guard = next(r.inputs for r in rendered("prod").containers
                 if str(r.inputs.get("name")).endswith("-host-guard"))
    assert guard["networkMode"] == "host"
    assert sorted(guard["capabilities"]["adds"]) == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    assert guard["capabilities"]["drops"] == ["ALL"]
    assert guard["readOnly"] is True
    assert not guard.get("uploads") and not guard.get("ports") and not guard.get("networksAdvanced")
    assert all(v["readOnly"] is True for v in guard.get("volumes") or [])
    assert {"label": "paper-trading.role", "value": "host-guard"} in guard["labels"]


def test_public_ports_follow_the_proxy_settings() -> None:
    """prod: TLS on, 80/443 public; dev-like with TLS off: only the HTTP port."""
    from tests.support import render_with

    def elements(graph: Any) -> str:
        guard = next(r.inputs for r in graph.containers if str(r.inputs.get("name")).endswith("-host-guard"))
        text = next(e for e in guard["envs"] if e.startswith("HOST_GUARD_RULESET="))
        block = text.split("set public_ports {", 1)[1].split("}", 1)[0]
        return str(block.split("elements = {", 1)[1].strip())

    assert elements(rendered("prod")) == "80, 443"
    assert elements(render_with("prod", proxy={"publicAddress": "0.0.0.0", "httpPort": 8081,
                                               "httpsPort": 8444, "previewPort": 8443})) == "8081, 8444"


# --------------------------------------------------------------------------- issue 21 (render)

def _guard(graph: Any) -> Any:
    return next(r for r in graph.containers if str(r.inputs.get("name")).endswith("-host-guard"))


def _env(guard: Any, key: str) -> str:
    return str(next(e for e in guard.inputs["envs"] if e.startswith(key + "=")).split("=", 1)[1])


def test_guard_is_replaced_delete_first_and_after_the_networks() -> None:
    """A new ruleset replaces the guard under the same name: the old container must go first
    (create-first conflicts on the name); the networks it trusts exist before it starts."""
    graph = rendered("prod")
    guard = _guard(graph)
    assert guard.options["deleteBeforeReplace"] is True
    networks = {r.urn for r in graph.resources if r.type == "docker:index/network:Network"}
    assert len(networks) == 4 and networks <= set(guard.options["dependsOn"])
    # The table's resource is created before the guard and so deleted after it at destroy
    # (its delete removes the table); a replaced guard leaves it alone.
    table = next(r for r in graph.resources if r.name == "host-guard-table")
    assert table.inputs["table"] == "inet paper_trading_guard_paper_trading"
    assert table.urn in guard.options["dependsOn"]
    assert "host-guard" not in " ".join(table.options["dependsOn"])


def test_guard_trusts_exactly_the_stacks_bridges_and_one_table_per_stack() -> None:
    from tests.support import render_with

    guard = _guard(rendered("prod"))
    assert _env(guard, "HOST_GUARD_BRIDGES").split(",") == [
        "br-frontend-id", "br-backend-id", "br-monitoring-i", "br-metrics-id"]
    prod_table = _env(guard, "HOST_GUARD_RULESET").splitlines()[2]
    dev = _guard(render_with("prod", namePrefix="dev-stack"))
    dev_table = _env(dev, "HOST_GUARD_RULESET").splitlines()[2]
    assert prod_table == "table inet paper_trading_guard_paper_trading"
    assert dev_table == "table inet paper_trading_guard_dev_stack"


def test_never_ban_list_is_admin_and_allow_listed_sources() -> None:
    import json

    from tests.support import render_with
    from tools.render import stack_config

    config, _ = stack_config("prod")
    security = json.loads(config["paper-trading:security"])
    security["firewall"]["adminSources"] = ["198.51.100.0/24"]
    security.setdefault("ids", {})["allowList"] = ["203.0.113.7", "2001:db8::/48"]
    guard = _guard(render_with("prod", security=security))
    assert _env(guard, "HOST_GUARD_NEVER_BAN").split(",") == [
        "198.51.100.0/24", "203.0.113.7/32", "2001:db8::/48"]


def test_wildcard_docker_interfaces_are_refused_naming_the_key() -> None:
    import pytest
    from pydantic import ValidationError

    from settings import FirewallConfig

    with pytest.raises(ValidationError, match="security.firewall.dockerInterfaces: 'br-\\*'"):
        FirewallConfig.model_validate({"dockerInterfaces": ["br-*"]})
