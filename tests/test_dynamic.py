"""components/dynamic.py: every dynamic provider of the program stands on the one base."""

from __future__ import annotations

from typing import Any

import pulumi.dynamic as dyn

from components.deploy_record import DeployRecordProvider
from components.dynamic import StateProvider
from components.firewall import FirewallTableProvider
from components.gate import PromotionGateProvider
from components.release_guard import ReleaseGuardProvider, ReleaseRecordProvider
from components.routing.provider import RoutingProvider
from tools.render import evaluate


def _kinds() -> set[str]:
    """The `kind` of every dynamic resource the prod program registers."""
    graph = evaluate("prod")
    return {str(r.inputs.get("kind")) for r in graph.resources if r.type == "pulumi-python:dynamic:Resource"}


def test_every_provider_class_derives_from_the_base() -> None:
    classes = [DeployRecordProvider, FirewallTableProvider, PromotionGateProvider, ReleaseGuardProvider,
               ReleaseRecordProvider, RoutingProvider]
    assert all(issubclass(c, StateProvider) for c in classes)
    # No provider outside the base: every ResourceProvider subclass in components/ is one of them.

    def subclasses(cls: type) -> set[type]:
        found: set[type] = set()
        subs: list[type] = cls.__subclasses__()
        for sub in subs:
            found |= {sub} | subclasses(sub)
        return found

    ours = {c for c in subclasses(dyn.ResourceProvider) if c.__module__.startswith("components")}
    assert ours == {StateProvider, *classes}


class _Probe(StateProvider):
    WATCHED = ("a", "b")
    REPLACES = ("b",)
    ID_KEY, ID_PREFIX = "name", "probe"

    def apply(self, props: dict[str, Any], olds: dict[str, Any] | None) -> dict[str, Any]:
        return {**props, "applied": "update" if olds else "create"}


def test_the_base_diffs_on_watched_inputs_and_replaces_only_on_its_own() -> None:
    probe = _Probe()
    created = probe.create({"name": "x", "a": 1, "b": 1})
    assert created.id == "probe-x" and created.outs == {"name": "x", "a": 1, "b": 1, "applied": "create"}
    same = probe.diff("probe-x", {"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 1, "c": 2})
    assert same.changes is False and same.replaces == []
    update = probe.diff("probe-x", {"a": 1, "b": 1}, {"a": 2, "b": 1})
    assert update.changes is True and update.replaces == []
    replace = probe.diff("probe-x", {"a": 1, "b": 1}, {"a": 1, "b": 2})
    assert replace.changes is True and replace.replaces == ["b"]
    assert probe.update("probe-x", {"a": 1}, {"a": 2}).outs == {"a": 2, "applied": "update"}
    probe.delete("probe-x", {})  # nothing to undo: records outlive their resource


def test_the_firewall_table_is_replaced_by_a_new_name_and_updated_by_a_new_image() -> None:
    provider = FirewallTableProvider()
    old = {"table": "t1", "image": "i:1"}
    assert provider.diff("id", old, {"table": "t2", "image": "i:1"}).replaces == ["table"]
    by_image = provider.diff("id", old, {"table": "t1", "image": "i:2"})
    assert by_image.changes is True and by_image.replaces == []
    assert provider.create(old).id == "firewall-table-t1"


def test_the_prod_program_registers_each_kind_of_dynamic_resource() -> None:
    assert {"paper-trading:promotion-gate", "paper-trading:routing-switch", "paper-trading:deploy-record",
            "paper-trading:release-guard", "paper-trading:release-record",
            "paper-trading:firewall-table"} == _kinds()
