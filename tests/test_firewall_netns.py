"""Network namespaces standing in for "the outside world", a Docker host and a container.

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
from typing import Any

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


# --------------------------------------------------------------------------- the tests

import pytest  # noqa: E402

from render.firewall import TABLE_FAMILY, table_name_for  # noqa: E402
from tests.support import missing, render_with, rendered, require_tool  # noqa: E402

GUARD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
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


def test_without_the_firewall_everything_published_answers(lab: Lab) -> None:
    """The lab is honest: Docker's own rules let the mistake through (what the firewall fixes)."""
    lab.unload()
    assert lab.answers(PROXY_HTTP) == "open"
    assert lab.answers(OTHER) == "open"
    assert lab.answers(HOST_SERVICE) == "open"


def test_only_public_ports_answer(loaded: Lab) -> None:
    lab = loaded
    assert lab.answers(PROXY_HTTP) == "open"
    assert lab.answers(PROXY_HTTPS) == "open"
    assert lab.answers(OTHER) == "timeout"  # published on 0.0.0.0 by a container: dropped
    assert lab.answers(LOOPBACK_ONLY) != "open"
    assert lab.answers(LOOPBACK_ONLY + 1) != "open"
    assert lab.answers(HOST_SERVICE) == "timeout"  # prod filters the host's own sockets too
    assert lab.answers(SSH) == "open"  # security.firewall.hostPorts


def test_reload_is_atomic_and_idempotent(loaded: Lab) -> None:
    lab = loaded
    lab.load(prod_ruleset())
    lab.load(prod_ruleset())
    tables = json.loads(lab.ns(lab.host, "nft", "-j", "list", "tables").stdout)["nftables"]
    names = [t["table"]["name"] for t in tables if "table" in t]
    assert names.count(TABLE.split()[1]) == 1
    assert lab.answers(PROXY_HTTP) == "open"
    assert lab.answers(OTHER) == "timeout"


def test_container_to_outside_and_replies_still_work(loaded: Lab) -> None:
    """Traffic a container starts (from a Docker bridge) is never filtered, nor are its replies."""
    lab = loaded
    done = lab.ns(lab.container, sys.executable, "-c", PROBE,
                  json.dumps([[lab.container_ip, lab.client_ip(0), 7]]), "1.0")
    # Nothing listens on the outside's port 7: "refused" proves the RST came back through.
    assert json.loads(done.stdout) == ["refused"]


def test_flood_beyond_the_limit_is_dropped(loaded: Lab) -> None:
    lab = loaded
    fw = rendered("prod")  # noqa: F841 - the limit below is the prod stack's
    burst, rate = 100, 50
    flood = lab.flood(PROXY_HTTP, 400, client=1)
    assert flood["open"] <= burst + 2 * rate, flood
    assert flood["timeout"] >= 400 - (burst + 2 * rate), flood
    # Another client is not affected by the first one's meter.
    assert lab.answers(PROXY_HTTP, client=2) == "open"


def test_banned_address_is_dropped_first(loaded: Lab) -> None:
    lab = loaded
    lab.ns(lab.host, "nft", "add", "element", *TABLE.split(), "banned_v4",
           f"{{ {lab.client_ip(3)} timeout 60s }}")
    assert lab.answers(PROXY_HTTP, client=3) == "timeout"
    assert lab.answers(SSH, client=3) == "timeout"
    assert lab.answers(PROXY_HTTP, client=2) == "open"


@pytest.mark.parametrize("mutation, port, client", [
    ("ip saddr @banned_v4 counter drop", PROXY_HTTP, 3),
    ("ct original proto-dst @public_ports return", OTHER, 0),
    ("counter drop\n", OTHER, 0),
])
def test_each_rule_mutation_lets_traffic_through(lab: Lab, mutation: str, port: int, client: int) -> None:
    """Removing the ban drop, or the port restriction, opens what the tests above prove closed."""
    lab.unload()
    ruleset = prod_ruleset()
    if mutation == "ct original proto-dst @public_ports return":
        # The restriction: without the closing drop of to_containers, every DNATed port passes.
        ruleset = ruleset.replace("jump limit_new\n        meta l4proto tcp ct status dnat ct original "
                                  "proto-dst @public_ports return\n        counter drop\n",
                                  "jump limit_new\n")
    elif mutation == "counter drop\n":
        ruleset = ruleset.replace("        meta l4proto tcp ct status dnat", "        meta l4proto tcp", 1)
        ruleset = ruleset.replace("return\n        counter drop\n    }\n\n    # Before Docker",
                                  "return\n    }\n\n    # Before Docker")
    else:
        ruleset = without(ruleset, mutation)
    assert ruleset != prod_ruleset()
    lab.load(ruleset)
    try:
        if client == 3:
            lab.ns(lab.host, "nft", "add", "element", *TABLE.split(), "banned_v4",
                   f"{{ {lab.client_ip(3)} timeout 60s }}")
        assert lab.answers(port, client=client) == "open"
    finally:
        lab.unload()


def test_limit_mutation_lets_the_flood_through(lab: Lab) -> None:
    lab.unload()
    lab.load(without(prod_ruleset(), "limit rate over"))
    try:
        flood = lab.flood(PROXY_HTTP, 400, client=1)
        assert flood["open"] == 400, flood
    finally:
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


def test_guard_syncs_decisions_adds_removes_and_expires(lab: Lab, tmp_path: Any) -> None:
    lab.unload()
    ruleset = tmp_path / "ruleset.nft"
    ruleset.write_text(prod_ruleset())
    decisions = tmp_path / "decisions"
    decisions.mkdir()
    (decisions / "not-an-address").write_text("9999999999 probe\n")
    (decisions / "10.0.0.9").write_text("tomorrow; rm -rf /\n")
    proc = start_guard(lab, ruleset, decisions, tmp_path)
    try:
        assert wait_until(lambda: lab.ns(lab.host, "nft", "list", "table", *TABLE.split(),
                                         check=False).returncode == 0, 10)
        assert lab.answers(PROXY_HTTP, client=3) == "open"
        _decision(str(decisions), lab.client_ip(3), 4, "auth")
        assert wait_until(lambda: lab.element_count("banned_v4") == 1, 5)
        assert lab.answers(PROXY_HTTP, client=3) == "timeout"
        assert lab.answers(PROXY_HTTP, client=2) == "open"
        # The kernel's timeout ends the ban even though the file is still there.
        assert wait_until(lambda: lab.answers(PROXY_HTTP, client=3) == "open", 8)
        # Removing the file unbans at once.
        _decision(str(decisions), lab.client_ip(3), 600, "probe")
        assert wait_until(lambda: lab.answers(PROXY_HTTP, client=3) == "timeout", 5)
        os.remove(decisions / lab.client_ip(3))
        assert wait_until(lambda: lab.element_count("banned_v4") == 0, 5)
        assert lab.answers(PROXY_HTTP, client=3) == "open"
        # A flushed table comes back within the check interval.
        lab.ns(lab.host, "nft", "delete", "table", *TABLE.split())
        assert wait_until(lambda: lab.ns(lab.host, "nft", "list", "table", *TABLE.split(),
                                         check=False).returncode == 0, 5)
        assert lab.answers(OTHER) == "timeout"
    finally:
        proc.terminate()
        code = proc.wait(timeout=10)
        stderr = proc.stderr.read() if proc.stderr else ""
    # SIGTERM: the guard stops, its table stays (fail closed); the bad files were only logged.
    assert code == 143, stderr
    assert lab.ns(lab.host, "nft", "list", "table", *TABLE.split(), check=False).returncode == 0
    assert "ignored 'not-an-address'" in stderr and "ignored '10.0.0.9'" in stderr
    lab.unload()


CHECK = textwrap.dedent("""
    import asyncio, json, sys
    from validation.checks_security import firewall
    from validation.options import ValidationOptions
    from validation.runner import CheckFailed, Context
    o = ValidationOptions(base_url="http://" + sys.argv[1], firewall_address=sys.argv[1],
                          firewall_open_ports=(80, 443), firewall_closed_ports=(9000, 9100, 28081))
    import httpx
    async def main():
        async with httpx.AsyncClient() as client:
            await firewall(Context(o, client))
    try:
        asyncio.run(main()); print(json.dumps({"passed": True}))
    except CheckFailed as exc:
        print(json.dumps({"passed": False, "message": str(exc)}))
""")


def _run_check(lab: Lab) -> dict[str, Any]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(["ip", "netns", "exec", lab.outside, sys.executable, "-c", CHECK, lab.host_ip],
                          capture_output=True, text=True, timeout=60, cwd=root)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_security_firewall_check_passes_only_with_the_ruleset(lab: Lab) -> None:
    """The validation check from the outside namespace: red without the table, green with it."""
    lab.unload()
    red = _run_check(lab)
    assert red["passed"] is False and "port 9000 answers" in red["message"]
    lab.load(prod_ruleset())
    try:
        assert _run_check(lab) == {"passed": True}
    finally:
        lab.unload()


def test_security_firewall_refuses_loopback() -> None:
    from pydantic import ValidationError

    from validation.options import ValidationOptions

    with pytest.raises(ValidationError, match="not loopback"):
        ValidationOptions(base_url="http://127.0.0.1", firewall_address="127.0.0.1")


# --------------------------------------------------------------------------- loopback from outside

HOST_LOOPBACK = 28090  # a host socket bound to 127.0.0.1 only (a local admin service, a debugger)


def default_ruleset() -> str:
    """The prod stack's ruleset with `filterHostInput` at its default (off): the host's own
    sockets are not filtered, so the loopback rule alone keeps 127.0.0.0/8 local."""
    from tools.render import stack_config

    config, _ = stack_config("prod")
    security = json.loads(config["paper-trading:security"])
    security["firewall"]["filterHostInput"] = False
    guard = next(r for r in render_with("prod", security=security).containers
                 if r.inputs.get("name", "").endswith("-host-guard"))
    env = next(e for e in guard.inputs["envs"] if e.startswith("HOST_GUARD_RULESET="))
    ruleset = str(env.split("=", 1)[1])
    assert "    chain input {" not in ruleset  # the host's input is really unfiltered
    return ruleset


@pytest.fixture(scope="module")
def localnet_lab() -> Any:
    """Its own namespaces: `outside` loses its loopback routes so it can send to 127.0.0.1.

    The neighbour routes 127.0.0.1 to the host over the wire (its own loopback removed); the
    host accepts such packets on its outside interface because `route_localnet` is on there
    (what kube-proxy and similar tools set, CVE-2020-8558). A socket bound to 127.0.0.1 on the
    host then answers a neighbour, unless the guard drops the packet first.
    """
    reason = can_netns()
    if reason:
        missing(reason)
    require_tool("nft")
    require_tool("ip")
    box = Lab()
    try:
        box.up()
        box.serve(box.host, f"127.0.0.1:{HOST_LOOPBACK}")
        box.ns(box.host, "sysctl", "-qw", "net.ipv4.conf.h0.route_localnet=1")
        box.ns(box.outside, "sysctl", "-qw", "net.ipv4.conf.o0.route_localnet=1")
        run("ip", "-n", box.outside, "route", "del", "local", "127.0.0.1", "dev", "lo", "table", "local")
        run("ip", "-n", box.outside, "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local")
        run("ip", "-n", box.outside, "addr", "del", "127.0.0.1/8", "dev", "lo")
        run("ip", "-n", box.outside, "route", "add", "127.0.0.1/32", "via", box.host_ip, "dev", "o0")
        yield box
    finally:
        box.down()


def _reaches_host_loopback(lab: Lab) -> str:
    return lab.probe([(lab.client_ip(0), "127.0.0.1", HOST_LOOPBACK)], timeout=1.5)[0]


def test_without_the_firewall_a_neighbour_reaches_host_loopback(localnet_lab: Lab) -> None:
    """The lab is honest: with route_localnet on, a 127.0.0.1-only socket answers the neighbour."""
    localnet_lab.unload()
    assert _reaches_host_loopback(localnet_lab) == "open"


@pytest.mark.parametrize("ruleset", [default_ruleset, prod_ruleset], ids=["filterHostInput-off", "prod"])
def test_packets_to_loopback_from_outside_are_dropped(localnet_lab: Lab, ruleset: Any) -> None:
    lab = localnet_lab
    lab.unload()
    lab.load(ruleset())
    try:
        assert _reaches_host_loopback(lab) == "timeout"
        # Dropped by the loopback rule itself (its counter moved), not by something else.
        assert _loopback_drops(lab) >= 1
    finally:
        lab.unload()


def test_loopback_rule_removed_lets_the_neighbour_in(localnet_lab: Lab) -> None:
    """The one-line mutation: without the rule, the default ruleset lets the neighbour in."""
    lab = localnet_lab
    lab.unload()
    lab.load(without(default_ruleset(), "ip daddr 127.0.0.0/8"))
    try:
        assert _reaches_host_loopback(lab) == "open"
    finally:
        lab.unload()


def _loopback_drops(lab: Lab) -> int:
    """Packets the `iifname != "lo" ip daddr 127.0.0.0/8` rule counted in the guard's table."""
    out = json.loads(lab.ns(lab.host, "nft", "-j", "list", "chain", *TABLE.split(), "prerouting").stdout)
    for item in out["nftables"]:
        rule = item.get("rule")
        if not rule:
            continue
        exprs = rule["expr"]
        daddr = [e["match"]["right"] for e in exprs
                 if "match" in e and e["match"]["left"].get("payload", {}).get("field") == "daddr"]
        if daddr and daddr[0] == {"prefix": {"addr": "127.0.0.0", "len": 8}}:
            return int(next(e["counter"]["packets"] for e in exprs if "counter" in e))
    raise AssertionError("no loopback rule in the guard's prerouting chain")
