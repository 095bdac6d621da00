"""Releases go to the idle color only (issue 20, item 1): the plan, and the real program under mocks.

The saved state the program reads back is given as the engine's `readStackResourceOutputs`
answers it; the program then pins the live color, refuses a change of its own, and lets the
idle color change.
"""

from __future__ import annotations

from typing import Any

import pytest

from release.plan import (
    RECORD_KIND,
    SWITCH_KIND,
    UNRECORDED,
    ColorRelease,
    Previous,
    ReleaseRefused,
    previous_from_state,
)
from release.plan import (
    plan as plan_release,
)
from settings import COLORS
from stack.app import color_fingerprint
from tests.support import render_with, rendered
from tests.support.docker_render import test_settings as base_settings
from tools.render import evaluate, stack_config

DYNAMIC = "pulumi-python:dynamic:Resource"


def plan(s: Any, previous: Previous) -> Any:
    """The release plan for `s` on the single Docker host (its fingerprint: `stack.app`)."""
    return plan_release(s, previous, lambda color: color_fingerprint(s, color))


def settings(**deployment: Any) -> Any:
    """The test stack's settings with `deployment` fields replaced."""
    base = base_settings("paper-trading-release")
    data = base.deployment.model_dump()
    for key, value in deployment.items():
        color, _, field_ = key.partition("_")
        data[color][field_] = value
    return base.model_copy(update={"deployment": base.deployment.model_validate(data)})


def recorded(s: Any, live: str | None) -> Previous:
    """The state as a successful release of `s` with `live` promoted leaves it."""
    releases = {
        color: ColorRelease(s.deployment.color(color).image, s.deployment.color(color).replicas,
                            color_fingerprint(s, color))
        for color in COLORS
    }
    return Previous(live=live, releases=releases)  # type: ignore[arg-type]


def test_nothing_live_nothing_pinned() -> None:
    s = settings()
    decided = plan(s, Previous())
    assert decided.live is None
    assert [c for c in COLORS if decided.pinned(c)] == []
    assert decided.changing == ("blue", "green")


def test_a_new_image_on_the_live_color_is_refused_naming_the_key() -> None:
    before = settings()
    after = settings(blue_image="paper-trading-app:9.9")
    with pytest.raises(ReleaseRefused) as refused:
        plan(after, recorded(before, "blue"))
    assert refused.value.key == "deployment.blue.image"
    assert "deployment.green" in str(refused.value) and "activeColor=green" in str(refused.value)


def test_the_same_image_on_the_idle_color_is_a_release() -> None:
    before = settings()
    after = settings(green_image="paper-trading-app:9.9")
    decided = plan(after, recorded(before, "blue"))
    assert decided.pinned("blue") and not decided.pinned("green")
    assert decided.changing == ("green",)
    assert decided.releases["green"].image == "paper-trading-app:9.9"


def test_scaling_the_live_color_in_is_refused() -> None:
    before = settings(blue_replicas=3)
    with pytest.raises(ReleaseRefused) as refused:
        plan(settings(blue_replicas=2), recorded(before, "blue"))
    assert refused.value.key == "deployment.blue.replicas"


def test_scaling_the_live_color_out_is_allowed_and_replaces_nothing() -> None:
    before = settings(blue_replicas=1)
    decided = plan(settings(blue_replicas=3), recorded(before, "blue"))
    assert decided.pinned("blue")
    assert "blue" not in decided.changing
    assert decided.releases["blue"].replicas == 3


def test_a_shared_change_reaches_the_idle_color_only() -> None:
    before = settings()
    after = before.model_copy(update={"app": before.app.model_copy(update={"log_level": "debug"})})
    decided = plan(after, recorded(before, "green"))
    assert decided.pinned("green")
    assert decided.changing == ("blue",)
    # green keeps its recorded release (it is not rebuilt); blue runs the change.
    assert decided.releases["green"].fingerprint == color_fingerprint(before, "green")
    assert decided.releases["blue"].fingerprint == color_fingerprint(after, "blue")
    assert len(decided.notes) == 1 and decided.notes[0].startswith("green is live")


def test_scaling_out_with_a_pending_shared_change_is_refused() -> None:
    before = settings(green_replicas=1)
    changed = before.model_copy(update={"app": before.app.model_copy(update={"log_level": "debug"})})
    after = changed.model_copy(update={"deployment": settings(green_replicas=2).deployment})
    with pytest.raises(ReleaseRefused) as refused:
        plan(after, recorded(before, "green"))
    assert refused.value.key == "deployment.green.replicas"


def test_a_live_color_without_a_record_is_pinned_and_its_image_checked() -> None:
    s = settings()
    blue_image = s.deployment.blue.image
    decided = plan(s, Previous(live="blue", live_images=frozenset({blue_image})))
    assert decided.pinned("blue") and decided.releases["blue"].fingerprint == UNRECORDED
    with pytest.raises(ReleaseRefused):
        plan(settings(blue_image="paper-trading-app:9.9"),
             Previous(live="blue", live_images=frozenset({blue_image})))


def _state(live: str | None, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if live is not None:
        state["urn:switch"] = {"type": DYNAMIC, "outputs": {"kind": SWITCH_KIND, "liveColor": live}}
    for color, record in records.items():
        state[f"urn:release-{color}"] = {"type": DYNAMIC, "outputs": {"kind": RECORD_KIND, "color": color,
                                                                      **record}}
    return state


def test_previous_is_read_from_the_saved_state() -> None:
    previous = previous_from_state(_state("green", {
        "green": {"image": "a:1", "replicas": 2.0, "fingerprint": "f"},
    }))
    assert previous.live == "green"
    assert previous.releases["green"] == ColorRelease("a:1", 2, "f")
    assert previous.releases.get("blue") is None
    assert previous_from_state(_state("none", {})).live is None


def test_an_unreadable_record_is_an_error_not_a_guess() -> None:
    with pytest.raises(ValueError, match="unreadable"):
        previous_from_state(_state("blue", {"blue": {"image": "a:1"}}))


# --------------------------------------------------------------------------- the real program


def _program_state(stack: str, live: str) -> dict[str, Any]:
    """The state a release of `stack`'s committed config with `live` promoted would leave."""
    graph = rendered(stack)
    records: dict[str, dict[str, Any]] = {}
    for color in COLORS:
        (res,) = [r for r in graph.resources if r.name == f"release-{color}"]
        records[color] = {k: res.inputs[k] for k in ("image", "replicas", "fingerprint")}
    return _state(live, records)


def _app_containers(graph: Any, color: str) -> list[Any]:
    return [r for r in graph.containers
            if r.inputs.get("name", "").rsplit("-app-", 1)[-1].startswith(f"{color}-")]


def test_the_program_pins_the_live_color_and_guards_every_app_container() -> None:
    config, secrets = stack_config("ci")
    graph = evaluate("ci", config=config, secret_keys=secrets, state=_program_state("ci", "green"))
    (guard,) = [r for r in graph.resources if r.name == "release-guard"]
    assert guard.inputs["recordedLive"] == "green"
    for color in COLORS:
        containers = _app_containers(graph, color)
        assert containers
        for res in containers:
            assert guard.urn in res.options["dependsOn"], res.name
            assert res.options["ignoreChanges"] == (["*"] if color == "green" else []), res.name


def test_the_live_colors_carriers_and_file_volumes_are_pinned_the_idle_ones_not() -> None:
    """Issue 21, item 7: a shared change (a new exchange key) must neither rewrite the files the live
    color reads nor delete the volume it has mounted, so its carriers and volumes are pinned too."""
    config, secrets = stack_config("ci")
    graph = evaluate("ci", config=config, secret_keys=secrets, state=_program_state("ci", "green"))
    (guard,) = [r for r in graph.resources if r.name == "release-guard"]
    for color in COLORS:
        consumers = [r for r in _app_containers(graph, color)
                     if "paper-trading.carrier-for" not in r.label_map]
        carriers = [r for r in graph.containers if r.label_map.get("paper-trading.carrier-for")
                    in {c.inputs["name"] for c in consumers}]
        volumes = [r for r in graph.of_type("docker:index/volume:Volume")
                   if r.name.startswith(f"{color}-") and r.name.endswith("-files")]
        assert consumers and len(carriers) == len(consumers) == len(volumes), color
        for res in [*carriers, *volumes]:
            assert res.options["ignoreChanges"] == (["*"] if color == "green" else []), res.name
            assert guard.urn in res.options["dependsOn"], res.name
        for consumer in consumers:
            (mount,) = consumer.inputs["volumes"]
            assert mount["readOnly"] is True and consumer.inputs["readOnly"] is True, consumer.name
            assert mount["volumeName"] in {v.inputs["name"] for v in volumes}, consumer.name


def test_the_program_refuses_a_new_image_for_the_live_color_at_preview() -> None:
    state = _program_state("ci", "blue")
    config, secrets = stack_config("ci")
    import json

    deployment = json.loads(config["paper-trading:deployment"])
    deployment["blue"]["image"] = "paper-trading-reference-app:some-other-tag"
    config["paper-trading:deployment"] = json.dumps(deployment)
    with pytest.raises(Exception) as refused:
        evaluate("ci", config=config, secret_keys=secrets, state=state, preview=True)
    chain = [refused.value, refused.value.__cause__, refused.value.__context__]
    keys = [getattr(exc, "key", None) for exc in chain if exc is not None]
    assert "deployment.blue.image" in keys, refused.value


def test_a_fresh_stack_pins_nothing() -> None:
    graph = render_with("ci")
    for res in graph.containers:
        assert res.options["ignoreChanges"] == [], res.name


def test_scaling_a_color_changes_no_proxy_input() -> None:
    """The proxy (fixed name: a replace is an outage) must not depend on replica counts."""
    import json

    config, secrets = stack_config("ci")
    graphs = []
    for replicas in (1, 3):
        deployment = json.loads(config["paper-trading:deployment"])
        deployment["blue"]["replicas"] = replicas
        graphs.append(evaluate("ci", config={**config, "paper-trading:deployment": json.dumps(deployment)},
                               secret_keys=secrets))
    proxies = [[r for r in g.containers if r.inputs.get("name", "").endswith("-proxy")] for g in graphs]
    assert len(proxies[0]) == 1 and proxies[0][0].inputs == proxies[1][0].inputs
    blue = [len([r for r in _app_containers(g, "blue") if "paper-trading.carrier-for" not in r.label_map])
            for g in graphs]
    assert blue == [1, 3]
