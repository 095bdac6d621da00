"""Probes beyond the attacks: UDP (published, direct routes, IPv6, other host addresses) and
invalid TCP packets, without and with the host guard."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support import render_with
from tests.support.firewall_lab import (
    HOST_SERVICE,
    PROXY_HTTP,
    SSH,
    TABLE,
    Lab,
    prod_ruleset,
)

# --------------------------------------------------------------------------- the bar's other probes

UDP_PROBE = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0)); s.settimeout(1.0)
s.sendto(b"ping", (sys.argv[2], int(sys.argv[3])))
try:
    print("echo" if s.recvfrom(64)[0] == b"ping" else "other")
except socket.timeout:
    print("timeout")
"""

UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
if ":" in sys.argv[1]:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); print("ready", flush=True)
while True:
    data, peer = s.recvfrom(64); s.sendto(data, peer)
"""

UDP_PUBLISHED, UDP_HOST = 5300, 5301


@pytest.fixture(scope="module")
def udp_lab(lab: Lab) -> Iterator[Lab]:
    """`-p 5300:5300/udp` (DNAT to a container echo), a UDP echo on the host, the host's
    second address (.6), and Docker < 28's FORWARD rule accepting a published container port
    by container address (direct routing), with the outside routing the container subnet."""
    lab.ns(lab.host, "nft", "-f", "-", input="\n".join([
        "table ip docker_emulation_extra {",
        "  chain prerouting { type nat hook prerouting priority dstnat; policy accept;",
        f"    udp dport {UDP_PUBLISHED} dnat to {lab.container_ip}:{UDP_PUBLISHED}", "  }",
        "}",
        # Docker's FORWARD (one chain: a drop in any base chain is final): by container address.
        f"insert rule ip docker_emulation forward oifname \"{lab.bridge}\" ip daddr {lab.container_ip} "
        f"meta l4proto {{ tcp, udp }} th dport {{ 8080, 9000, {UDP_PUBLISHED} }} accept comment \"extra\"",
        ""]))
    lab.ns(lab.host, "ip", "addr", "add", f"10.{lab.octet}.0.6/29", "dev", lab.uplink)
    lab.ns(lab.outside, "ip", "route", "add", f"172.31.{lab.octet}.0/24", "via", lab.host_ip)
    procs: list[subprocess.Popen[str]] = []
    try:
        for namespace, address, port in ((lab.container, lab.container_ip, UDP_PUBLISHED),
                                         (lab.host, "0.0.0.0", UDP_HOST), (lab.host, "::", UDP_HOST)):
            proc = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-c", UDP_ECHO,
                                     address, str(port)], stdout=subprocess.PIPE, text=True)
            procs.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield lab
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)
        lab.ns(lab.host, "nft", "delete", "table", "ip", "docker_emulation_extra", check=False)
        chain = json.loads(lab.ns(lab.host, "nft", "-j", "-a", "list", "chain", "ip", "docker_emulation",
                                  "forward").stdout)["nftables"]
        for item in chain:
            if item.get("rule", {}).get("comment") == "extra":
                lab.ns(lab.host, "nft", "delete", "rule", "ip", "docker_emulation", "forward", "handle",
                       str(item["rule"]["handle"]), check=False)
        lab.ns(lab.outside, "ip", "route", "del", f"172.31.{lab.octet}.0/24", check=False)
        lab.ns(lab.host, "ip", "addr", "del", f"10.{lab.octet}.0.6/29", "dev", lab.uplink, check=False)


def _udp(lab: Lab, dst: str, port: int, src: str | None = None) -> str:
    done = lab.ns(lab.outside, sys.executable, "-c", UDP_PROBE, src or lab.client_ip(0), dst, str(port))
    return done.stdout.strip()


def test_udp_direct_routes_ipv6_and_other_addresses_without_and_with_the_guard(udp_lab: Lab) -> None:
    """The lab is honest (everything answers without the guard); with the prod ruleset: UDP
    (published or a host service), a direct route to the container's address, IPv6 to a host
    service are dropped. With publicAddress set, the public port on another host address too."""
    lab = udp_lab
    lab.unload()
    assert _udp(lab, lab.host_ip, UDP_PUBLISHED) == "echo"
    assert _udp(lab, lab.host_ip, UDP_HOST) == "echo"
    assert _udp(lab, lab.host_ip6, UDP_HOST, lab.client6(0)) == "echo"
    assert lab.answers(8080, dst=lab.container_ip) == "open"
    assert lab.answers(PROXY_HTTP, dst=f"10.{lab.octet}.0.6") == "open"
    lab.load(prod_ruleset())
    try:
        assert _udp(lab, lab.host_ip, UDP_PUBLISHED) == "timeout"
        assert _udp(lab, lab.host_ip, UDP_HOST) == "timeout"
        assert _udp(lab, lab.host_ip6, UDP_HOST, lab.client6(0)) == "timeout"
        assert lab.answers(8080, dst=lab.container_ip) == "timeout"
        assert lab.answers(9000, dst=lab.container_ip) == "timeout"
        assert lab.answers6(HOST_SERVICE) != "open"
        assert lab.answers6(SSH) == "open"
        assert lab.answers(PROXY_HTTP) == "open"
    finally:
        lab.unload()
    from tools.render import stack_config

    config, _ = stack_config("prod")
    proxy = json.loads(config["paper-trading:proxy"])
    proxy["publicAddress"] = lab.host_ip
    guard = next(r for r in render_with("prod", proxy=proxy).containers
                 if r.inputs.get("name", "").endswith("-host-guard"))
    lab.load(next(e for e in guard.inputs["envs"] if e.startswith("HOST_GUARD_RULESET=")).split("=", 1)[1])
    try:
        assert lab.answers(PROXY_HTTP) == "open"
        assert lab.answers(PROXY_HTTP, dst=f"10.{lab.octet}.0.6") == "timeout"
    finally:
        lab.unload()


# --------------------------------------------------------------------------- invalid packets

SYN_FIN = """
import socket, struct, sys
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
def csum(data):
    if len(data) % 2:
        data += b"\\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
sport = 40000 + (port % 1000)
header = struct.pack("!HHIIBBHHH", sport, port, 12345, 0, 5 << 4, 0x03, 1024, 0, 0)  # SYN|FIN
pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(header))
header = header[:16] + struct.pack("!H", csum(pseudo + header)) + header[18:]
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
raw.bind((src, 0))
raw.settimeout(1.0)
for _ in range(3):
    raw.sendto(header, (dst, 0))
answers = 0
try:
    while True:
        data, (peer, _) = raw.recvfrom(65535)
        tcp = data[20:]
        ports = struct.unpack("!HH", tcp[:4])
        if peer == dst and ports == (port, sport):
            answers += 1
except socket.timeout:
    pass
print(answers)
"""


def _invalid_drops(lab: Lab) -> int:
    """Packets the host input chain's `ct state invalid` rule has dropped (0 when there is no such rule)."""
    out = json.loads(lab.ns(lab.host, "nft", "-j", "list", "chain", *TABLE.split(), "input").stdout)
    total = 0
    for item in out["nftables"]:
        rule = item.get("rule")
        if not rule:
            continue
        exprs = rule.get("expr", [])
        invalid = any(e.get("match", {}).get("left", {}).get("ct", {}).get("key") == "state"
                      and "invalid" in json.dumps(e["match"].get("right")) for e in exprs)
        if invalid and any("drop" in e for e in exprs):
            total += sum(e["counter"]["packets"] for e in exprs if "counter" in e)
    return total


def test_invalid_tcp_to_a_public_host_port_is_dropped_unanswered(clean: Lab) -> None:
    """SYN+FIN (conntrack: invalid) to a public port the host itself serves: without the guard
    the host's stack answers it; with the prod ruleset the `ct state invalid` drop takes it
    before the public-port accept, and nothing answers."""
    lab = clean

    def answers() -> int:
        out = lab.ns(lab.outside, sys.executable, "-c", SYN_FIN, lab.client_ip(1), lab.host_ip,
                     str(PROXY_HTTP))
        return int(out.stdout.strip())

    assert answers() >= 1  # the host answers an invalid segment when nothing filters it
    lab.load(prod_ruleset())
    before = _invalid_drops(lab)
    assert answers() == 0
    assert _invalid_drops(lab) - before == 3
