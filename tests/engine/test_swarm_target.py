"""The swarm target under the real engine, on the 3-node lab: the program's own `swarmlab` stack.

`up --policy-pack policies` from nothing deploys it and hands the work to blue; a second preview
(and one after `refresh`) plans nothing; each color runs on 2 nodes; the preview listener admits
only `swarm.previewFrom`; a flip under load moves every edge and the work with 0 failed requests
and every order exactly once, the old color untouched; a rotated key reaches each color only
through a release and the gate, on no disk; the emergency CLI rolls every edge back and forth;
every operation is in the data node's audit trail, and one it cannot take is refused; a faulty
candidate is refused with live unchanged; the node holding the work cut off drops no request,
its task replaced within 30 s, every order exactly once; load scales the live color out and
back; with two managers down `up` is refused; a node lost mid-rollout leaves live untouched.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.engine.engine import EngineProject
from tests.support import missing
from tests.support import swarm_work as work
from tests.support.swarm_load import Load, leader_back, no_leader, steady_leader, until
from tests.support.swarm_target import (
    EDGES,
    PORT,
    PREFIX,
    PREVIEW_PORT,
    cli,
    edge_urls,
    images,
    nft,
    node_id,
    on_disk_under,
    outcomes,
    records,
    replicas,
    scale_records,
    scaler_command,
    secret_digests,
    secret_names,
    served,
    service_version,
    set_faults,
    tasks,
    trail,
    trail_file,
    updating,
)
from tools.swarm_lab import DATA, Lab
from validation.checks_audit import audit_findings

pytestmark = pytest.mark.engine
STACK = "swarmlab"
APP_IMAGE = "paper-trading-reference-app:test"
NGINX_IMAGE = "paper-trading-ci/nginx:1.30.6"
ROOT = Path(__file__).resolve().parents[2]
#: Requests answered / failed under load, per operation (written to build/swarm-target.json).
MEASURED: dict[str, dict[str, int]] = {}
#: The exchange key the stack starts with and the one it is rotated to (read-only test values).
FIRST_KEY, SECOND_KEY = "lab-readonly-key-3f9a0c7e51d2", "lab-readonly-key-8b26d4e0a9f7"
KEY_FILE = "binance_api_key"


@pytest.fixture(scope="module")
def project(swarm_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProject]:
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        missing("the Pulumi CLI is not installed (run scripts/install-engine)")
    assert pulumi is not None
    engine = EngineProject(tmp_path_factory.mktemp("swarm-target"), pulumi, stack=STACK)
    engine.prepare()
    # The policy pack's own virtualenv (policies/venv): the project's, as scripts/test builds it.
    (engine.workdir / "policies" / "venv").symlink_to(ROOT / "venv")
    # An exchange key, a secret file of both colors (rotated below): set as the README says.
    engine.config_set("exchanges.binance.permissions", "READ_ONLY")
    engine.run("config", "set", "--secret", "--path", "exchanges.binance.apiKey", FIRST_KEY)
    try:
        yield engine
    finally:
        engine.run("destroy", "--yes", check=False)
        out = ROOT / "build" / "swarm-target.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({"timings_s": engine.timings, "load": MEASURED}, indent=2) + "\n")
        print(f"\nswarm target: {engine.timings} {MEASURED}")


def test_up_from_nothing_with_the_policy_pack(swarm_lab: Lab, project: EngineProject) -> None:
    project.run("up", "--yes", "--skip-preview", "--policy-pack", "policies", timing="swarm target up")
    outputs = project.outputs()
    assert outputs["activeColor"] == "blue"
    assert outputs["edgeUrls"] == edge_urls(swarm_lab)
    for url in edge_urls(swarm_lab):
        assert served(url) == {"blue"}, url
    # The first switch handed the work to blue: a blue task holds the lease, blue's tags consume.
    assert work.holder_node(swarm_lab, "blue") in EDGES
    assert all(tag.startswith("paper-trading-blue-") for tag in work.queue_consumers(swarm_lab))
    # The trail on the data node: blue's gate verdict, the switch to it, the deploy; chained.
    assert outcomes(swarm_lab) == [("gate", "ok", None, "blue"), ("switch", "ok", "none", "blue"),
                                   ("deploy", "ok", None, "blue")]
    assert audit_findings(trail(swarm_lab), "blue", STACK)[0] == []


def test_each_color_runs_on_at_least_two_nodes(swarm_lab: Lab) -> None:
    for color in ("blue", "green"):
        running = tasks(swarm_lab, color)
        assert len(running) == 2, running
        assert len({t["NodeID"] for t in running}) == 2, color


def test_a_second_preview_and_one_after_refresh_plan_nothing(project: EngineProject) -> None:
    proc = project.run("preview", "--expect-no-changes", "--diff", check=False)
    assert proc.returncode == 0, proc.stdout[-12000:]
    project.run("refresh", "--yes", "--skip-preview")
    proc = project.run("preview", "--expect-no-changes", "--diff", check=False)
    assert proc.returncode == 0, proc.stdout[-12000:]


def test_the_preview_listener_admits_only_preview_from(swarm_lab: Lab) -> None:
    url = f"http://{swarm_lab.node('n1').address}:{PREVIEW_PORT}/health"
    assert httpx.get(url, headers={"X-Preview-Color": "green"}, timeout=5).status_code == 200
    # From another node's address (not in swarm.previewFrom): nginx refuses it.
    script = (f"import urllib.request,urllib.error\ntry:\n urllib.request.urlopen('{url}',timeout=5)\n"
              " print(200)\nexcept urllib.error.HTTPError as e:\n print(e.code)")
    netns = f"--net=/var/run/netns/{swarm_lab.node('n3').netns}"
    done = subprocess.run(["nsenter", netns, "python3", "-c", script], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "403"


def test_flip_under_load_moves_every_edge_and_leaves_blue_warm(
        swarm_lab: Lab, project: EngineProject) -> None:
    blue_before, since = service_version(swarm_lab, "blue"), len(trail(swarm_lab))
    project.config_set("deployment.activeColor", "green")
    with Load(edge_urls(swarm_lab)) as load, work.publishing(swarm_lab, "flip", 400, 20):
        project.run("up", "--yes", "--skip-preview", "--policy-pack", "policies", timing="swarm flip")
        time.sleep(1)
        assert work.published(swarm_lab, "flip", 60) == "published=400"
    MEASURED["flip"] = {"ok": load.ok, "failed": load.failed}
    # The work moved with the traffic, and every order published across the flip ran exactly once.
    assert work.holder_node(swarm_lab, "green") in EDGES
    work.exactly_once(swarm_lab, "flip", 400)
    assert load.failed == 0 and load.ok > 50, (load.ok, load.failed, load.errors[:5])
    assert load.colors == {"blue", "green"}
    assert project.outputs()["activeColor"] == "green"
    for url in edge_urls(swarm_lab):
        assert served(url) == {"green"}, url
    # The old color was not touched: same service version, still 2 running tasks (warm for rollback).
    assert service_version(swarm_lab, "blue") == blue_before
    assert len(tasks(swarm_lab, "blue")) == 2
    assert outcomes(swarm_lab, since) == [("gate", "ok", None, "green"), ("switch", "ok", "blue", "green"),
                                          ("deploy", "ok", "blue", "green")]
    assert audit_findings(trail(swarm_lab), "green", STACK)[0] == []


def test_rollback_is_a_marker_rename_on_every_edge_with_no_failed_request(
        swarm_lab: Lab, project: EngineProject) -> None:
    since = len(trail(swarm_lab))
    with Load(edge_urls(swarm_lab)) as load:
        back = cli(project.workdir, "switch", "--to", "blue", "--reason", "engine test: instant rollback")
        time.sleep(1)
    MEASURED["rollback"] = {"ok": load.ok, "failed": load.failed}
    assert back.returncode == 0, back.stderr
    assert load.failed == 0 and load.colors == {"blue", "green"}, (load.ok, load.failed, load.errors[:5])
    for url in edge_urls(swarm_lab):
        assert served(url) == {"blue"}, url
    [record] = [r for r in records(swarm_lab, since) if r["result"] != "started"]
    assert (record["operation"], record["result"], record["from"], record["to"], record["reason"],
            record["checks"]) == ("emergency-switch", "ok", "green", "blue", "engine test: instant rollback",
                                  "post-promotion"), record
    shown = cli(project.workdir, "show")
    assert shown.returncode == 0 and shown.stdout.split() == ["ptsl-n1", "blue", "ptsl-n2", "blue"]
    # The state still says green is live; a change to blue (which the edge serves now) is refused.
    project.config_set("deployment.blue.replicas", "3")
    try:
        refused = project.run("preview", check=False)
    finally:
        project.config_set("deployment.blue.replicas", "2")
    assert refused.returncode != 0
    assert "ptsl-n1 serves blue; ptsl-n2 serves blue, but this run would change" in refused.stdout, \
        refused.stdout[-3000:]
    forward = cli(project.workdir, "switch", "--to", "green", "--reason", "engine test: back to the release")
    assert forward.returncode == 0, forward.stderr
    for url in edge_urls(swarm_lab):
        assert served(url) == {"green"}, url


def test_a_rotated_key_goes_through_the_gate_color_by_color_with_no_failed_request(
        swarm_lab: Lab, project: EngineProject) -> None:
    """The exchange key rotated in the config: released to the idle color (blue) and flipped, then
    to green and flipped back, under load. Each color's tasks read the new key once released to
    it; until then the live color keeps the old one (never changed in place). Its old secret is
    deleted; neither key is on any node's disk (only the tasks' tmpfs) or in the stack export."""
    first, second = (hashlib.sha256(key.encode()).hexdigest() for key in (FIRST_KEY, SECOND_KEY))
    for color in ("blue", "green"):
        assert secret_digests(swarm_lab, color, KEY_FILE) == {first}, color
    before = {color: secret_names(swarm_lab, color, KEY_FILE) for color in ("blue", "green")}
    project.run("config", "set", "--secret", "--path", "exchanges.binance.apiKey", SECOND_KEY)
    for color in ("blue", "green"):
        project.config_set("deployment.activeColor", color)
        with Load(edge_urls(swarm_lab)) as load:
            project.run("up", "--yes", "--skip-preview", "--policy-pack", "policies",
                        timing=f"rotation to {color}")
            time.sleep(1)
        MEASURED[f"rotation_{color}"] = {"ok": load.ok, "failed": load.failed}
        assert load.failed == 0 and load.ok > 20, (load.ok, load.failed, load.errors[:5])
        assert all(served(url) == {color} for url in edge_urls(swarm_lab))
        assert secret_digests(swarm_lab, color, KEY_FILE) == {second}
        if color == "blue":  # green, live until now, was left as it was
            assert secret_digests(swarm_lab, "green", KEY_FILE) == {first}
            assert secret_names(swarm_lab, "green", KEY_FILE) == before["green"]
    for color in ("blue", "green"):
        names = secret_names(swarm_lab, color, KEY_FILE)
        assert len(names) == 1 and names.isdisjoint(before[color]), (color, names, before[color])
    for key in (FIRST_KEY, SECOND_KEY):
        assert on_disk_under(DATA, key.encode()) == []
    exported = project.run("stack", "export").stdout
    assert FIRST_KEY not in exported and SECOND_KEY not in exported


def test_a_switch_one_edge_cannot_confirm_is_undone_on_every_edge(
        swarm_lab: Lab, project: EngineProject) -> None:
    """n2's live listener drops every packet: its markers move, its confirmation fails, and both
    nodes are renamed back, so the edge never stays split."""
    nft(swarm_lab, "n2", "add", "table", "inet", "ptsl_test")
    # Before Docker's DNAT (host-mode ports are DNAT to the task): a prerouting hook ahead of nat.
    nft(swarm_lab, "n2", "add", "chain", "inet", "ptsl_test", "pre",
         "{ type filter hook prerouting priority -300 ; policy accept ; }")
    nft(swarm_lab, "n2", "add", "rule", "inet", "ptsl_test", "pre", "tcp", "dport", str(PORT), "drop")
    since = len(trail(swarm_lab))
    try:
        moved = cli(project.workdir, "switch", "--to", "blue", "--reason",
                    "engine test: one edge unreachable")
    finally:
        nft(swarm_lab, "n2", "delete", "table", "inet", "ptsl_test")
    assert moved.returncode == 1
    assert "node ptsl-n2:" in moved.stderr, moved.stderr
    assert "switched back on every edge node (ptsl-n1, ptsl-n2)" in moved.stderr, moved.stderr
    for url in edge_urls(swarm_lab):
        assert served(url) == {"green"}, url
    assert outcomes(swarm_lab, since) == [("emergency-switch", "failed", "green", "blue"),
                                          ("rollback", "ok", "blue", "green")]


def test_a_handoff_the_broker_cannot_confirm_is_undone_on_every_edge(
        swarm_lab: Lab, project: EngineProject) -> None:
    """Another program consumes the work queue: the switch to blue moves both edges, the handoff
    cannot confirm that only blue consumes and fails at its deadline, both edges go back to green
    and the work is handed back to green (whose own check the same consumer fails: said too)."""
    epoch, since = work.lease(swarm_lab), len(trail(swarm_lab))
    with work.publishing(swarm_lab, "rogue", 0, 1, mode="consume"):
        assert until(lambda: "reporting-tool-1" in work.queue_consumers(swarm_lab), 60) is not None
        moved = cli(project.workdir, "switch", "--to", "blue", "--reason", "engine test: a foreign consumer")
    assert moved.returncode == 1
    assert "background-work handoff to blue failed" in moved.stderr, moved.stderr
    assert "'paper-trading.orders' has 1 consumer(s) not of blue" in moved.stderr, moved.stderr
    assert "switched back on every edge node (ptsl-n1, ptsl-n2)" in moved.stderr, moved.stderr
    assert "background work NOT handed back to green" in moved.stderr, moved.stderr
    for url in edge_urls(swarm_lab):
        assert served(url) == {"green"}, url
    # The hand-back published green again: a green task holds the work at a later epoch.
    held = work.lease(swarm_lab)
    assert epoch is not None and held is not None and held[0] == "green" and held[1] > epoch[1], held
    only_green = until(lambda: work.only_consumer(swarm_lab, "green"), 30)
    assert only_green is not None, work.queue_consumers(swarm_lab)
    # Traffic went back, the work did not: not a completed rollback.
    assert outcomes(swarm_lab, since) == [("emergency-switch", "failed", "green", "blue"),
                                          ("rollback", "failed", "blue", "green")]


def test_a_trail_that_cannot_take_the_intent_refuses_up_and_the_cli(
        swarm_lab: Lab, project: EngineProject) -> None:
    """The trail's file swapped for a directory on the data node: a release of blue fails at the
    gate's intent record, before any check; the emergency CLI exits 74 before any marker moves;
    every edge stays green. (Fail closed: security.audit.failClosed, always for the CLI.)"""
    path = trail_file(swarm_lab)
    kept = path.with_name("audit.jsonl.kept")
    path.rename(kept)
    path.mkdir()
    try:
        project.config_set("deployment.activeColor", "blue")
        up = project.run("up", "--yes", "--skip-preview", check=False)
        emergency = cli(project.workdir, "switch", "--to", "blue", "--reason", "engine test: no trail")
    finally:
        project.config_set("deployment.activeColor", "green")
        path.rmdir()
        kept.rename(path)
    assert up.returncode != 0 and "audit: gate refused before it acted" in up.stdout, up.stdout[-3000:]
    assert emergency.returncode == 74, emergency.stderr
    assert "audit: emergency-switch refused before it acted" in emergency.stderr, emergency.stderr
    for url in edge_urls(swarm_lab):
        assert served(url) == {"green"}, url
    assert project.outputs()["activeColor"] == "green"


def test_a_faulty_candidate_is_refused_and_every_edge_stays_live(
        swarm_lab: Lab, project: EngineProject) -> None:
    set_faults(swarm_lab, "blue", "paper_mode_off")
    try:
        project.config_set("deployment.activeColor", "blue")
        proc, events = project.events("up", "--yes", "--skip-preview", timing="swarm refused up")
    finally:
        set_faults(swarm_lab, "blue")
        project.config_set("deployment.activeColor", "green")  # the released color, for what follows
    assert proc.returncode != 0
    errors = [e["diagnosticEvent"]["message"] for e in events
              if e.get("diagnosticEvent", {}).get("severity") == "error"]
    assert any("safety.paper_trading_mode" in m and "blue was not promoted" in m for m in errors), errors
    assert project.outputs()["activeColor"] == "green"
    for url in edge_urls(swarm_lab):
        assert served(url) == {"green"}, url


def test_a_node_holding_live_tasks_lost_drops_no_request(swarm_lab: Lab) -> None:
    """The node whose green task holds the work (not the raft leader) is cut off while orders are
    published and 4 clients go through the other edge: nginx tries the next task (connect timeout
    1 s on Swarm), Swarm replaces the lost task within 30 s, the other green task takes the lease
    once the orphan's expires, and every order runs exactly once (the orphan's commits are fenced)."""
    victim = work.holder_node(swarm_lab, "green")
    assert victim is not None, work.lease(swarm_lab)
    moved_off = int(victim == work.leader(swarm_lab))
    if moved_off:
        # Cutting the raft leader adds an election before Swarm can replace anything (measured
        # 27-38 s): the work is first moved off it, by crashing the holder (docs/swarm.md).
        victim = work.move_work_off(swarm_lab, "green", victim)
    assert victim in EDGES and victim != work.leader(swarm_lab), victim
    orphan = work.lease(swarm_lab)
    lost = node_id(swarm_lab, victim)
    other = next(url for name, url in zip(EDGES, edge_urls(swarm_lab), strict=True) if name != victim)
    replaced_after = restored_after = None
    with work.publishing(swarm_lab, "cut", 600, 20), Load([other], timeout=20, clients=4) as load:
        time.sleep(5)  # orders in flight to the holder when it goes
        started = time.monotonic()
        swarm_lab.partition(victim)
        try:
            replaced_after = until(lambda: len(tasks(swarm_lab, "green", lost=lost)) == 2, 60)
            if until(lambda: work.restored(swarm_lab, orphan), 60) is not None:
                restored_after = time.monotonic() - started
            time.sleep(3)  # traffic on the replacement too
        finally:
            swarm_lab.heal(victim)
        assert work.published(swarm_lab, "cut", 90) == "published=600"
    MEASURED["partition"] = {"ok": load.ok, "failed": load.failed,
                             "replaced_ms": int((replaced_after or -1) * 1000),
                             "work_restored_ms": int((restored_after or -1) * 1000),
                             "moved_off_leader": moved_off}
    assert load.failed == 0 and load.ok > 20, (load.ok, load.failed, load.errors[:5])
    assert replaced_after is not None and replaced_after <= 30, replaced_after
    assert restored_after is not None, "no other green task took the work within 60 s"
    work.exactly_once(swarm_lab, "cut", 600)
    # The healed node rejoins: a raft leader again (its return can unseat the old one for a while:
    # swarmkit has no pre-vote), every node ready, and steadily so, before the next test.
    assert steady_leader(swarm_lab), "no steady raft leader within 150 s of healing"


def test_load_scales_the_live_color_out_to_its_bound_and_back(
        swarm_lab: Lab, alertmanager: str, tmp_path: Path, scale_orders: str) -> None:
    """Clients holding requests in flight scale green 2 -> 4 (maxReplicas, alerted), no running task
    replaced; fewer clients scale it back to 2; 0 failed requests throughout; every change audited;
    every order published meanwhile committed exactly once. An audit trail that cannot be written
    scales nothing (fail closed)."""
    assert steady_leader(swarm_lab)
    # Every edge serves green again (an edge node cut off by the test before gets its proxy back).
    assert until(lambda: all(served(url, 2) == {"green"} for url in edge_urls(swarm_lab)), 90) is not None
    before = {t["ID"] for t in tasks(swarm_lab, "green")}
    assert replicas(swarm_lab, "green") == 2 and len(before) == 2
    audit = tmp_path / "scale.jsonl"
    with Load(edge_urls(swarm_lab), timeout=20, path="/api/backtest?ms=400", clients=16) as heavy:
        # Until the signal shows the load (and the edge healed by the test before agrees again), a
        # decision holds; then it wants a replica more, and the trail (a directory) refuses it.
        refusals: list[str] = []

        def audit_refused() -> bool:
            once = subprocess.run(scaler_command(tmp_path, "--once"), capture_output=True, text=True,
                                  cwd=ROOT)
            refusals.append(once.stderr or once.stdout)
            return once.returncode == 1 and "audit: scale refused before it acted" in once.stderr

        assert until(audit_refused, 90) is not None, refusals[-3:]
        assert replicas(swarm_lab, "green") == 2  # the trail is a directory: no record, no scale
        scaler = subprocess.Popen(scaler_command(audit, "--interval", "1"), cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        try:
            out_after = until(lambda: replicas(swarm_lab, "green") == 4
                               and len(tasks(swarm_lab, "green")) == 4, 90)
            held = until(lambda: any(r["result"] == "refused" for r in scale_records(audit)), 30)
        finally:
            scaler.terminate()
            log, _ = scaler.communicate(timeout=10)
    assert out_after is not None and held is not None, log[-3000:]
    running = {t["ID"] for t in tasks(swarm_lab, "green")}
    assert before <= running, "a running task was replaced while scaling out"
    alerts = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5,
                       params={"filter": 'alertname="PaperTradingAutoscaleAtBound"'}).json()
    assert {(a["labels"]["color"], a["labels"]["bound"]) for a in alerts} == {("green", "max")}, alerts
    held_before = work.lease(swarm_lab)  # a task removed by the scale-in may hold the work
    with Load(edge_urls(swarm_lab), timeout=20, path="/api/backtest?ms=20", clients=1) as light:
        scaler = subprocess.Popen(scaler_command(audit, "--interval", "1"), cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        try:
            in_after = until(lambda: replicas(swarm_lab, "green") == 2
                              and len(tasks(swarm_lab, "green")) == 2, 90)
            time.sleep(3)  # traffic on the remaining tasks
        finally:
            scaler.terminate()
            log, _ = scaler.communicate(timeout=10)
    assert in_after is not None, log[-3000:]
    MEASURED["autoscale"] = {"heavy_ok": heavy.ok, "heavy_failed": heavy.failed, "light_ok": light.ok,
                             "light_failed": light.failed, "out_ms": int(out_after * 1000),
                             "in_ms": int(in_after * 1000),
                             "work_moved_on_scale_in": int(work.lease(swarm_lab) != held_before)}
    assert heavy.failed == 0 and light.failed == 0, (heavy.errors[:5], light.errors[:5])
    assert heavy.ok > 50 and light.ok > 20, (heavy.ok, light.ok)
    steps = [(r["from"], r["to"], r["result"]) for r in scale_records(audit) if r["operation"] == "scale"]
    changes = [(a, b) for a, b, result in steps if result == "ok"]
    assert changes == [("2", "3"), ("3", "4"), ("4", "3"), ("3", "2")], steps
    assert all(r["reason"].startswith("live green: ") for r in scale_records(audit)), scale_records(audit)
    alerts = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5,
                       params={"filter": 'alertname="PaperTradingAutoscaleAtBound"'}).json()
    assert {a["labels"]["bound"] for a in alerts} == {"max", "min"}, alerts
    assert work.published(swarm_lab, scale_orders, 180) == "published=1200"
    work.exactly_once(swarm_lab, scale_orders, 1200)


def test_two_managers_down_up_fails_clearly_and_the_apps_keep_serving(
        swarm_lab: Lab, project: EngineProject) -> None:
    """n2 and n3 stop taking part as managers (their swarm control port dropped; their tasks and
    the overlay keep working): the swarm has no leader, a release of the idle color is refused by
    the Swarm release guard before anything changes, clients see no failure; with the managers
    back, the same release completes. (What clients see while the managers return is measured
    and reported, not asserted: the new leader may restart a proxy task, docs/swarm.md.)"""
    assert steady_leader(swarm_lab)
    assert until(lambda: all(served(url, 2) == {"green"} for url in edge_urls(swarm_lab)), 90) is not None
    proxies = {t["ID"] for t in swarm_lab.manager().api.tasks(
        filters={"service": f"{PREFIX}-proxy", "desired-state": "running"})}
    project.config_set("deployment.blue.replicas", "3")
    try:
        with Load(edge_urls(swarm_lab), clients=2) as outage:
            for name in ("n2", "n3"):
                swarm_lab.cut_raft(name)
            lost_after = until(lambda: no_leader(swarm_lab), 90)
            assert lost_after is not None
            refused = project.run("up", "--yes", "--skip-preview", check=False)
    finally:
        with Load(edge_urls(swarm_lab), clients=2) as recovery:
            for name in ("n2", "n3"):
                swarm_lab.heal_raft(name)
            back_after = until(lambda: leader_back(swarm_lab), 120)
            steady = steady_leader(swarm_lab)
    proxies_after = {t["ID"] for t in swarm_lab.manager().api.tasks(
        filters={"service": f"{PREFIX}-proxy", "desired-state": "running"})}
    MEASURED["managers_down"] = {
        "ok": outage.ok, "failed": outage.failed, "no_leader_ms": int(lost_after * 1000),
        "leader_back_ms": int((back_after or -1) * 1000), "recovery_ok": recovery.ok,
        "recovery_failed": recovery.failed, "proxy_tasks_replaced": len(proxies - proxies_after)}
    assert refused.returncode != 0
    assert "the swarm cannot take changes through its manager unix:///run/ptsl/n1.sock" in refused.stdout, \
        refused.stdout[-3000:]
    assert "Nothing was changed" in refused.stdout
    assert outage.failed == 0 and outage.ok > 20, (outage.ok, outage.failed, outage.errors[:5])
    assert back_after is not None and steady
    assert until(lambda: all(served(url, 2) == {"green"} for url in edge_urls(swarm_lab)), 90) is not None
    project.run("up", "--yes", "--skip-preview")
    assert replicas(swarm_lab, "blue") == 3 and len(tasks(swarm_lab, "blue")) == 3
    assert project.outputs()["activeColor"] == "green"


def test_a_node_lost_during_the_idle_rollout_leaves_live_untouched(
        swarm_lab: Lab, project: EngineProject) -> None:
    """A release of blue (idle: a new image tag, 3 tasks, all at once) while n2, an edge node running
    app tasks, is cut off the hub mid-rollout: clients through n1's edge see no failure, and the
    release either completes (blue's tasks all on the new image) or fails naming why (the gate
    wants blue on 2 nodes), with green live on every edge once n2 is back. (When every green task
    runs on n2, which Swarm allows after a node loss, it never rebalances, cutting n2 would take
    green away from every edge: n3, the data node, is cut instead.)"""
    assert steady_leader(swarm_lab)
    names = {node_id(swarm_lab, n.name): n.name for n in swarm_lab.nodes}
    victim = "n3" if {names[t["NodeID"]] for t in tasks(swarm_lab, "green")} == {"n2"} else "n2"
    for node in swarm_lab.nodes:
        node.client().images.get(APP_IMAGE).tag(APP_IMAGE.split(":")[0], "test-rollout")
    project.config_set("deployment.blue.image", f"{APP_IMAGE.split(':')[0]}:test-rollout")
    result: dict[str, subprocess.CompletedProcess[str]] = {}
    release = threading.Thread(target=lambda: result.update(
        up=project.run("up", "--yes", "--skip-preview", check=False)))
    with Load(edge_urls(swarm_lab)[:1], clients=2, timeout=20) as load:
        release.start()
        # Cut n2 off once blue's rollout is under way (its service has a newer spec than its tasks).
        rolling = until(lambda: updating(swarm_lab, "blue"), 60)
        swarm_lab.partition(victim)
        try:
            release.join(timeout=300)
        finally:
            swarm_lab.heal(victim)
    assert not release.is_alive()
    up = result["up"]
    MEASURED["rollout_node_lost"] = {"ok": load.ok, "failed": load.failed, "up_rc": up.returncode,
                                     "victim": int(victim[1:])}
    assert rolling is not None, "blue's rollout never started"
    assert load.failed == 0 and load.ok > 20, (load.ok, load.failed, load.errors[:5])
    assert steady_leader(swarm_lab)
    # The node back: its edge set and its old task settle (a healed node reports late).
    assert until(lambda: all(served(url, 2) == {"green"} for url in edge_urls(swarm_lab)), 90) is not None
    assert project.outputs()["activeColor"] == "green"
    if up.returncode == 0:
        rolled = f"{APP_IMAGE.split(':')[0]}:test-rollout"
        assert until(lambda: images(swarm_lab, "blue") == {rolled}, 90) is not None, images(swarm_lab, "blue")
    else:  # failed cleanly: said why, and nothing moved traffic (above)
        assert "error:" in up.stdout + up.stderr, up.stdout[-3000:]
