"""The release guard: the proxy itself must agree that no color about to change is live.

`release.plan` learns the live color from the stack's previous outputs. They can be
stale: an emergency switch (`python -m release.routing`) moves traffic behind the stack's
back. Every app container depends on this resource, so the engine checks it first, at
`pulumi preview` and at `pulumi up`, before it replaces any of them: its `check` reads which
color the proxy serves (its routing markers, through the Docker API) and refuses when that
color is one this run would replace. No proxy container: nothing serves traffic. The Docker
Engine unreachable while a color is about to change: refused (fail closed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import docker.errors
import pulumi
import pulumi.dynamic as dyn

from release.dynamic import StateProvider
from release.plan import RECORD_KIND
from release.routing.docker_side import docker_client, served

GUARD_KIND = "paper-trading:release-guard"


def served_color(proxy_container_name: str, client: Any = None) -> str | None:
    """The color the proxy serves from now ("none" before a promotion); None without a proxy container."""


    client = client or docker_client()
    try:
        container = client.containers.get(proxy_container_name)
    except docker.errors.NotFound:
        return None
    if container.status != "running":
        return None
    return served(container).live


def problems(props: dict[str, Any], client: Any = None) -> list[tuple[str, str]]:
    """(property, reason) for each reason to refuse these inputs; [] when nothing live changes."""
    changing = [str(color) for color in props.get("changing") or ()]
    if not changing:
        return []
    proxy = str(props.get("proxyContainerName") or "")
    if not proxy:
        return [("proxyContainerName", "the proxy container name is missing: which color is live is unknown")]
    try:
        serving = served_color(proxy, client)
    except Exception as exc:  # noqa: BLE001 - any failure to look is a refusal (fail closed)
        return [("changing", (
            f"cannot read which color proxy {proxy!r} serves ({type(exc).__name__}: {exc}), and this run "
            f"would replace containers of {', '.join(changing)}: refused rather than risk the live color"
        ))]
    if serving in changing:
        recorded = props.get("recordedLive")
        return [("changing", (
            f"proxy {proxy!r} serves {serving}, but this run would replace {serving}'s containers: the "
            f"stack's last release made {recorded or 'no color'} live, so traffic was moved outside "
            f"`pulumi up` (an emergency switch?). Adopt it first: set deployment.activeColor={serving} "
            f"with no other change and `pulumi up` (the gate checks {serving}), or switch traffic back; "
            "then release to the idle color"
        ))]
    return []


class ReleaseGuardProvider(StateProvider):
    """`check` runs on every preview and up, before any dependent app container is touched.

    What it was told last run (which colors changed) is no change of the deployment: only
    another proxy counts, so a no-op `up` stays one.
    """

    WATCHED = ("proxyContainerName",)
    ID_KEY = "proxyContainerName"

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dyn.CheckResult:
        failures = [dyn.CheckFailure(prop, reason) for prop, reason in problems(news)]
        return dyn.CheckResult(news, failures)


class ReleaseGuard(dyn.Resource):
    """Refuses (at check) a run that would replace containers of the color the proxy serves."""

    def __init__(
        self, name: str, *, proxy_container_name: str, recorded_live: str | None,
        changing: Sequence[str], opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "kind": GUARD_KIND,
            "proxyContainerName": proxy_container_name,
            "recordedLive": recorded_live,
            "changing": sorted(changing),
        }
        super().__init__(ReleaseGuardProvider(), name, props, opts)


class ReleaseRecordProvider(StateProvider):
    """Keeps what one color runs in the stack's state; the next run reads it (release/plan.py)."""

    WATCHED = ("color", "image", "replicas", "fingerprint")
    ID_KEY = "color"


class ReleaseRecord(dyn.Resource):
    """What `color` runs, saved once its containers are created or replaced (it depends on them)."""

    def __init__(
        self, name: str, *, color: str, image: str, replicas: int, fingerprint: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:

        props = {"kind": RECORD_KIND, "color": color, "image": image, "replicas": replicas,
                 "fingerprint": fingerprint}
        super().__init__(ReleaseRecordProvider(), name, props, opts)
