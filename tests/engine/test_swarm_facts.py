"""The Swarm resources under the real engine, on the 3-node lab (tests/engine/swarm_facts/).

What the Swarm target will build on, reproduced: an overlay network, a content-hashed secret
and config and a dnsrr service are created by `pulumi up` on the lab's manager; its tasks run on
every node; `refresh` then `preview --expect-no-changes` is clean (the network attached by `id`);
a rotated secret is a new secret, the service moves to it, the old one is deleted, and the
value is in no node's data root on disk in the clear (only on the tasks' tmpfs), nor in the
stack's exported state.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine.engine import EngineProject
from tests.support import missing
from tests.support.swarm_target import on_disk_under
from tools.swarm_lab import DATA, Lab

pytestmark = pytest.mark.engine
IMAGE = "paper-trading-reference-app:test"
FACTS = Path("tests") / "engine" / "swarm_facts"
FIRST_SECRET = "facts-first-0f1e2d3c4b5a"
SECOND_SECRET = "facts-second-a5b4c3d2e1f0"


@pytest.fixture(scope="module")
def facts(swarm_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProject]:
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        missing("the Pulumi CLI is not installed (run scripts/install-engine)")
    assert pulumi is not None
    engine = EngineProject(tmp_path_factory.mktemp("swarm-facts"), pulumi, stack="facts")
    engine.prepare()
    where = engine.workdir / FACTS
    engine.run("stack", "init", "facts", "--secrets-provider", "passphrase", cwd=where)
    for key, value in (("docker:host", swarm_lab.node("n1").docker_host), ("image", IMAGE), ("replicas", "3"),
                       ("settings", '{"mode": "paper"}')):
        engine.run("config", "set", key, value, cwd=where)
    engine.run("config", "set", "--secret", "secret", FIRST_SECRET, cwd=where)
    try:
        yield engine
    finally:
        engine.run("destroy", "--yes", cwd=where, check=False)


def _where(engine: EngineProject) -> Path:
    return engine.workdir / FACTS


def _running_nodes(swarm_lab: Lab) -> set[str]:
    client = swarm_lab.manager()
    tasks = client.api.tasks(filters={"service": "facts-app", "desired-state": "running"})
    return {t["NodeID"] for t in tasks if t["Status"]["State"] == "running"}


def _secret_names(swarm_lab: Lab) -> set[str]:
    return {s.name for s in swarm_lab.manager().secrets.list() if s.name.startswith("facts-secret-")}


def test_up_creates_the_swarm_resources_and_the_tasks_spread(swarm_lab: Lab, facts: EngineProject) -> None:
    facts.run("up", "--yes", "--skip-preview", cwd=_where(facts), timing="swarm up")
    assert len(_running_nodes(swarm_lab)) == 3
    outputs: dict[str, Any] = json.loads(facts.run("stack", "output", "--json", cwd=_where(facts)).stdout)
    assert outputs["secretName"].startswith("facts-secret-")
    assert outputs["configName"].startswith("facts-settings-")
    assert _secret_names(swarm_lab) == {outputs["secretName"]}


def test_refresh_then_preview_is_clean(facts: EngineProject) -> None:
    facts.run("refresh", "--yes", "--skip-preview", cwd=_where(facts))
    proc = facts.run("preview", "--expect-no-changes", "--diff", cwd=_where(facts), check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_a_rotated_secret_is_a_new_secret_and_the_old_one_goes(swarm_lab: Lab, facts: EngineProject) -> None:
    before = _secret_names(swarm_lab)
    facts.run("config", "set", "--secret", "secret", SECOND_SECRET, cwd=_where(facts))
    facts.run("up", "--yes", "--skip-preview", cwd=_where(facts), timing="swarm secret rotation")
    after = _secret_names(swarm_lab)
    assert len(after) == 1 and after != before
    spec = swarm_lab.manager().services.get("facts-app").attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert [s["SecretName"] for s in spec["Secrets"]] == sorted(after)
    # Start-first: each new task starts beside the old one it replaces, so the spread preference
    # may put two on a node; the replicas stay on at least two nodes.
    assert len(_running_nodes(swarm_lab)) >= 2


def test_no_secret_value_in_the_clear_on_disk_or_in_the_state(facts: EngineProject) -> None:
    for value in (FIRST_SECRET, SECOND_SECRET):
        assert on_disk_under(DATA, value.encode()) == []
    exported = facts.run("stack", "export", cwd=_where(facts)).stdout
    assert FIRST_SECRET not in exported and SECOND_SECRET not in exported
