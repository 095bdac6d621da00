"""Version floors, kept in one place.

The proxy is the only internet-facing component, so its nginx release has a floor: the
oldest release this project accepts. The `proxy-image-current` policy (policies/versions.py)
refuses a proxy image whose tag names an older release or no exact release at all
(`nginx:latest`, `nginx:alpine`, `nginx:1.30-alpine`, a bare digest). The default pin in
`settings.Images` and the ci stack's stand-in must both satisfy it; tests check that.

Raise the floor when nginx publishes a security advisory for the stable line
(https://nginx.org/en/security_advisories.html), then move the pins above it. This module is
plain Python (no Pulumi import), so the policy pack can read it without the program.
"""

from __future__ import annotations

import re

#: The oldest nginx release the proxy may run: 1.30.6, the first stable release without a
#: published advisory at the time of writing. 1.30.4 fixed a buffer overflow in `map` with regular
#: expressions (CVE-2026-42533), which the proxy's request filter uses; gixy-ng's nginx CVE data
#: lists CVE-2026-93479 (buffer overflow evaluating string expressions with variables) for
#: 1.30.0-1.30.5, fixed in 1.30.6 (tests/stack/test_proxy_scanners.py checks gixy agrees).
NGINX_FLOOR: tuple[int, int, int] = (1, 30, 6)

#: A tag that names one exact release: `1.30.6`, `1.30.6-alpine`, `1.30.6-alpine-slim`, `1.30.6-2`.
_EXACT_RELEASE = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:[-_+.][0-9A-Za-z._+-]*)?$")


def dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)


def image_tag(image: str) -> str | None:
    """The tag of an image reference (`registry:5000/nginx:1.30.6-alpine@sha256:..` -> `1.30.6-alpine`)."""
    ref = image.strip().split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    return last.rsplit(":", 1)[1] or None


def image_repository_name(image: str) -> str:
    """The last path segment of the repository, lower case (`ghcr.io/x/nginx:1` -> `nginx`)."""
    ref = image.strip().split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    return last.split(":", 1)[0].lower()


def release_in_tag(image: str) -> tuple[int, int, int] | None:
    """The exact release an image's tag names, or None when the tag names none.

    A moving tag (`latest`, `alpine`, `stable`, `1.30`, `1.30-alpine`) or a bare digest says
    nothing about which release runs, so it has no version here.
    """
    tag = image_tag(image)
    match = _EXACT_RELEASE.match(tag) if tag else None
    if match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def nginx_floor_problem(image: str) -> str | None:
    """Why `image` may not run the proxy, or None when it names a release at or above the floor."""
    version = release_in_tag(image)
    floor = dotted(NGINX_FLOOR)
    if version is None:
        return (f"proxy image {image!r} names no exact nginx release in its tag, so its version "
                f"cannot be checked against the floor {floor}; pin it as <repo>:<x.y.z>[-variant]")
    if version < NGINX_FLOOR:
        return (f"proxy image {image!r} runs nginx {dotted(version)}, older than the floor {floor} "
                "(contract/versions.py)")
    return None
