"""safety.background_work (issue 15, part D): only the live color consumes and schedules.

The rules are unit-tested on contract documents, then proven end to end against the real
reference app: with its work disabled, and with real local Redis (one `redis-server` per
module) where the app really takes, holds and releases the lease, and with the fault
`ignore_lease` really runs its scheduler without it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import missing, require_tool, stop_process
from tests.support.fakes.validation_servers import PYTHON3, RefApp, free_port, reference_app, wait_port
from validation.checks_work import (
    WORK_FIELDS,
    WorkState,
    judge_active,
    judge_standby,
    parse_work_state,
)
from validation.context import CheckFailed


def doc(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "color": "green", "role": "standby", "epoch": 3, "liveColor": "blue",
        "consumers": [], "schedulers": [],
    }
    body.update(over)
    return body


def state(**over: Any) -> WorkState:
    return parse_work_state(doc(**over))


# ----------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("field", WORK_FIELDS)
def test_a_missing_contract_field_fails_naming_it(field: str) -> None:
    body = doc()
    del body[field]
    with pytest.raises(CheckFailed) as caught:
        parse_work_state(body)
    assert caught.value.details["missing"] == [field]
    assert field in caught.value.message and "does not implement" in caught.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("role", "leader"), ("role", None), ("role", True),
        ("epoch", "3"), ("epoch", -1), ("epoch", True), ("epoch", 2.5),
        ("liveColor", "red"), ("liveColor", ""), ("liveColor", 1),
        ("consumers", "paper-trading.orders"), ("consumers", [1]), ("consumers", [""]), ("consumers", None),
        ("schedulers", {"strategy-tick": True}), ("schedulers", None),
    ],
)
def test_a_malformed_contract_field_fails_naming_it(field: str, value: Any) -> None:
    with pytest.raises(CheckFailed) as caught:
        parse_work_state(doc(**{field: value}))
    (problem,) = caught.value.details["malformed"]
    assert problem.startswith(f"{field} is {value!r}")


def test_well_formed_documents_parse() -> None:
    parsed = parse_work_state(doc(role="active", epoch=0, liveColor=None, consumers=["q"], schedulers=["s"]))
    assert parsed.details() == {
        "role": "active", "epoch": 0, "liveColor": None, "consumers": ["q"], "schedulers": ["s"],
    }
    assert parse_work_state(doc(epoch=None, instance="green-1")).instance == "green-1"


# ----------------------------------------------------------------------------- the rules


@pytest.mark.parametrize("role", ["standby", "disabled"])
def test_standby_passes_idle(role: str) -> None:
    assert judge_standby("green", state(role=role), None).ok


@pytest.mark.parametrize(
    ("over", "named"),
    [
        ({"role": "active"}, "role active"),
        ({"role": "active", "consumers": ["paper-trading.orders"]}, "paper-trading.orders"),
        ({"schedulers": ["strategy-tick"]}, "schedulers strategy-tick"),
        ({"consumers": ["paper-trading.orders"]}, "consumers paper-trading.orders"),
        ({"role": "disabled", "schedulers": ["eod-pnl"]}, "schedulers eod-pnl"),
    ],
)
def test_standby_fails_naming_what_runs(over: dict[str, Any], named: str) -> None:
    verdict = judge_standby("green", state(**over), None)
    assert not verdict.ok and named in verdict.message


def test_a_disabled_candidate_fails_when_the_stack_runs_work() -> None:
    assert judge_standby("green", state(role="disabled"), False).ok
    verdict = judge_standby("green", state(role="disabled"), True)
    assert not verdict.ok and "work_enabled" in verdict.message


def test_active_needs_the_lease_for_its_own_color() -> None:
    holder = state(role="active", liveColor="green", epoch=4, consumers=["paper-trading.orders"])
    assert judge_active("green", [holder], True).ok
    assert judge_active("green", [holder], None).ok
    # liveColor still names the old color: the publish has not reached it (transient: polled).
    stale = judge_active("green", [state(role="active", liveColor="blue")], True)
    assert not stale.ok and stale.transient and "liveColor is blue" in stale.message
    nobody = judge_active("green", [state(role="standby", liveColor="green")], True)
    assert not nobody.ok and nobody.transient and "no instance holds the lease" in nobody.message


def test_active_disabled_only_when_the_stack_runs_no_work() -> None:
    disabled = state(role="disabled", liveColor=None, epoch=None)
    assert judge_active("green", [disabled], False).ok
    for work_enabled in (True, None):
        verdict = judge_active("green", [disabled], work_enabled)
        assert not verdict.ok and not verdict.transient and "work_enabled" in verdict.message
    busy = judge_active("green", [state(role="active", liveColor="green")], False)
    assert not busy.ok and "runs no background work" in busy.message


def test_active_with_replicas_one_holder_the_others_idle() -> None:
    holder = state(role="active", liveColor="green", epoch=5, schedulers=["strategy-tick"], instance="g1")
    idle = state(role="standby", liveColor="green", epoch=5, instance="g2")
    assert judge_active("green", [idle, holder, idle], True).ok
    busy_idle = state(role="standby", liveColor="green", consumers=["paper-trading.orders"], instance="g2")
    verdict = judge_active("green", [holder, busy_idle], True)
    assert not verdict.ok and verdict.state.instance == "g2" and "paper-trading.orders" in verdict.message
    twin = state(role="active", liveColor="green", epoch=5, instance="g3")
    verdict = judge_active("green", [holder, twin], True)
    assert not verdict.ok and "2 instances" in verdict.message


# ----------------------------------------------------------------------------- the real app

NAME = "safety.background_work"


def run_check(url: str, color: str | None, **options: Any) -> dict[str, Any]:
    """Run only safety.background_work against `url` through the real runner; its result as JSON."""
    from validation.options import ValidationOptions
    from validation.runner import applicable, run_checks

    plan = applicable(ValidationOptions(base_url=url))
    others = frozenset(item.name for item, _ in plan if item.name != NAME)
    settings = {"check_timeout": 3.0, "retries": 0, **options}
    opts = ValidationOptions.model_validate({"base_url": url, "color": color, "skip": others, **settings})
    results, _, _ = asyncio.run(run_checks(opts))
    (result,) = [r for r in results if r.name == NAME]
    return result.model_dump(by_alias=True, mode="json")


def test_work_disabled_passes_as_candidate_and_as_live_without_work() -> None:
    with reference_app(color="green") as app:
        inferred = run_check(app.url, "green")
        assert inferred["status"] == "passed", inferred
        assert inferred["details"]["role"] == "disabled" and inferred["details"]["expected"] == "standby"
        assert inferred["details"]["inferred"] is True
        assert (inferred["details"]["consumers"], inferred["details"]["schedulers"]) == ([], [])
        assert run_check(app.url, "green", expect_work_role="standby")["status"] == "passed"
        live = run_check(app.url, "green", expect_work_role="active", work_enabled=False)
        assert live["status"] == "passed", live
        # Disabled after promotion passes only when the stack is known to run no work.
        unknown = run_check(app.url, "green", expect_work_role="active")
        assert unknown["status"] == "failed" and "work_enabled" in unknown["message"]
        # A stack that runs work: a disabled candidate would do nothing once live.
        stack_works = run_check(app.url, "green", expect_work_role="standby", work_enabled=True)
        assert stack_works["status"] == "failed" and "work_enabled" in stack_works["message"]


# ----------------------------------------------------------------------------- with real Redis


@dataclass
class RedisServer:
    port: int
    password_file: Path
    client: Any

    def publish_live(self, color: str) -> int:
        """What the switch does: a new epoch for `color`, written to the live key and announced."""
        return publish_live(self.client, color)


def publish_live(client: Any, color: str) -> int:
    from contract import work as wc

    now_ms = int(time.time() * 1000)
    return int(client.eval(wc.PUBLISH_LIVE, 2, wc.EPOCH_KEY, wc.LIVE_KEY, color, now_ms, wc.CHANNEL))


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    import redis

    binary = require_tool("redis-server")
    probe = subprocess.run([PYTHON3, "-c", "import redis, pika"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        missing(f"{PYTHON3} lacks the reference app's worker libraries (Debian python3-redis, python3-pika)")
    folder = tmp_path_factory.mktemp("redis")
    password = secrets.token_hex(16)
    password_file = folder / "redis-password"
    password_file.write_text(password)
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder), "--requirepass", password],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        client = redis.Redis(host="127.0.0.1", port=port, password=password, decode_responses=True)
        client.ping()
        yield RedisServer(port, password_file, client)
        client.close()
    finally:
        stop_process(proc)


@pytest.fixture()
def redis_db(redis_server: RedisServer) -> RedisServer:
    redis_server.client.flushall()
    return redis_server


def work_env(server: RedisServer, **over: str) -> dict[str, str]:
    """The app's work settings as stack/app.py sets them, pointing at the test's Redis.

    No RabbitMQ here: no queues, so the work is the scheduler (`strategy-tick`).
    """
    return {
        "WORK_ENABLED": "true",
        "WORK_QUEUES": "",
        "WORK_LEASE_TTL_MS": "1500",
        "WORK_TICK_MS": "200",
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(server.port),
        "REDIS_PASSWORD_FILE": str(server.password_file),
        **over,
    }


def detailed(app: RefApp) -> dict[str, Any]:
    with urllib.request.urlopen(f"{app.url}/health/detailed", timeout=5) as response:  # noqa: S310 - loopback
        body: dict[str, Any] = json.loads(response.read())
    return body


def wait_for(app: RefApp, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = detailed(app)
        if predicate(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{app.url}: condition not met within {timeout}s: {body}")
        time.sleep(0.1)


def test_standby_candidate_passes_and_is_not_live(redis_db: RedisServer) -> None:
    redis_db.publish_live("blue")  # blue holds the work (no blue app here: nobody takes the lease)
    with reference_app(color="green", env=work_env(redis_db)) as green:
        wait_for(green, lambda b: b.get("liveColor") == "blue")
        for expect in (None, "standby"):
            result = run_check(green.url, "green", expect_work_role=expect, work_enabled=True)
            assert result["status"] == "passed", result
            d = result["details"]
            assert (d["role"], d["liveColor"], d["consumers"], d["schedulers"]) == ("standby", "blue", [], [])
            assert d["expected"] == "standby"
        sampled = run_check(green.url, "green", work_enabled=True, expected_replicas=3)
        assert sampled["status"] == "passed" and sampled["details"]["samples"] == 9, sampled
        # After promotion it would have to hold the work: it does not (liveColor names blue).
        live = run_check(green.url, "green", expect_work_role="active", work_enabled=True, check_timeout=1.0)
        assert live["status"] == "failed" and "liveColor is blue" in live["message"], live


def test_the_live_color_holds_the_work(redis_db: RedisServer) -> None:
    with reference_app(color="green", env=work_env(redis_db)) as green:
        epoch = redis_db.publish_live("green")
        wait_for(green, lambda b: b.get("role") == "active" and b.get("schedulers"))
        for expect in (None, "active"):
            result = run_check(green.url, "green", expect_work_role=expect, work_enabled=True)
            assert result["status"] == "passed", result
            d = result["details"]
            assert (d["role"], d["epoch"], d["liveColor"]) == ("active", epoch, "green")
            assert "strategy-tick" in d["schedulers"] and d["expected"] == "active"
        # With replicas the check samples each several times (here all answers come from one app).
        sampled = run_check(
            green.url, "green", expect_work_role="active", work_enabled=True, expected_replicas=2
        )
        assert sampled["status"] == "passed" and sampled["details"]["samples"] == 6, sampled
        # Validated as a candidate (before its promotion) it must not hold the lease.
        early = run_check(green.url, "green", expect_work_role="standby", work_enabled=True)
        assert early["status"] == "failed", early
        assert "role active" in early["message"] and "strategy-tick" in early["message"]
        assert "strategy-tick" in early["details"]["schedulers"]


def test_ignore_lease_fails_naming_the_scheduler(redis_db: RedisServer) -> None:
    redis_db.publish_live("blue")
    with reference_app(color="green", faults="ignore_lease", env=work_env(redis_db)) as green:
        body = wait_for(green, lambda b: "strategy-tick" in (b.get("schedulers") or []))
        # It runs the scheduler without the lease (blue is live; nobody holds it).
        from contract.work import LEASE_KEY

        assert not str(redis_db.client.get(LEASE_KEY) or "").startswith("green:")
        result = run_check(green.url, "green")
        assert result["status"] == "failed", result
        assert "strategy-tick" in result["message"] and result["details"]["schedulers"] == body["schedulers"]
        assert result["details"]["expected"] == "standby"


def test_the_work_moves_with_the_switch(redis_db: RedisServer) -> None:
    """Blue live, then green: after each publish exactly the live color passes as active."""
    with (
        reference_app(color="blue", env=work_env(redis_db)) as blue,
        reference_app(color="green", env=work_env(redis_db)) as green,
    ):
        redis_db.publish_live("blue")
        wait_for(blue, lambda b: b.get("role") == "active")
        works = {"work_enabled": True}
        assert run_check(blue.url, "blue", expect_work_role="active", **works)["status"] == "passed"
        assert run_check(green.url, "green", expect_work_role="standby", **works)["status"] == "passed"
        epoch = redis_db.publish_live("green")
        # The check itself waits (within its budget) for the new color to take the lease.
        promoted = run_check(green.url, "green", expect_work_role="active", check_timeout=8.0, **works)
        assert promoted["status"] == "passed", promoted
        assert promoted["details"]["epoch"] == epoch
        wait_for(blue, lambda b: b.get("role") != "active" and not b.get("schedulers"))
        old = run_check(blue.url, "blue", work_enabled=True)  # inferred from liveColor: standby
        assert old["status"] == "passed", old
        assert (old["details"]["expected"], old["details"]["liveColor"]) == ("standby", "green")


# ----------------------------------------------------------------------------- gate and CLI


def gate_props(url: str, color: str) -> dict[str, Any]:
    return {
        "candidateColor": color, "previewUrl": url, "image": "paper-trading-app:1.0", "replicas": 1.0,
        "options": {"check_timeout": 3, "timeout": 10, "retries": 1}, "enabled": True, "exchanges": None,
    }


def test_the_gate_approves_a_standby_candidate_and_refuses_one_that_works(redis_db: RedisServer) -> None:
    """The promotion gate (no work option: inferred from liveColor) on a candidate before promotion."""
    from release.gate import PromotionGateProvider
    from tests.support.fidelity_report import assert_failed_checks
    from validation.errors import DeploymentError

    redis_db.publish_live("blue")
    with reference_app(color="green", env=work_env(redis_db)) as green:
        wait_for(green, lambda b: b.get("liveColor") == "blue")
        approved = PromotionGateProvider().create(gate_props(green.url, "green"))
        assert approved.outs is not None and approved.outs["approvedColor"] == "green"
    with reference_app(color="green", faults="ignore_lease", env=work_env(redis_db)) as rogue:
        wait_for(rogue, lambda b: bool(b.get("schedulers")))
        with pytest.raises(DeploymentError) as caught:
            PromotionGateProvider().create(gate_props(rogue.url, "green"))
    assert_failed_checks(caught.value, {"safety.background_work"})
    assert "strategy-tick" in str(caught.value)


def test_cli_names_the_check_and_its_fields(redis_db: RedisServer, tmp_path: Path) -> None:
    from tests.support.fidelity_report import assert_failed_exactly, check
    from tests.support.validation_cli import run_report

    redis_db.publish_live("blue")
    with reference_app(color="green", env=work_env(redis_db)) as green:
        wait_for(green, lambda b: b.get("liveColor") == "blue")
        base = ("--base-url", green.url, "--color", "green", "--work-enabled", "true")
        result, report = run_report(tmp_path, *base, "--expect-work-role", "standby")
        assert result.returncode == 0, result.stdout + result.stderr
        details = check(report, NAME)["details"]
        assert (details["role"], details["expected"], details["inferred"]) == ("standby", "standby", False)
        # Told it is live while blue holds the work: only this check fails, within its budget.
        result, report = run_report(
            tmp_path, *base, "--expect-work-role", "active", env={"VALIDATION_CHECK_TIMEOUT": "1"}
        )
        assert result.returncode == 1
        assert_failed_exactly(report, {NAME})
        assert check(report, NAME)["details"]["liveColor"] == "blue"
