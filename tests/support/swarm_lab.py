"""The 3-node Swarm lab as a fixture (tools/swarm_lab.py): up with the test images loaded, down after.

Registered in tests/conftest.py (`pytest_plugins`). Module-scoped: each test module gets a lab
of its own and leaves nothing behind (`leftovers()` is asserted empty on the way out).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import missing, require_docker, require_tool
from tools.swarm_lab import Lab

#: The images the Swarm tests run: the reference app, the ci stack's nginx and Prometheus (the
#: auto-scaler's signal).
LAB_IMAGES = ("paper-trading-reference-app:test", "paper-trading-ci/nginx:1.30.6",
              "paper-trading-ci/prometheus:2.42")
#: The datastores' images (Pulumi.swarmlab.yaml), loaded only into the data node: they run nowhere else.
DATA_IMAGES = ("paper-trading-ci/postgres:15", "paper-trading-ci/redis:7.0", "paper-trading-ci/rabbitmq:3.10")


@pytest.fixture(scope="module")
def swarm_lab() -> Iterator[Lab]:
    for tool in ("ip", "nsenter", "unshare", "dockerd", "docker", "nft"):
        require_tool(tool)
    require_docker()
    box = Lab()
    if not box.can_run():
        missing("the swarm lab needs root")
    try:
        box.up()
        box.load(list(LAB_IMAGES))
        box.load(list(DATA_IMAGES), label="data")
        yield box
    finally:
        box.down()
    assert box.leftovers() == []
