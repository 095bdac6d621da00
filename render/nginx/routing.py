"""Which color is live and which one the preview listener shows: marker files, read per request.

The choice is the *name* of a marker file in the proxy's routing directory: `live-blue` or
`live-green` (none: nothing promoted), `preview-blue` or `preview-green`. Each app server
tests for its markers at the start of every request (`if (-f ...)`, one stat(2) each), so
a switch is one rename(2) of `live-blue` to `live-green`: atomic (at every instant exactly
one of them exists), no config change, no `nginx -t`, no reload and no worker churn; the
next request already sees it. `open_file_cache off` in those servers keeps nginx from
answering the test from a cache.

With no marker, the routing include decides: the proxy ships it with `none` for both
(the live listener answers 503 rather than guess) and the switch never rewrites it.
"""

from __future__ import annotations

from settings import Color

#: The marker files: a writable volume of the proxy's own (removed with the container), beside
#: its read-only configuration volume (a volume nested in a read-only one cannot be mounted).
ROUTING_DIR = "/etc/paper-trading/routing"
#: The include with the defaults that apply while no marker exists (the proxy's bootstrap: none).
#: Never rewritten, so it lives with nginx.conf in the read-only configuration volume.
ROUTING_PATH = "/etc/paper-trading/nginx/routing.conf"
NONE = "none"
#: Marker roles: the live listener's color and the preview listener's default.
ROLES = ("live", "preview")
COLORS = ("blue", "green")
#: The marker's content; its name is the choice, so the content never says a color
#: (a rename carries the content along).
MARKER_TEXT = "routing marker: its file name is the choice (renamed atomically by the routing switch)\n"
#: The nginx variable each role sets per request, and the include's default it starts from.
VARIABLES = {"live": ("$live_color", "$routing_live_default"),
             "preview": ("$preview_default_color", "$routing_preview_default")}


def _check(live: Color | None, preview: Color | None) -> None:
    for role, value in (("live", live), ("preview", preview)):
        if value is not None and value not in COLORS:
            raise ValueError(f"{role} color must be blue, green or None, not {value!r}")


def render_routing(live: Color | None, preview: Color | None) -> str:
    """The routing include: the colors that apply while no marker exists (None -> `none`, a 503)."""
    _check(live, preview)
    return (
        "# Routing defaults: apply only while the routing directory holds no marker file\n"
        "# (live-<color>, preview-<color>); the switch renames markers and never rewrites this.\n"
        f'map $host {VARIABLES["live"][1]} {{ default "{live or NONE}"; }}\n'
        f'map $host {VARIABLES["preview"][1]} {{ default "{preview or NONE}"; }}\n'
    )


def marker_path(role: str, color: str, routing_dir: str = ROUTING_DIR) -> str:
    return f"{routing_dir}/{role}-{color}"


def render_markers(
    live: Color | None, preview: Color | None, routing_dir: str = ROUTING_DIR
) -> dict[str, str]:
    """The marker files a switch to `live`/`preview` leaves in the routing directory (path -> content)."""
    _check(live, preview)
    return {marker_path(role, color, routing_dir): MARKER_TEXT
            for role, color in (("live", live), ("preview", preview)) if color is not None}


def routing_directives(role: str, routing_dir: str = ROUTING_DIR) -> list[str]:
    """Server-level lines that set the role's color for each request from its markers.

    They must come before anything that reads the variable (nginx runs server-level
    `set`/`if` in order, in the server rewrite phase).
    """
    variable, default = VARIABLES[role]
    # Each test is its own stat(2): a rename of live-green to live-blue between testing blue
    # (not there yet) and testing green (gone already) would leave the default. Testing the
    # first color again after the last closes that window: with one rename, one of the three
    # tests always sees the marker (the first test before the rename, or a later one after it).
    order = [*COLORS, *COLORS[:-1]]
    return [
        f"# {role} color: the marker's name, tested per request (a switch renames it; no reload)",
        "open_file_cache off;",
        f"set {variable} {default};",
        *[f"if (-f {marker_path(role, color, routing_dir)}) {{ set {variable} {color}; }}"
          for color in order],
    ]
