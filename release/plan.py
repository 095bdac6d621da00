"""Releases go to the idle color only: what the program learns of the live color before it builds.

Blue/green is only safe if the color that serves traffic is never changed in place. The
program learns two things before it builds any app container, both from the stack's own
previous outputs (read through the engine's built-in `readStackOutputs`, a self stack
reference, so it works the same under `pulumi preview` in a PR check and under `pulumi up`):

- which color is live: `activeColor`, which moves only after the switch was confirmed (a
  failed gate or switch leaves the previous outputs, so the previous live color);
- what each color runs: `releases`, per color its image, replica count and a fingerprint of
  everything its containers are built from (the settings they read and the code that builds
  them).

With that, `plan` decides:

- the live color's own changes are refused at preview (`ReleaseRefused`): a new image
  (`deployment.<live>.image`) or fewer replicas. The message names the key and the release
  procedure: set it on the idle color, flip `activeColor`, the old color follows later;
- changes both colors share (database, exchange keys, workers, app settings, the program's
  container code) reach the idle color only: the live color's containers are *pinned*
  (`ignore_changes=["*"]`: the engine keeps their recorded inputs, so they are neither
  replaced nor updated) and follow in that color's next release, once it is idle;
- scaling the live color out stays allowed (new containers, none replaced), but not while a
  shared change is pending for it: the new replicas would run the change unchecked.

What the outputs say can be stale (an emergency switch moves traffic behind the stack's back),
so `release.guard` checks the proxy itself before any container changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import pulumi
from pulumi.runtime import invoke

from contract import APP_ROLE, COLOR_LABEL, ROLE_LABEL
from settings import COLORS, Color, Settings, other_color

#: The engine's built-in invoke: every resource's saved outputs, by URN.
READ_STACK_STATE = "pulumi:pulumi:readStackResourceOutputs"
#: `kind` markers of the dynamic resources read back (release/routing/base.py, release_guard.py).
SWITCH_KIND = "paper-trading:routing-switch"
RECORD_KIND = "paper-trading:release-record"
CONTAINER_TYPE = "docker:index/container:Container"
#: Labels every app container carries (stack/common.py, stack/app.py).
#: The fingerprint of a release nobody recorded (a stack older than release records).
UNRECORDED = "unrecorded"


class ReleaseRefused(ValueError):
    """A change that would reach the live color in place; `key` names the setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class ColorRelease:
    """What one color runs: enough to tell a change, never a secret."""

    image: str
    replicas: int
    fingerprint: str

    def as_output(self) -> dict[str, Any]:
        return {"image": self.image, "replicas": self.replicas, "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class ReleasePlan:
    """The decision for one run of the program."""

    #: The live color, as the last confirmed switch left it (None: nothing was ever promoted).
    live: Color | None
    #: Colors whose existing containers this run may replace or delete (the pinned live color's
    #: new replicas, a scale-out, are created only: never listed).
    changing: tuple[Color, ...]
    #: What each color runs after this run (the pinned live color keeps its recorded release).
    releases: dict[Color, ColorRelease]
    #: Human notes for the preview (a shared change deferred on the live color).
    notes: tuple[str, ...] = field(default=())

    def pinned(self, color: Color) -> bool:
        """The live color's containers keep their recorded inputs (engine `ignore_changes`)."""
        return color == self.live


@dataclass(frozen=True)
class Previous:
    """What the saved state says: the live color and each color's release (None: not recorded)."""

    live: Color | None = None
    releases: Mapping[Color, ColorRelease | None] = field(default_factory=dict)
    #: The images the live color's app containers were created from (their saved inputs).
    live_images: frozenset[str] = frozenset()


def read_previous() -> Previous:
    """This stack's saved state (an empty `Previous` for a stack never deployed).

    Raises when the engine cannot answer: without the state the program cannot tell which
    color is live, so it must not build (fail closed).
    """

    name = f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
    try:
        result = invoke(READ_STACK_STATE, {"stackName": name})
    except Exception as exc:
        raise RuntimeError(
            f"cannot read this stack's saved state ({name}): {exc}; without it the program cannot "
            "tell which color is live, so it refuses to build"
        ) from exc
    value = getattr(result, "value", None) or {}
    outputs = value.get("outputs") if isinstance(value, Mapping) else None
    return previous_from_state(outputs if isinstance(outputs, Mapping) else {})


def previous_from_state(resources: Mapping[str, Any]) -> Previous:
    """`Previous` from `{urn: {"type", "outputs"}}`; unreadable records are errors, never guesses."""
    live: Color | None = None
    releases: dict[Color, ColorRelease | None] = {}
    images: dict[str, set[str]] = {}
    for urn, entry in resources.items():
        outputs = entry.get("outputs") if isinstance(entry, Mapping) else None
        if not isinstance(outputs, Mapping):
            continue
        kind = outputs.get("kind")
        if entry.get("type") == CONTAINER_TYPE:
            tags = {str(item.get("label")): str(item.get("value")) for item in outputs.get("labels") or ()
                    if isinstance(item, Mapping)}
            if tags.get(ROLE_LABEL) == APP_ROLE and tags.get(COLOR_LABEL) in COLORS:
                images.setdefault(tags[COLOR_LABEL], set()).add(str(outputs.get("image")))
        elif kind == SWITCH_KIND:
            color = outputs.get("liveColor")
            live = cast(Color, color) if color in COLORS else None
        elif kind == RECORD_KIND:
            color = outputs.get("color")
            if color not in COLORS:
                raise ValueError(f"release record {urn} names no color ({color!r}); refusing to guess")
            try:
                releases[cast(Color, color)] = ColorRelease(
                    str(outputs["image"]), int(outputs["replicas"]), str(outputs["fingerprint"]))
            except (KeyError, TypeError, ValueError):
                raise ValueError(
                    f"release record {urn} is unreadable ({dict(outputs)!r}); refusing to guess what "
                    f"{color} runs"
                ) from None
    return Previous(live=live, releases=releases,
                    live_images=frozenset(images.get(live, ())) if live is not None else frozenset())


def _procedure(live: Color) -> str:
    idle = other_color(live)
    return (
        f"{live} is live (it serves traffic now) and is never changed in place. Release to the idle "
        f"color instead: set deployment.{idle}.* (or the shared setting), run `pulumi up` (the gate "
        f"checks {idle}), then set deployment.activeColor={idle} and `pulumi up` to flip; {live} "
        "follows in the next release, once it is idle"
    )


def plan(settings: Settings, previous: Previous, fingerprint: Callable[[Color], str]) -> ReleasePlan:
    """Decide what this run may change; raise `ReleaseRefused` for a change to the live color.

    `fingerprint(color)` digests everything the target builds that color's instances from
    (`stack.app.color_fingerprint` on the single Docker host): a change of it is a release.
    """
    live = previous.live
    current = {
        color: ColorRelease(
            settings.deployment.color(color).image,
            settings.deployment.color(color).replicas,
            fingerprint(color),
        )
        for color in COLORS
    }
    before = {color: previous.releases.get(color) for color in COLORS}
    notes: list[str] = []
    releases = dict(current)
    if live is not None:
        was = before[live]
        now = current[live]
        if was is None:
            # A stack deployed before release records existed: what the live containers were
            # created from is unknown beyond their image. Pinned all the same; recorded as
            # unknown, so it counts as changed until its next release on the idle side.
            images = previous.live_images
            if images and images != {now.image}:
                raise ReleaseRefused(
                    f"deployment.{live}.image",
                    f"refused: deployment.{live}.image is {now.image!r} but {live} runs "
                    f"{', '.join(sorted(images))}. " + _procedure(live),
                )
            was = ColorRelease(now.image, now.replicas, UNRECORDED)
            notes.append(f"{live} is live and had no release record: pinned, recorded as {UNRECORDED}")
        if was.image != now.image:
            raise ReleaseRefused(
                f"deployment.{live}.image",
                f"refused: deployment.{live}.image changed from {was.image!r} to {now.image!r}. "
                + _procedure(live),
            )
        if now.replicas < was.replicas:
            raise ReleaseRefused(
                f"deployment.{live}.replicas",
                f"refused: deployment.{live}.replicas went down from {was.replicas} to {now.replicas}: "
                "removing replicas of the live color drops the connections they serve. "
                + _procedure(live),
            )
        if now.replicas > was.replicas and now.fingerprint != was.fingerprint:
            raise ReleaseRefused(
                f"deployment.{live}.replicas",
                f"refused: deployment.{live}.replicas goes up from {was.replicas} to {now.replicas} "
                f"while a change to what {live} runs is pending (shared settings or the program): "
                "the new replicas would serve it unchecked. Scale out in an up of its own, or "
                + _procedure(live),
            )
        if now.fingerprint != was.fingerprint and was.fingerprint != UNRECORDED:
            notes.append(
                f"{live} is live: its containers keep running what they run (release "
                f"{was.fingerprint[:12]}); the shared change reaches {live} in its next release, once "
                "it is idle"
            )
        releases[live] = ColorRelease(was.image, now.replicas, was.fingerprint)
    changing = tuple(
        color for color in COLORS
        if color != live and (before[color] is None or before[color] != current[color])
    )
    return ReleasePlan(live=live, changing=changing, releases=releases, notes=tuple(notes))
