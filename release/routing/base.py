"""What every part of the switch shares: the error, the endpoint, the result, the markers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from settings import Color

COLOR_HEADER = "X-Deployment-Color"
#: The value the live listener reports while nothing is promoted.
NONE = "none"
#: Consecutive fresh-connection responses that must show the new color, over at least
#: CONFIRM_SETTLE_S seconds (longer than nginx's 100 ms old/new worker overlap on a reload).
CONFIRM_STREAK = 3
CONFIRM_SETTLE_S = 0.3
#: Inputs whose change re-applies the routing (nothing ever forces a replace).
#: Marks the switch among dynamic resources (the `promotion-gated` policy looks for it).
SWITCH_KIND = "paper-trading:routing-switch"
SWITCH_INPUTS = ("liveColor", "previewColor", "proxyContainerId", "proxyContainerName", "renderedFiles")


class RoutingError(Exception):
    """A switch that did not happen (or was undone); the message says which and why.

    `hand_back_error`: set when the switch was undone but the background work could not be
    handed back to the color traffic went back to (`hand_back_to`: that color, or "none" on a
    first promotion): the failed candidate may still hold the lease and its consumers. The
    same text ends the message and is the error of the `rollback` audit record.
    """

    def __init__(self, message: str, *, hand_back_error: str | None = None,
                 hand_back_to: str | None = None) -> None:
        super().__init__(message)
        self.hand_back_error = hand_back_error
        self.hand_back_to = hand_back_to

    def __reduce__(self) -> Any:  # the fields survive pickling (the engine's dynamic-provider process)
        return (_routing_error, (str(self), self.hand_back_error, self.hand_back_to))


def _routing_error(message: str, hand_back_error: str | None, hand_back_to: str | None) -> RoutingError:
    return RoutingError(message, hand_back_error=hand_back_error, hand_back_to=hand_back_to)


@dataclass(frozen=True)
class Endpoint:
    """Where the switch is confirmed and checked: the proxy's public listener."""

    url: str
    ca_file: str | None = None
    insecure: bool = False
    host_header: str | None = None
    probe_path: str = "/health"

    def verify(self) -> bool | str:
        if self.insecure:
            return False
        return self.ca_file or True


@dataclass(frozen=True)
class SwitchResult:
    live: Color
    preview: Color | None
    previous_live: str | None
    switch_ms: float
    #: Milliseconds per step (find, swap..., confirm, handoff), for the benchmark and logs.
    steps: dict[str, float] = field(default_factory=dict)
    #: From the publish until the new color held the work (None: no handoff was asked for).
    handoff_ms: float | None = None
    #: The epoch the handoff published (None: no handoff).
    epoch: int | None = None


#: (endpoint, color) -> failure messages; empty means the checks passed.
Checker = Callable[[Endpoint, Color], list[str]]
