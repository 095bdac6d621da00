"""The promotion gate's own audit records, through the real writer (issue 20, item 6a).

`run_gate` records the verdict: `refused` when the gate will not approve (a DeploymentError:
disabled, or a blocking check failed), `failed` when the gate itself broke (any other error),
`ok` when it approved. Nothing else in the suite read the gate's record back, so a change to
that line went unnoticed. Here the real provider runs against the real reference app on
loopback, and appends through the real one-shot writer container into a real Docker volume
(components/audit.VolumeSink, as in production); each test parses the new lines back and
asserts on the outcome record's fields.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import pytest

from release import audit
from release.gate import PromotionGateProvider
from tests.support import missing, require_docker
from tests.support.fakes.validation_servers import RefApp, reference_app
from validation.errors import DeploymentError

pytestmark = pytest.mark.docker
WRITER_IMAGE = "paper-trading-ci/postgres:15"
FAST = {"check_timeout": 3, "timeout": 10, "retries": 1}
STACK = "gate-audit-test"


class Trail:
    def __init__(self, client: Any, volume: str) -> None:
        self.client, self.volume = client, volume

    def target(self) -> dict[str, Any]:
        return audit.AuditTarget(stack=STACK, volume=self.volume, image=WRITER_IMAGE, actor="tester").props()

    def records(self) -> list[dict[str, Any]]:
        out = self.client.containers.run(
            WRITER_IMAGE, ["sh", "-c", f"cat {audit.AUDIT_DIR}/{audit.AUDIT_FILE} 2>/dev/null || true"],
            entrypoint=[], remove=True, network_mode="none",
            volumes=[f"{self.volume}:{audit.AUDIT_DIR}:ro"],
        ).decode()
        return [audit.parse(line) for line in out.splitlines()]


@pytest.fixture(scope="module")
def trail() -> Iterator[Trail]:
    require_docker()
    import docker

    from tests.support.docker_render import TEST_LABEL

    client = docker.from_env(timeout=60)
    try:
        client.images.get(WRITER_IMAGE)
    except docker.errors.ImageNotFound:
        missing(f"{WRITER_IMAGE} not built (scripts/build-test-images --ci)")
    name = f"pt-gate-audit-{uuid.uuid4().hex[:8]}-audit-data"
    volume = client.volumes.create(name, labels={TEST_LABEL: name})
    try:
        yield Trail(client, name)
    finally:
        with suppress(Exception):
            volume.remove(force=True)
        client.close()


@pytest.fixture(scope="module")
def app() -> Iterator[RefApp]:
    with reference_app(color="green") as running:
        yield running


def _props(trail: Trail, url: str, **over: Any) -> dict[str, Any]:
    base = {"candidateColor": "green", "previewUrl": url, "image": "paper-trading-app:1.0", "replicas": 1.0,
            "options": dict(FAST), "enabled": True, "exchanges": None, "audit": trail.target()}
    base.update(over)
    return base


def _outcome(trail: Trail, before: int) -> dict[str, Any]:
    """The gate's one outcome record among the new lines (its intent record, if any, before it)."""
    new = trail.records()[before:]
    outcomes = [r for r in new if r["result"] != "started"]
    assert len(outcomes) == 1, new
    (rec,) = outcomes
    assert tuple(rec) == audit.FIELDS
    assert (rec["operation"], rec["stack"], rec["actor"]) == ("gate", STACK, "tester")
    started = [r for r in new if r["result"] == "started"]
    assert all(new.index(s) < new.index(rec) for s in started)
    return rec


def test_a_disabled_gate_records_refused(trail: Trail) -> None:
    before = len(trail.records())
    with pytest.raises(DeploymentError):
        PromotionGateProvider().create(_props(trail, "http://127.0.0.1:9", enabled=False))
    rec = _outcome(trail, before)
    assert (rec["result"], rec["to"]) == ("refused", "green")
    assert rec["error"] and "disabled" in rec["error"]


def test_failed_checks_record_refused(trail: Trail, app: RefApp) -> None:
    app.set_faults("paper_mode_off")
    before = len(trail.records())
    try:
        with pytest.raises(DeploymentError) as caught:
            PromotionGateProvider().create(_props(trail, app.url))
    finally:
        app.set_faults()
    assert "safety.paper_trading_mode" in caught.value.failed_checks
    rec = _outcome(trail, before)
    assert (rec["result"], rec["to"]) == ("refused", "green")


def test_a_broken_gate_records_failed(trail: Trail) -> None:
    """Not a verdict: options the validator cannot even build (a preview URL that is no URL)."""
    before = len(trail.records())
    with pytest.raises(Exception) as caught:
        PromotionGateProvider().create(_props(trail, "not-a-url"))
    assert not isinstance(caught.value, DeploymentError)
    rec = _outcome(trail, before)
    assert (rec["result"], rec["to"]) == ("failed", "green")


def test_an_approval_records_ok(trail: Trail, app: RefApp) -> None:
    app.set_faults()
    before = len(trail.records())
    result = PromotionGateProvider().create(_props(trail, app.url))
    assert result.outs is not None and result.outs["approvedColor"] == "green"
    rec = _outcome(trail, before)
    assert (rec["result"], rec["to"], rec["error"]) == ("ok", "green", None)
