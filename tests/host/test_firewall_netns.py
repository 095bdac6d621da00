"""The product's ruleset, loaded with real `nft` in the firewall lab (tests/support/firewall_lab.py:
outside world, Docker host and container as network namespaces): what answers without it and
with it, each rule's one-line mutation, the guard's decision sync, loopback from outside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support import missing, render_with, rendered, require_tool
from tests.support.firewall_lab import (
    HOST_SERVICE,
    LOOPBACK_ONLY,
    OTHER,
    PROBE,
    PROXY_HTTP,
    PROXY_HTTPS,
    SSH,
    TABLE,
    Lab,
    _decision,
    can_netns,
    prod_ruleset,
    run,
    start_guard,
    wait_until,
    without,
)


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
    root = str(Path(__file__).resolve().parents[2])
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
