"""blackbox.yml: probes for readiness, the live color and certificate expiry.

`live_is_<color>` succeeds when the proxy's live listener answers with
`X-Deployment-Color: <color>` (the proxy adds it to every response, errors included),
so the live color is measured from what users get, not from config.
"""

from __future__ import annotations

from typing import Any

from settings import COLORS, Settings

from ._yaml import dump

# Redirects are never followed: a probe judges the answer of the listener it names. The
# key is `follow_redirects: false` (the HTTP client option); `no_follow_redirects` is
# deprecated in blackbox_exporter.

# Any answer counts: only the header decides which color is live (a 503 "none" matches neither).
_ANY_STATUS = [200, 204, 301, 302, 400, 401, 403, 404, 429, 500, 502, 503, 504]


def _tls(settings: Settings) -> dict[str, Any]:
    # Verification off on purpose: an expired or mismatched certificate must still be measured.
    return {"server_name": settings.server.host, "insecure_skip_verify": True}


def blackbox_config(settings: Settings) -> str:
    modules: dict[str, Any] = {
        "http_ready": {
            "prober": "http",
            "timeout": "5s",
            "http": {"valid_status_codes": [200], "preferred_ip_protocol": "ip4",
                     "follow_redirects": False},
        },
    }
    for color in COLORS:
        modules[f"live_is_{color}"] = {
            "prober": "http",
            "timeout": "5s",
            "http": {
                "valid_status_codes": _ANY_STATUS,
                "preferred_ip_protocol": "ip4",
                "follow_redirects": False,
                "headers": {"Host": settings.server.host},
                "fail_if_header_not_matches": [
                    {"header": "X-Deployment-Color", "regexp": f"^{color}$", "allow_missing": False},
                ],
                "tls_config": _tls(settings),
            },
        }
    modules["tls_expiry"] = {
        "prober": "tcp",
        "timeout": "5s",
        "tcp": {"tls": True, "tls_config": _tls(settings), "preferred_ip_protocol": "ip4"},
    }
    return dump({"modules": modules}, "blackbox.yml")
