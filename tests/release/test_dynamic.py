"""release/dynamic.py: every dynamic provider of the program stands on the one base."""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pulumi.dynamic as dyn
import pytest

from release.dynamic import StateProvider
from release.gate import PromotionGateProvider
from release.guard import ReleaseGuardProvider, ReleaseRecordProvider
from release.record import DeployRecordProvider
from release.routing.provider import RoutingProvider
from release.swarm.guard import SwarmReleaseGuardProvider
from release.swarm.provider import SwarmRoutingProvider
from stack.firewall import FirewallTableProvider
from tools.render import evaluate

ROOT = Path(__file__).resolve().parents[2]


def _kinds() -> set[str]:
    """The `kind` of every dynamic resource the prod program registers."""
    graph = evaluate("prod")
    return {str(r.inputs.get("kind")) for r in graph.resources if r.type == "pulumi-python:dynamic:Resource"}


def test_every_provider_class_derives_from_the_base() -> None:
    classes = [DeployRecordProvider, FirewallTableProvider, PromotionGateProvider, ReleaseGuardProvider,
               ReleaseRecordProvider, RoutingProvider, SwarmRoutingProvider, SwarmReleaseGuardProvider]
    assert all(issubclass(c, StateProvider) for c in classes)
    # No provider outside the base: every ResourceProvider subclass in stack/ and release/ is one of them.

    def subclasses(cls: type) -> set[type]:
        found: set[type] = set()
        subs: list[type] = cls.__subclasses__()
        for sub in subs:
            found |= {sub} | subclasses(sub)
        return found

    ours = {c for c in subclasses(dyn.ResourceProvider) if c.__module__.startswith(("stack", "release"))}
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


OLD_NAMES = [
    ("components.gate", "PromotionGateProvider", "release.gate"),
    ("components.routing", "RoutingProvider", "release.routing.provider"),
    ("components.routing.provider", "RoutingProvider", "release.routing.provider"),
    ("components.deploy_record", "DeployRecordProvider", "release.record"),
    ("components.release_guard", "ReleaseGuardProvider", "release.guard"),
    ("components.release_guard", "ReleaseRecordProvider", "release.guard"),
    ("components.firewall", "FirewallTableProvider", "stack.firewall"),
]


@pytest.mark.parametrize(("old", "name", "new"), OLD_NAMES)
def test_a_provider_pickled_before_the_split_still_unpickles(old: str, name: str, new: str) -> None:
    """State written before stack/ and release/ names the old module (a GLOBAL opcode by reference)."""
    found = pickle.loads(f"c{old}\n{name}\n.".encode())  # noqa: S301 - our own class reference
    assert found is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize("module", ["components.routing", "components.audit"])
def test_the_documented_commands_answer_under_their_old_names(module: str) -> None:
    old = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True)
    new = subprocess.run([sys.executable, "-m", module.replace("components", "release"), "--help"],
                         cwd=ROOT, capture_output=True, text=True)
    assert (old.returncode, new.returncode) == (0, 0), old.stderr + new.stderr
    assert old.stdout.split("\n", 1)[1] == new.stdout.split("\n", 1)[1]
