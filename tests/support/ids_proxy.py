"""The real nginx running the rendered prod config with the IDS's access-log file, for fail2ban to read."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from render.nginx import render_routing
from tests.support import IN_CI, require_tool
from tests.support.fakes.validation_servers import free_port, wait_port
from tests.support.fidelity_nginx import (
    CONF_FILE,
    Edit,
    Ports,
    apply,
    loopback_edits,
    prod_settings,
    rendered_file,
)

CLIENTS = ("scanner", "brute", "injector", "clean", "allowed", "burster", "spoofer")

@dataclass(frozen=True)
class Client:
    name: str
    netns: str
    address: str  # in the namespace
    host_address: str  # the host end of its veth pair

def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)

@pytest.fixture(scope="module")
def clients() -> Iterator[dict[str, Client]]:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("required in CI: root (network namespaces)")
        pytest.skip("needs root: network namespaces and veth pairs")
    require_tool("ip")
    run = secrets.token_hex(3)
    # One private /24 per run (10.<64..127>.<random>.0): a /30 per client.
    net = f"10.{64 + secrets.randbelow(64)}.{secrets.randbelow(256)}"
    made: dict[str, Client] = {}
    try:
        for index, name in enumerate(CLIENTS):
            netns, host_if, ns_if = f"ptg-{run}-{index}", f"ptg{run}{index}h", f"ptg{run}{index}n"
            host_address, address = f"{net}.{4 * index + 1}", f"{net}.{4 * index + 2}"
            _ip("netns", "add", netns)
            made[name] = Client(name, netns, address, host_address)
            _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            _ip("link", "set", ns_if, "netns", netns)
            _ip("addr", "add", f"{host_address}/30", "dev", host_if)
            _ip("link", "set", host_if, "up")
            _ip("-n", netns, "addr", "add", f"{address}/30", "dev", ns_if)
            _ip("-n", netns, "link", "set", ns_if, "up")
            _ip("-n", netns, "link", "set", "lo", "up")
        yield made
    finally:
        for client in made.values():
            # Deleting the namespace deletes its veth end, and with it the host's end.
            subprocess.run(["ip", "netns", "del", client.netns], capture_output=True, timeout=20)

def _start_proxy(
    root: Path, clients: dict[str, Client], upstream: int
) -> tuple[subprocess.Popen[bytes], int]:
    import trustme

    nginx = require_tool("nginx")
    ca = trustme.CA()
    leaf = ca.issue_cert(prod_settings().server.host)
    for folder in ("tls", "cache", "routing", "acme"):
        (root / folder).mkdir()
    (root / "tls" / "fullchain.pem").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    (root / "tls" / "privkey.pem").write_bytes(leaf.private_key_pem.bytes())
    # Blue live (the app answers), as after a promotion.
    (root / "routing" / "routing.conf").write_text(render_routing("blue", "green"))
    picked: list[int] = []
    while len(picked) < 4:
        port = free_port()
        if port not in picked:
            picked.append(port)
    ports = Ports(*picked)
    conf = rendered_file(CONF_FILE)
    assert "access_log /var/log/paper-trading/access.log ids;" in conf, "no access-log file"
    public = f"listen 127.0.0.1:{ports.https} ssl default_server;"
    outside = "".join(
        f"\n        listen {c.host_address}:{ports.https} ssl default_server;" for c in clients.values()
    )
    conf = apply(conf, [
        *loopback_edits(root, ports, {"blue": upstream, "green": upstream}),
        Edit(public, public + outside, 1),  # the public listener, also on the veth addresses
    ])
    (root / "nginx.conf").write_text(conf)
    base = [nginx, "-e", str(root / "error.log"), "-p", str(root), "-c", str(root / "nginx.conf")]
    checked = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    proc = subprocess.Popen(
        [*base, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_port(ports.https)
    return proc, ports.https
