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
- `cli` (+ `__main__`): the emergency CLI, `python -m release.routing switch|show ...`.

The same code serves three callers: the Pulumi dynamic resource (`Routing`), the
emergency CLI for when the engine is unavailable, and the Docker tests and benchmark. The
package's face is what the program and the benchmark use; everything else is imported from
its module.
"""

from __future__ import annotations

from release.routing.base import COLOR_HEADER, Endpoint, RoutingError, SwitchResult
from release.routing.docker_side import current, live_color_of
from release.routing.provider import Routing, RoutingArgs, RoutingProvider
from release.routing.switching import switch

__all__ = [
    "COLOR_HEADER", "Endpoint", "Routing", "RoutingArgs", "RoutingError", "RoutingProvider", "SwitchResult",
    "current", "live_color_of", "switch",
]
