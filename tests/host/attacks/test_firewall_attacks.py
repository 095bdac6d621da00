"""Issue 21, items 1-4: each attack sent for real, in network namespaces, against real nft.

The lab is tests/host/test_firewall_netns.py's (outside -- host -- bridge -- container, Docker's DNAT
emulated in `host`), with IPv6 on the outside link: two /64s, many addresses in each. Every
test below fails with its fix removed (the mutations are listed in the commit and the report).

1. Per-source limit bypass: a full meter set still limits a new source; one host spreading
   over its /64 is one meter and one ban.
2. `br-*` trusted by name: a host uplink called `br-lan` opens nothing; the guard refuses to
   start when an interface named as a Docker bridge is no bridge.
3. The guard fails closed: a stopped guard's table stays (rules and bans); two stacks' guards
   keep two tables; the health check fails when the loaded table is not the wanted one.
4. Admin and allow-listed sources are accepted before any ban, and refused as ban decisions.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import sys
import time
from pathlib import Path

from render.firewall import RATE_SET_SIZE, TABLE_FAMILY, table_name_for
from stack.firewall import bridge_name
from tests.support.firewall_attack_lab import _decision, _elements, _loaded, _stop, ruleset_with
from tests.support.firewall_lab import (
    GUARD,
    HOST_SERVICE,
    OTHER,
    PROXY_HTTP,
    SSH,
    TABLE,
    Lab,
    prod_ruleset,
    start_guard,
    wait_until,
)

BURST, RATE = 100, 50  # the prod stack's newConnectionsBurst / newConnectionsPerSecond
DEV_TABLE = f"{TABLE_FAMILY} {table_name_for('dev-stack')}"



# --------------------------------------------------------------------------- 1. limit bypass

def test_a_full_rate_set_still_limits_a_new_source(clean: Lab) -> None:
    """The meter set is full (an attacker spread over 65536 sources): a new source's flood is
    still cut to burst + rate by the overflow meter (before: the add failed, no drop, unlimited)."""
    lab = clean
    lab.load(prod_ruleset())
    filler = ipaddress.IPv4Network("100.64.0.0/10")
    elements = ", ".join(str(filler[i]) for i in range(RATE_SET_SIZE))
    lab.ns(lab.host, "nft", "-f", "-", input=f"add element {TABLE} rate_v4 {{ {elements} }}\n")
    assert lab.element_count("rate_v4") == RATE_SET_SIZE
    # Full for real: the kernel refuses one more entry.
    assert lab.ns(lab.host, "nft", "add", "element", *TABLE.split(), "rate_v4", "{ 100.127.255.254 }",
                  check=False).returncode != 0
    flood = lab.flood(PROXY_HTTP, 400, client=1)
    assert flood["open"] <= BURST + 2 * RATE, flood
    assert flood["timeout"] >= 400 - (BURST + 2 * RATE), flood
    assert lab.element_count("rate_v4") == RATE_SET_SIZE  # the new source never got a meter


def test_a_full_ipv6_rate_set_still_limits_a_new_64(clean: Lab) -> None:
    """The same for IPv6: 65536 /64s hold the meter set; a new /64's flood is still limited."""
    lab = clean
    lab.load(prod_ruleset())
    filler = ipaddress.IPv6Network("2001:db8::/32")
    elements = ", ".join(str(filler.network_address + (i << 64)) for i in range(RATE_SET_SIZE))
    lab.ns(lab.host, "nft", "-f", "-", input=f"add element {TABLE} rate_v6 {{ {elements} }}\n")
    assert lab.element_count("rate_v6") == RATE_SET_SIZE
    result = lab.probe([(lab.client6(n % 50, 1), lab.host_ip6, PROXY_HTTP) for n in range(400)], timeout=1.0)
    assert result.count("open") <= BURST + 2 * RATE, result.count("timeout")
    assert result.count("timeout") >= 400 - (BURST + 2 * RATE)


def test_one_host_spread_over_its_ipv6_64_is_one_meter(clean: Lab) -> None:
    """400 new connections from 200 addresses of one /64 (2 each, far below the burst per
    address): limited together. A source in another /64 is not affected."""
    lab = clean
    lab.load(prod_ruleset())
    jobs = [(lab.client6(n % 200, 0), lab.host_ip6, PROXY_HTTP) for n in range(400)]
    result = lab.probe(jobs, timeout=1.0)
    opened = result.count("open")
    assert opened <= BURST + 2 * RATE, result.count("timeout")
    assert result.count("timeout") >= 400 - (BURST + 2 * RATE)
    assert lab.element_count("rate_v6") == 1  # one meter: the /64
    assert lab.answers6(PROXY_HTTP, client=0, net=1) == "open"


def test_an_ipv6_ban_covers_the_whole_64(lab: Lab, tmp_path: Path) -> None:
    """The IDS bans one address; the same host's next address in its /64 is dropped too."""
    lab.unload()
    ruleset = tmp_path / "ruleset.nft"
    ruleset.write_text(prod_ruleset())
    decisions = tmp_path / "decisions"
    decisions.mkdir()
    proc = start_guard(lab, ruleset, decisions, tmp_path)
    try:
        assert wait_until(lambda: _loaded(lab), 10)
        assert lab.answers6(SSH, client=7) == "open"
        _decision(decisions, lab.client6(5, 0))
        assert wait_until(lambda: lab.element_count("banned_v6") == 1, 5)
        assert lab.answers6(SSH, client=7) == "timeout"
        assert lab.answers6(PROXY_HTTP, client=150) == "timeout"
        assert lab.answers6(SSH, client=0, net=1) == "open"  # another /64
    finally:
        _stop(proc)
        lab.unload()


# --------------------------------------------------------------------------- 2. br-* by name

def test_an_uplink_named_br_lan_opens_nothing(uplink_lab: Lab) -> None:
    """With `br-*` trusted, the uplink br-lan counted as a Docker bridge: 9000 and 9100 open."""
    lab = uplink_lab
    lab.unload()
    lab.load(prod_ruleset())
    assert lab.answers(PROXY_HTTP) == "open"
    assert lab.answers(OTHER) == "timeout"
    assert lab.answers(HOST_SERVICE) == "timeout"


def test_the_guard_refuses_to_start_when_a_named_bridge_is_no_bridge(uplink_lab: Lab, tmp_path: Path) -> None:
    lab = uplink_lab
    lab.unload()
    ruleset = tmp_path / "ruleset.nft"
    ruleset.write_text(prod_ruleset())
    done = lab.ns(lab.host, sys.executable, GUARD, "--ruleset-file", str(ruleset), "--decisions",
                  str(tmp_path), "--state-dir", str(tmp_path), "--once", "--bridges",
                  f"{lab.bridge},br-lan", check=False)
    assert done.returncode == 2, done.stderr
    assert "br-lan is not a bridge" in done.stderr
    assert not _loaded(lab)
    ok = lab.ns(lab.host, sys.executable, GUARD, "--ruleset-file", str(ruleset), "--decisions",
                str(tmp_path), "--state-dir", str(tmp_path), "--once", "--bridges", lab.bridge, check=False)
    assert ok.returncode == 0, ok.stderr
    assert _loaded(lab)
    lab.unload()


def test_the_ruleset_trusts_exactly_the_stacks_bridges(clean: Lab) -> None:
    """Loaded, the forward chain jumps for the four networks' bridges, nothing else."""
    lab = clean
    lab.load(prod_ruleset())
    out = json.loads(lab.ns(lab.host, "nft", "-j", "list", "chain", *TABLE.split(), "forward").stdout)
    oifname = {"meta": {"key": "oifname"}}
    names = [e["match"]["right"] for item in out["nftables"] if "rule" in item
             for e in item["rule"]["expr"] if "match" in e and e["match"]["left"] == oifname]
    assert names == ["br-frontend-id", "br-backend-id", "br-monitoring-i", "br-metrics-id"]
    assert bridge_name("0123456789abcdef", None) == "br-0123456789ab"
    assert bridge_name("0123456789abcdef", {"com.docker.network.bridge.name": "ptcustom0"}) == "ptcustom0"


# --------------------------------------------------------------------------- 3. fail closed

def test_a_stopped_guard_keeps_filtering(lab: Lab, tmp_path: Path) -> None:
    """docker stop / a restart (SIGTERM): the table, its rules and its bans stay."""
    lab.unload()
    ruleset = tmp_path / "ruleset.nft"
    ruleset.write_text(prod_ruleset())
    decisions = tmp_path / "decisions"
    decisions.mkdir()
    _decision(decisions, lab.client_ip(3))
    proc = start_guard(lab, ruleset, decisions, tmp_path)
    try:
        assert wait_until(lambda: _loaded(lab) and lab.element_count("banned_v4") == 1, 10)
    finally:
        code, stderr = _stop(proc)
    try:
        assert code == 143, stderr
        assert lab.answers(OTHER) == "timeout"
        assert lab.answers(HOST_SERVICE) == "timeout"
        assert lab.answers(PROXY_HTTP, client=3) == "timeout"  # still banned
        assert lab.answers(PROXY_HTTP, client=2) == "open"
    finally:
        lab.unload()


def test_the_decommission_removes_only_its_own_table(lab: Lab, tmp_path: Path) -> None:
    """Two stacks on one host (prod and dev): each guard keeps its own table. Stopping the dev
    guard, and then decommissioning it (SIGUSR1, what pulumi destroy sends), leaves prod's."""
    lab.unload()
    prod, dev = tmp_path / "prod", tmp_path / "dev"
    for d in (prod, dev):
        (d / "decisions").mkdir(parents=True)
    (prod / "ruleset.nft").write_text(prod_ruleset())
    (dev / "ruleset.nft").write_text(ruleset_with(name_prefix="dev-stack"))
    guards = {d.name: start_guard(lab, d / "ruleset.nft", d / "decisions", d) for d in (prod, dev)}
    try:
        assert wait_until(lambda: _loaded(lab, TABLE) and _loaded(lab, DEV_TABLE), 10)
        code, stderr = _stop(guards["dev"])
        assert code == 143, stderr
        assert _loaded(lab, TABLE) and _loaded(lab, DEV_TABLE)
        # The dev guard comes back and is decommissioned: its table goes, prod's stays.
        guards["dev"] = start_guard(lab, dev / "ruleset.nft", dev / "decisions", dev)
        time.sleep(1.5)
        code, stderr = _stop(guards["dev"], signal.SIGUSR1)
        assert code == 0, stderr
        assert not _loaded(lab, DEV_TABLE)
        assert _loaded(lab, TABLE)
        assert lab.answers(OTHER) == "timeout"
        check = lab.ns(lab.host, sys.executable, GUARD, "--ruleset-file", str(prod / "ruleset.nft"),
                       "--state-dir", str(prod), "--check", check=False)
        assert check.returncode == 0, check.stderr
    finally:
        for proc in guards.values():
            if proc.poll() is None:
                _stop(proc)
        lab.unload()


def test_the_health_check_compares_the_loaded_ruleset_with_the_wanted_one(clean: Lab, tmp_path: Path) -> None:
    lab = clean
    wanted = tmp_path / "wanted.nft"
    wanted.write_text(prod_ruleset())

    def check() -> int:
        return lab.ns(lab.host, sys.executable, GUARD, "--ruleset-file", str(wanted), "--state-dir",
                      str(tmp_path), "--check", check=False).returncode

    assert check() == 1  # nothing loaded
    once = lab.ns(lab.host, sys.executable, GUARD, "--ruleset-file", str(wanted), "--decisions",
                  str(tmp_path), "--state-dir", str(tmp_path), "--once", check=False)
    assert once.returncode == 0, once.stderr
    assert check() == 0
    # Traffic, meters, counters and bans change nothing the check compares.
    lab.flood(PROXY_HTTP, 300, client=1)
    lab.probe([(lab.client6(n), lab.host_ip6, PROXY_HTTP) for n in range(20)])
    lab.ns(lab.host, "nft", "add", "element", *TABLE.split(), "banned_v4",
           f"{{ {lab.client_ip(3)} timeout 60s }}")
    assert lab.element_count("rate_v4") >= 1 and lab.element_count("banned_v4") == 1
    assert check() == 0
    # Somebody empties the forward chain: the table exists, but it is not the wanted one.
    lab.ns(lab.host, "nft", "flush", "chain", *TABLE.split(), "forward")
    assert lab.answers(OTHER) == "open"
    assert check() == 1
    # Another ruleset under the same table name (an older render, another stack's guard).
    lab.load(ruleset_with(firewall={"filterHostInput": False}))
    assert check() == 1


def test_the_guard_repairs_a_changed_table(lab: Lab, tmp_path: Path) -> None:
    lab.unload()
    ruleset = tmp_path / "ruleset.nft"
    ruleset.write_text(prod_ruleset())
    decisions = tmp_path / "decisions"
    decisions.mkdir()
    proc = start_guard(lab, ruleset, decisions, tmp_path)
    try:
        assert wait_until(lambda: _loaded(lab), 10)
        time.sleep(0.5)
        lab.ns(lab.host, "nft", "flush", "chain", *TABLE.split(), "forward")
        lab.ns(lab.host, "conntrack", "-F", check=False)
        assert wait_until(lambda: lab.answers(OTHER) == "timeout", 8)
    finally:
        _stop(proc)
        lab.unload()


# --------------------------------------------------------------------------- 4. bans vs operator

def test_admin_and_allow_listed_sources_pass_before_any_ban(clean: Lab) -> None:
    """Bans for the admin (client 3) and an allow-listed source (client 2) in the set, as a
    compromised IDS or an older guard would put them: the admin still reaches ssh and every
    published port; the allow-listed source the public port (and no more than the public)."""
    lab = clean
    lab.load(ruleset_with(firewall={"adminSources": [f"{lab.client_ip(3)}/32"]},
                          ids={"allowList": [f"{lab.client_ip(2)}/32"]}))
    for client in (1, 2, 3):
        lab.ns(lab.host, "nft", "add", "element", *TABLE.split(), "banned_v4",
               f"{{ {lab.client_ip(client)} timeout 600s }}")
    assert lab.answers(SSH, client=3) == "open"
    assert lab.answers(OTHER, client=3) == "open"
    assert lab.answers(PROXY_HTTP, client=2) == "open"
    assert lab.answers(OTHER, client=2) == "timeout"
    assert lab.answers(PROXY_HTTP, client=1) == "timeout"  # bans still work for the rest


def test_the_guard_refuses_bans_of_admin_and_allow_listed_sources(lab: Lab, tmp_path: Path) -> None:
    lab.unload()
    ruleset = tmp_path / "ruleset.nft"
    ruleset.write_text(ruleset_with(firewall={"adminSources": [f"{lab.client_ip(3)}/32"]},
                                    ids={"allowList": [f"{lab.client_ip(2)}/32"]}))
    decisions = tmp_path / "decisions"
    decisions.mkdir()
    for client in (1, 2, 3):
        _decision(decisions, lab.client_ip(client))
    never = f"{lab.client_ip(3)}/32,{lab.client_ip(2)}/32"
    proc = start_guard(lab, ruleset, decisions, tmp_path, "--never-ban", never)
    try:
        assert wait_until(lambda: _loaded(lab) and lab.element_count("banned_v4") >= 1, 10)
        time.sleep(0.5)
        assert _elements(lab, "banned_v4") == [lab.client_ip(1)]
        assert lab.answers(SSH, client=3) == "open"
    finally:
        code, stderr = _stop(proc)
        lab.unload()
    assert f"{lab.client_ip(3)} is an admin or allow-listed source" in stderr
    assert os.path.exists(decisions / lab.client_ip(3))  # refused, not deleted (read-only volume)
