"""The blue/green switch: a resource that owns which color the live proxy serves.

The proxy reaches both colors by their DNS aliases; which one is live is the
routing include inside the running proxy container (see `nginx/routing.py`).
The switch writes that file, checks it with `nginx -t`, reloads nginx
gracefully, confirms through the public listener that responses carry the new
`X-Deployment-Color`, and runs the post-promotion checks; if the checks fail it
switches straight back and fails. A refused file is restored before anything
reloads, so traffic never sees it.

One concern per module:

- `base`: the error, the endpoint, the result and the shared constants;
- `docker_side`: the Docker Engine side (find the proxy, swap the file, test and reload, the lock);
- `listener`: observe and confirm through the public listener, the post-promotion checks;
- `switching`: the algorithm (apply, confirm, checks, switch back, audit);
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
    NGINX_PID,
    current,
    docker_client,
    find_proxy,
    live_color_of,
    lock_owner,
    read_file,
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
    "COLOR_HEADER", "CONFIRM_SETTLE_S", "CONFIRM_STREAK", "LOCK_STALE_S", "LOCK_WAIT_S", "NGINX_PID", "NONE",
    "POST_PROMOTION_CATEGORIES", "PUBLIC_LISTENER_SKIPS", "ROUTING_DIR", "ROUTING_PATH", "SWITCH_INPUTS",
    "SWITCH_KIND", "Checker", "Endpoint", "Routing", "RoutingArgs", "RoutingError", "RoutingProvider",
    "RoutingSwitch", "SwitchResult", "cli_auditor", "confirm", "current", "docker_client", "find_proxy",
    "live_color_of", "lock_owner", "main", "observe", "post_promotion_checker", "read_file", "switch",
    "validation_checks", "write_file",
]
