"""Release rules the scenario tests in tests/release/test_release.py do not pin down, and the
deploy record's diff.

What a color's fingerprint covers (a change to any of it is a release), how a stack without
release records is judged, which saved records are errors rather than guesses, and which
inputs make a new `deploy` record.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from contract import APP_ROLE, COLOR_LABEL, ROLE_LABEL
from release.plan import (
    CONTAINER_TYPE,
    RECORD_KIND,
    SWITCH_KIND,
    Previous,
    ReleaseRefused,
    previous_from_state,
)
from release.plan import (
    plan as plan_release,
)
from release.record import DeployRecordProvider
from stack.app import CONTAINER_CODE, color_fingerprint
from tests.support.docker_render import test_settings as base_settings

STACK = Path(__file__).resolve().parents[2] / "stack"


def plan(s: Any, previous: Previous) -> Any:
    """The release plan for `s` on the single Docker host (its fingerprint: `stack.app`)."""
    return plan_release(s, previous, lambda color: color_fingerprint(s, color))


@pytest.fixture(scope="module")
def settings() -> Any:
    return base_settings("paper-trading-release-rules")


@pytest.mark.parametrize("module", ["app.py", "carrier.py", "common.py"])
def test_the_code_that_builds_a_container_is_part_of_the_fingerprint(
    settings: Any, tmp_path: Path, module: str
) -> None:
    for name in CONTAINER_CODE:
        shutil.copy(STACK / name, tmp_path / name)
    before = color_fingerprint(settings, "blue", tmp_path)
    assert before == color_fingerprint(settings, "blue", STACK)
    with (tmp_path / module).open("a") as handle:
        handle.write("\n# a change to the container code\n")
    assert color_fingerprint(settings, "blue", tmp_path) != before


@pytest.mark.parametrize("change", [
    {"user": "1234:1234"},
    {"limits": {"memory_mb": 768}},
], ids=lambda change: next(iter(change)))
def test_what_the_container_runs_as_is_part_of_the_fingerprint(settings: Any, change: dict[str, Any]) -> None:
    key, value = next(iter(change.items()))
    current = getattr(settings.app, key)
    new = current.model_copy(update=value) if hasattr(current, "model_copy") else value
    changed = settings.model_copy(update={"app": settings.app.model_copy(update={key: new})})
    assert color_fingerprint(changed, "blue") != color_fingerprint(settings, "blue")


def test_an_unrecorded_live_color_running_two_images_is_refused(settings: Any) -> None:
    """Without a release record, the live containers' images must all be the configured one."""
    image = settings.deployment.blue.image
    with pytest.raises(ReleaseRefused) as refused:
        plan(settings, Previous(live="blue", live_images=frozenset({image, "paper-trading-app:0.9"})))
    assert refused.value.key == "deployment.blue.image"
    assert "paper-trading-app:0.9" in str(refused.value)


def _container(image: str, **labels: str) -> dict[str, Any]:
    return {"type": CONTAINER_TYPE, "outputs": {
        "image": image, "labels": [{"label": k, "value": v} for k, v in labels.items()]}}


def test_the_live_images_are_the_live_colors_app_containers_only() -> None:
    state = {
        "urn:switch": {"type": "x", "outputs": {"kind": SWITCH_KIND, "liveColor": "blue"}},
        "urn:blue-1": _container("app:1", **{ROLE_LABEL: APP_ROLE, COLOR_LABEL: "blue"}),
        "urn:green-1": _container("app:2", **{ROLE_LABEL: APP_ROLE, COLOR_LABEL: "green"}),
        "urn:no-color": _container("app:3", **{ROLE_LABEL: APP_ROLE}),
        "urn:odd-color": _container("app:4", **{ROLE_LABEL: APP_ROLE, COLOR_LABEL: "purple"}),
        "urn:redis": _container("redis:7", **{ROLE_LABEL: "redis", COLOR_LABEL: "blue"}),
    }
    previous = previous_from_state(state)
    assert previous.live == "blue" and previous.live_images == frozenset({"app:1"})


@pytest.mark.parametrize("color", ["purple", "", "none", 1])
def test_a_release_record_for_no_known_color_is_an_error(color: Any) -> None:
    state = {"urn:rec": {"type": "x", "outputs": {"kind": RECORD_KIND, "color": color, "image": "a:1",
                                                 "replicas": 1, "fingerprint": "f"}}}
    with pytest.raises(ValueError, match="names no color"):
        previous_from_state(state)


# --------------------------------------------------------------------------- the deploy record


DEPLOY = {"kind": "paper-trading:deploy-record", "stack": "prod", "fingerprint": "f1", "liveColor": "blue",
          "startedAt": 1.0, "audit": None}


@pytest.mark.parametrize(("change", "new_record"), [
    ({}, False),
    ({"startedAt": 2.0}, False),
    ({"liveColor": "green"}, True),
    ({"fingerprint": "f2"}, True),
    ({"stack": "dev"}, True),
], ids=["nothing", "startedAt", "liveColor", "fingerprint", "stack"])
def test_a_deploy_record_is_written_when_the_deployment_changed(
    change: dict[str, Any], new_record: bool
) -> None:
    diff = DeployRecordProvider().diff("deploy-prod", dict(DEPLOY), {**DEPLOY, **change})
    assert diff.changes is new_record
