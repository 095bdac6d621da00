"""The attack lab's fixtures: the firewall lab with 200 IPv6 clients (one /64 each), or with a
bridged uplink named br-lan. Here, not in tests/support: they take the name `lab`, which the
other firewall tests give to the plain lab (tests/support/firewall_lab.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import missing, require_tool
from tests.support.firewall_lab import HOST_SERVICE, OTHER, PROXY_HTTP, SSH, Lab, can_netns


def _lab(**kwargs: Any) -> Iterator[Lab]:
    reason = can_netns()
    if reason:
        missing(reason)
    require_tool("nft")
    require_tool("ip")
    box = Lab(**kwargs)
    try:
        box.up()
        box.publish({PROXY_HTTP: 8080, OTHER: 9000}, {})
        box.serve(box.container, f"{box.container_ip}:8080", f"{box.container_ip}:9000")
        box.serve(box.host, f"0.0.0.0:{HOST_SERVICE}", f"0.0.0.0:{SSH}", f":::{PROXY_HTTP}", f":::{SSH}")
        yield box
    finally:
        box.unload()
        box.down()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from _lab(v6_clients=200)


@pytest.fixture(scope="module")
def uplink_lab() -> Iterator[Lab]:
    """The host's outside interface is called br-lan (a bridged uplink, common on hosts)."""
    yield from _lab(uplink="br-lan")


@pytest.fixture
def clean(lab: Lab) -> Iterator[Lab]:
    lab.unload()
    yield lab
    lab.unload()
