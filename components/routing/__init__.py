"""The blue/green switch: a resource that owns which color the live proxy serves.

The proxy reaches both colors by their DNS aliases; which one is live is the name
of a marker file in the running proxy's routing directory, tested by nginx per
request (see `nginx/routing.py`). The switch renames that marker (one exec, one
atomic rename(2), no reload), confirms through the public listener that responses
carry the new `X-Deployment-Color`, hands the background work over, and runs the
post-promotion checks; if any of that fails it switches straight back and fails.

One concern per module:

- `base`: the error, the endpoint, the result and the shared constants;
- `docker_side`: the Docker Engine side (find the proxy, rename the markers, the lock, the drain);
- `listener`: observe and confirm through the public listener, the post-promotion checks;
- `switching`: the algorithm (apply, confirm, handoff, checks, switch back, audit);
- `provider`: the dill-pickled dynamic provider, `RoutingArgs` and the `Routing` component;
- `cli` (+ `__main__`): the emergency CLI, `python -m components.routing switch|show ...`.

The same code serves three callers: the Pulumi dynamic resource (`Routing`), the
emergency CLI for when the engine is unavailable, and the Docker tests and benchmark.
Every public name stays importable as `components.routing.X`.
"""

from __future__ import annotations

from ..nginx.routing import ROUTING_DIR, ROUTING_PATH  # re-exported for callers
from .base import (
    COLOR_HEADER,
    CONFIRM_SETTLE_S,
    CONFIRM_STREAK,
    NONE,
    SWITCH_INPUTS,
    SWITCH_KIND,
    Checker,
    Endpoint,
    RoutingError,
    SwitchResult,
)
from .cli import cli_auditor, main
from .docker_side import (
    LOCK_STALE_S,
    LOCK_WAIT_S,
    RELEASE_SCRIPT,
    SWAP_SCRIPT,
    Served,
    current,
    docker_client,
    drain,
    find_proxy,
    live_color_of,
    lock_owner,
    read_file,
    served,
    swap_env,
    swap_markers,
    write_file,
)
from .listener import (
    POST_PROMOTION_CATEGORIES,
    PUBLIC_LISTENER_SKIPS,
    confirm,
    observe,
    post_promotion_checker,
    validation_checks,
)
from .provider import Routing, RoutingArgs, RoutingProvider, RoutingSwitch
from .switching import switch

__all__ = [
    "COLOR_HEADER", "CONFIRM_SETTLE_S", "CONFIRM_STREAK", "LOCK_STALE_S", "LOCK_WAIT_S", "NONE",
    "POST_PROMOTION_CATEGORIES", "PUBLIC_LISTENER_SKIPS", "ROUTING_DIR", "ROUTING_PATH", "RELEASE_SCRIPT",
    "SWAP_SCRIPT",
    "SWITCH_INPUTS", "SWITCH_KIND", "Checker", "Endpoint", "Routing", "RoutingArgs", "RoutingError",
    "RoutingProvider", "RoutingSwitch", "Served", "SwitchResult", "cli_auditor", "confirm", "current",
    "docker_client", "drain", "find_proxy", "live_color_of", "lock_owner", "main", "observe",
    "post_promotion_checker", "read_file", "served", "swap_env", "swap_markers", "switch",
    "validation_checks", "write_file",
]
