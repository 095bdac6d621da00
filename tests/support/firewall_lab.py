"""The firewall lab: network namespaces standing in for "the outside world", a Docker host and a container.

    outside (10.R.0.2-.5/29) --veth-- host (10.R.0.1/29, br-<id> 172.31.R.1/24) --veth-- container
                                                                                       (172.31.R.2)

In `host`, a table `ip docker_emulation` does what Docker's iptables rules do for published
ports: DNAT in prerouting (priority dstnat) and accept in forward (priority filter). The
product's ruleset is loaded there with real `nft`; nothing touches the test runner's own
network namespace (every command runs through `ip netns exec` / `ip -n`).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from render.firewall import TABLE_FAMILY, table_name_for
from tests.support import missing, rendered, require_tool

PROBE = textwrap.dedent("""
    import json, select, socket, sys, time
    jobs = json.loads(sys.argv[1]); timeout = float(sys.argv[2])
    socks = []
    for src, dst, port in jobs:
        s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET); s.setblocking(False)
        s.bind((src, 0)); s.connect_ex((dst, port)); socks.append(s)
    deadline = time.time() + timeout
    result = [None] * len(socks)
    while time.time() < deadline and any(r is None for r in result):
        pending = [s for s, r in zip(socks, result) if r is None]
        _, writable, _ = select.select([], pending, [], max(0.0, deadline - time.time()))
        for s in writable:
            i = socks.index(s); err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            result[i] = "open" if err == 0 else "refused"
    print(json.dumps([r or "timeout" for r in result]))
""")

SERVER = textwrap.dedent("""
    import socket, sys, threading
    def serve(host, port):
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if ":" in host:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, port)); s.listen(1024)
        while True:
            c, _ = s.accept(); c.close()
    for spec in sys.argv[1:]:
        host, port = spec.rsplit(":", 1)
        threading.Thread(target=serve, args=(host, int(port)), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()
""")


def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), input=input, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done


@dataclass
class Lab:
    """The three namespaces; `published` maps host ports to the container's listeners."""

    ident: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    octet: int = field(default_factory=lambda: random.randint(16, 250))
    published: dict[int, int] = field(default_factory=dict)
    servers: list[subprocess.Popen[str]] = field(default_factory=list)
    #: The host's outside interface (a host uplink is often a bridge called br-lan or br-ex).
    uplink: str = "h0"
    #: IPv6 addresses the outside namespace holds in each of its two /64s.
    v6_clients: int = 0

    @property
    def outside(self) -> str:
        return f"ptf-{self.ident}-out"

    @property
    def host(self) -> str:
        return f"ptf-{self.ident}-host"

    @property
    def container(self) -> str:
        return f"ptf-{self.ident}-ctr"

    @property
    def host_ip(self) -> str:
        return f"10.{self.octet}.0.1"

    def client_ip(self, n: int = 0) -> str:
        return f"10.{self.octet}.0.{2 + n}"

    @property
    def container_ip(self) -> str:
        return f"172.31.{self.octet}.2"

    #: The bridge the rendered prod stack trusts for its frontend network: Docker names it
    #: br-<network id[:12]>, and the render mock's network id is "frontend-id".
    bridge: str = "br-frontend-id"

    @property
    def host_ip6(self) -> str:
        return f"fd00:{self.octet}::1"

    def client6(self, n: int = 0, net: int = 0) -> str:
        """The n-th outside IPv6 address in /64 number `net` (0 or 1)."""
        return f"fd00:{self.octet}:0:{net}::{2 + n:x}"

    def ns(self, name: str, *args: str, input: str | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", name, *args, input=input, check=check)

    def up(self) -> Lab:
        for name in (self.outside, self.host, self.container):
            run("ip", "netns", "add", name)
            run("ip", "-n", name, "link", "set", "lo", "up")
        run("ip", "-n", self.outside, "link", "add", "o0", "type", "veth", "peer", "name", self.uplink,
            "netns", self.host)
        for n in range(4):
            run("ip", "-n", self.outside, "addr", "add", f"{self.client_ip(n)}/29", "dev", "o0")
        run("ip", "-n", self.outside, "link", "set", "o0", "up")
        run("ip", "-n", self.host, "addr", "add", f"{self.host_ip}/29", "dev", self.uplink)
        run("ip", "-n", self.host, "link", "set", self.uplink, "up")
        batch = [f"addr add fd00:{self.octet}:0:{net}::1/64 dev {self.uplink} nodad" for net in (0, 1)]
        run("ip", "-n", self.host, "-batch", "-", input="\n".join(batch) + "\n")
        batch = [f"addr add {self.client6(n, net)}/64 dev o0 nodad"
                 for net in (0, 1) for n in range(max(1, self.v6_clients))]
        run("ip", "-n", self.outside, "-batch", "-", input="\n".join(batch) + "\n")
        run("ip", "-n", self.host, "link", "add", self.bridge, "type", "bridge")
        run("ip", "-n", self.host, "addr", "add", f"172.31.{self.octet}.1/24", "dev", self.bridge)
        run("ip", "-n", self.host, "link", "set", self.bridge, "up")
        run("ip", "-n", self.host, "link", "add", "veth-c", "type", "veth", "peer", "name", "eth0",
            "netns", self.container)
        run("ip", "-n", self.host, "link", "set", "veth-c", "master", self.bridge, "up")
        run("ip", "-n", self.container, "addr", "add", f"{self.container_ip}/24", "dev", "eth0")
        run("ip", "-n", self.container, "link", "set", "eth0", "up")
        run("ip", "-n", self.container, "route", "add", "default", "via", f"172.31.{self.octet}.1")
        self.ns(self.host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        return self

    def publish(self, ports: dict[int, int], loopback: dict[int, int]) -> None:
        """Docker's rules for `-p <port>:<internal>` and `-p 127.0.0.1:<port>:<internal>`."""
        self.published = dict(ports)
        dnat = [f"tcp dport {p} dnat to {self.container_ip}:{i}" for p, i in ports.items()]
        dnat += [f"ip daddr 127.0.0.1 tcp dport {p} dnat to {self.container_ip}:{i}"
                 for p, i in loopback.items()]
        ruleset = "\n".join([
            "table ip docker_emulation {",
            "  chain prerouting { type nat hook prerouting priority dstnat; policy accept;",
            *[f"    {r}" for r in dnat], "  }",
            "  chain output { type nat hook output priority -100; policy accept;",
            *[f"    {r}" for r in dnat], "  }",
            "  chain postrouting { type nat hook postrouting priority srcnat; policy accept;",
            f"    oifname \"{self.bridge}\" ip saddr 127.0.0.0/8 masquerade",
            f"    oifname != \"{self.bridge}\" ip saddr 172.31.{self.octet}.0/24 masquerade", "  }",
            # Docker's FORWARD: accept DNATed connections and replies towards its bridge, drop the rest.
            "  chain forward { type filter hook forward priority filter; policy drop;",
            f"    oifname \"{self.bridge}\" ct state established,related accept",
            f"    oifname \"{self.bridge}\" ct status dnat accept",
            f"    iifname \"{self.bridge}\" accept", "  }",
            "}", ""])
        self.ns(self.host, "nft", "-f", "-", input=ruleset)
        self.ns(self.host, "sysctl", "-qw", f"net.ipv4.conf.{self.bridge}.route_localnet=1")

    def serve(self, namespace: str, *specs: str) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-c", SERVER, *specs],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"server in {namespace} did not start: {err}")
        self.servers.append(proc)

    def load(self, ruleset: str) -> None:
        self.ns(self.host, "nft", "-f", "-", input=ruleset)

    def unload(self) -> None:
        """Every guard table (any stack's) gone, conntrack forgotten."""
        for name in self.guard_tables():
            self.ns(self.host, "nft", "delete", "table", "inet", name, check=False)
        self.ns(self.host, "conntrack", "-F", check=False)

    def guard_tables(self) -> list[str]:
        tables = json.loads(self.ns(self.host, "nft", "-j", "list", "tables").stdout)["nftables"]
        return sorted(t["table"]["name"] for t in tables
                      if "table" in t and t["table"]["name"].startswith("paper_trading_guard"))

    def probe(self, jobs: list[tuple[str, str, int]], timeout: float = 1.0) -> list[str]:
        done = self.ns(self.outside, sys.executable, "-c", PROBE, json.dumps(jobs), str(timeout))
        result: list[str] = json.loads(done.stdout)
        return result

    def answers(self, port: int, client: int = 0, dst: str | None = None) -> str:
        return self.probe([(self.client_ip(client), dst or self.host_ip, port)])[0]

    def answers6(self, port: int, client: int = 0, net: int = 0) -> str:
        return self.probe([(self.client6(client, net), self.host_ip6, port)])[0]

    def flood(self, port: int, count: int, client: int = 0) -> dict[str, int]:
        result = self.probe([(self.client_ip(client), self.host_ip, port)] * count, timeout=1.0)
        return {kind: result.count(kind) for kind in ("open", "refused", "timeout")}

    def element_count(self, set_name: str, table: str | None = None) -> int:
        out = json.loads(self.ns(self.host, "nft", "-j", "list", "set", *(table or TABLE).split(),
                                 set_name).stdout)
        return sum(len((i.get("set") or {}).get("elem", []) or []) for i in out["nftables"])

    def down(self) -> None:
        for proc in self.servers:
            proc.kill()
            proc.wait(timeout=10)
        for name in (self.outside, self.host, self.container):
            run("ip", "netns", "del", name, check=False)


def wait_until(predicate: Any, timeout: float, step: float = 0.2) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def can_netns() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None

GUARD = os.path.join(str(Path(__file__).resolve().parents[2]),
                     "programs", "host-guard", "host_guard.py")
#: The prod stack's table (namePrefix paper-trading): one table per stack.
TABLE = f"{TABLE_FAMILY} {table_name_for('paper-trading')}"
PROXY_HTTP, PROXY_HTTPS, OTHER, LOOPBACK_ONLY, HOST_SERVICE, SSH = 80, 443, 9000, 28081, 9100, 22


def prod_ruleset() -> str:
    """The ruleset exactly as the prod stack renders it (the host guard's environment)."""
    guard = next(r for r in rendered("prod").containers if r.inputs.get("name", "").endswith("-host-guard"))
    env = next(e for e in guard.inputs["envs"] if e.startswith("HOST_GUARD_RULESET="))
    return str(env.split("=", 1)[1])


def without(ruleset: str, fragment: str) -> str:
    """The one-line mutation: every rule line containing `fragment` removed."""
    lines = ruleset.splitlines()
    kept = [line for line in lines if fragment not in line]
    assert len(kept) < len(lines), f"mutation {fragment!r} matched nothing"
    return "\n".join(kept) + "\n"


@pytest.fixture(scope="module")
def lab() -> Any:
    reason = can_netns()
    if reason:
        missing(reason)
    require_tool("nft")
    require_tool("ip")
    box = Lab()
    try:
        box.up()  # inside the try: a failed setup still removes the namespaces it made
        # The proxy publishes 80/443 on every address; another container publishes 9000 on
        # 0.0.0.0 by mistake; the preview-like listener is published on loopback only.
        box.publish({PROXY_HTTP: 8080, PROXY_HTTPS: 8443, OTHER: 9000}, {LOOPBACK_ONLY: 8081})
        box.serve(box.container, f"{box.container_ip}:8080", f"{box.container_ip}:8443",
                  f"{box.container_ip}:9000", f"{box.container_ip}:8081")
        # Host sockets: a service on every address (not published) and ssh.
        box.serve(box.host, f"0.0.0.0:{HOST_SERVICE}", f"0.0.0.0:{SSH}", f"127.0.0.1:{LOOPBACK_ONLY + 1}",
                  f":::{PROXY_HTTP}", f":::{SSH}")
        yield box
    finally:
        box.down()


@pytest.fixture
def loaded(lab: Lab) -> Any:
    lab.unload()
    lab.load(prod_ruleset())
    yield lab
    lab.unload()



def _decision(directory: str, address: str, seconds: int, reason: str = "probe") -> None:
    path = os.path.join(directory, address.replace(":", "_"))
    with open(path, "w", encoding="ascii") as handle:
        handle.write(f"{int(time.time()) + seconds} {reason}\n")


def start_guard(lab: Lab, ruleset: Any, decisions: Any, state: Any, *extra: str) -> subprocess.Popen[str]:
    """The supervisor in the lab's host namespace, as the container runs it."""
    return subprocess.Popen(["ip", "netns", "exec", lab.host, sys.executable, GUARD, "--ruleset-file",
                             str(ruleset), "--decisions", str(decisions), "--interval", "1", "--sync", "0.2",
                             "--state-dir", str(state), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


