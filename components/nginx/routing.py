"""The routing include: which color is live and which one the preview listener shows.

It is the only file that changes on a blue/green switch. It holds two `map`s and
nothing else, so writing it and reloading nginx is the whole switch. `none` means
"nothing promoted": the listener answers 503 rather than guess.
"""

from __future__ import annotations

from ..config import Color

ROUTING_DIR = "/etc/paper-trading/nginx/routing"
ROUTING_PATH = f"{ROUTING_DIR}/routing.conf"
NONE = "none"


def render_routing(live: Color | None, preview: Color | None) -> str:
    """The routing include for `live`/`preview` (None -> `none`, answered with 503)."""
    for role, value in (("live", live), ("preview", preview)):
        if value is not None and value not in ("blue", "green"):
            raise ValueError(f"{role} color must be blue, green or None, not {value!r}")
    return (
        "# Routing: written by the routing resource, reloaded with `nginx -s reload`.\n"
        f'map $host $live_color {{ default "{live or NONE}"; }}\n'
        f'map $host $preview_default_color {{ default "{preview or NONE}"; }}\n'
    )
