"""The promotion gate's own rules, on a real report with the checks' outcome fixed by the test.

One real validation run against the reference app (green, healthy) gives a genuine
`ValidationReport`; each test hands the gate that report (or a copy with one check changed)
through `_run_report`, so what is asserted is the gate's decision alone: which checks it
requires, which input changes re-run it, what it keeps in its state, and the audit records
it writes (intent first, then exactly one outcome), read back from a real file sink.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import release.gate as gate
from release import audit
from release.gate import PromotionGateProvider
from tests.support.fakes.validation_servers import reference_app
from validation.errors import DeploymentError

FAST = {"check_timeout": 3, "timeout": 10, "retries": 1}
KEY = {"exchange": "binance", "api_key": "key-0123456789", "api_secret": "s3cr3t-value-98765",
       "base_url": "https://api.binance.com"}
AM_PASSWORD = "am-pass-5550123"


@pytest.fixture(scope="module")
def report() -> Any:
    """A passed report of the healthy green reference app (no exchange keys: exchange_keys skipped)."""
    with reference_app(color="green") as app:
        real = gate._run_report(_props(app.url), "standby")
    assert real.passed
    statuses = {c.name: c.status for c in real.checks}
    assert statuses["safety.exchange_keys"] == "skipped"
    assert all(statuses[name] == "passed" for name in gate.ALWAYS_REQUIRED)
    return real


def _props(url: str = "http://127.0.0.1:9", **over: Any) -> dict[str, Any]:
    base = {"candidateColor": "green", "previewUrl": url, "image": "paper-trading-app:1.0", "replicas": 1.0,
            "options": dict(FAST), "enabled": True, "exchanges": None}
    base.update(over)
    return base


def _feed(monkeypatch: pytest.MonkeyPatch, result: Any, calls: list[str | None] | None = None) -> None:
    """Make the gate's validation run return `result` (or raise it, for an exception)."""

    def fake(_props: Any, expect_work_role: str | None = None) -> Any:
        if calls is not None:
            calls.append(expect_work_role)
        if isinstance(result, BaseException):
            raise result
        return result

    monkeypatch.setattr(gate, "_run_report", fake)


# --------------------------------------------------------------------------- required checks


def test_exchange_keys_must_have_run_and_passed_when_the_gate_holds_keys(
    monkeypatch: pytest.MonkeyPatch, report: Any
) -> None:
    """With keys given, a report where safety.exchange_keys skipped itself approves nothing."""
    _feed(monkeypatch, report)
    with pytest.raises(DeploymentError) as caught:
        PromotionGateProvider().create(_props(exchanges=[KEY]))
    assert caught.value.failed_checks == ("safety.exchange_keys",)
    assert "required checks that did not run and pass: safety.exchange_keys" in str(caught.value)
    # Without keys the same report approves: the check is required only when keys are given.
    outs = PromotionGateProvider().create(_props()).outs
    assert outs is not None and outs["approvedColor"] == "green"


def test_exchange_keys_missing_from_the_report_blocks_too(
    monkeypatch: pytest.MonkeyPatch, report: Any
) -> None:
    kept = [c for c in report.checks if c.name != "safety.exchange_keys"]
    trimmed = report.model_copy(update={"checks": kept})
    _feed(monkeypatch, trimmed)
    with pytest.raises(DeploymentError) as caught:
        PromotionGateProvider().create(_props(exchanges=[KEY]))
    assert caught.value.failed_checks == ("safety.exchange_keys",)


# --------------------------------------------------------------------------- what re-runs the gate


@pytest.mark.parametrize("change", [
    {"candidateColor": "blue"},
    {"candidateContainers": ["replaced-container-id"]},
    {"previewUrl": "http://127.0.0.1:10"},
    {"image": "paper-trading-app:2.0"},
    {"replicas": 2.0},
    {"options": {**FAST, "latency_threshold_ms": 100}},
    {"enabled": False},
    {"exchanges": [KEY]},
    {"alertmanagerPassword": AM_PASSWORD},
], ids=lambda change: next(iter(change)))
def test_every_input_the_approval_is_bound_to_reruns_the_gate(
    monkeypatch: pytest.MonkeyPatch, report: Any, change: dict[str, Any]
) -> None:
    """The approval stays in force (the proxy serves it: not spent), yet any of these changes re-runs it."""
    _feed(monkeypatch, report)
    olds = PromotionGateProvider().create(_props(candidateContainers=["container-id"])).outs
    assert olds is not None
    monkeypatch.setattr(gate, "spent", lambda _olds, _news, client=None: False)
    same = _props(candidateContainers=["container-id"])
    assert PromotionGateProvider().diff("gate", olds, same).changes is False
    news = {**same, **change}
    assert PromotionGateProvider().diff("gate", olds, news).changes is True


# --------------------------------------------------------------------------- state


def test_state_keeps_no_secret_only_its_fingerprint(monkeypatch: pytest.MonkeyPatch, report: Any) -> None:
    _feed(monkeypatch, report)
    plain = PromotionGateProvider().create(_props()).outs
    outs = PromotionGateProvider().create(_props(alertmanagerPassword=AM_PASSWORD)).outs
    assert plain is not None and outs is not None
    assert "alertmanagerPassword" not in outs and "exchanges" not in outs
    assert AM_PASSWORD not in json.dumps(outs, default=str)
    assert outs["secretsFingerprint"] != plain["secretsFingerprint"]


# --------------------------------------------------------------------------- audit records


class _Trail:
    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [audit.parse(line) for line in self.path.read_text().splitlines()]


@pytest.fixture
def trail(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> _Trail:
    """The gate's auditor writes to a real file (the same Auditor; only the sink differs)."""
    path = tmp_path / "audit.jsonl"

    def for_target(target: Any, actor: str | None = None, client: Any = None, secrets: Any = (),
                   warn: Any = None, **_kw: Any) -> audit.Auditor | None:
        if target is None:
            return None
        return audit.Auditor(target.stack, audit.FileSink(str(path)), "tester", secrets,
                             fail_closed=target.fail_closed)

    monkeypatch.setattr(audit.Auditor, "for_target", staticmethod(for_target))
    return _Trail(path)


def _target(**over: Any) -> dict[str, Any]:
    base = audit.AuditTarget(stack="gate-rules", volume="pt-audit-data", image="writer:1", actor="tester")
    return {**base.props(), **over}


def _results(trail: _Trail) -> list[tuple[str, str, str | None]]:
    return [(r["operation"], r["result"], r["to"]) for r in trail.records()]


def test_an_approval_writes_its_intent_before_any_check_then_ok(
    monkeypatch: pytest.MonkeyPatch, report: Any, trail: _Trail
) -> None:
    seen_before_checks: list[list[tuple[str, str, str | None]]] = []

    def fake(_props: Any, expect_work_role: str | None = None) -> Any:
        seen_before_checks.append(_results(trail))
        return report

    monkeypatch.setattr(gate, "_run_report", fake)
    outs = PromotionGateProvider().create(_props(audit=_target())).outs
    assert outs is not None and outs["approvedColor"] == "green"
    assert seen_before_checks == [[("gate", "started", "green")]]
    assert _results(trail) == [("gate", "started", "green"), ("gate", "ok", "green")]
    assert trail.records()[-1]["error"] is None


def test_a_gate_that_cannot_write_its_intent_runs_no_check(
    monkeypatch: pytest.MonkeyPatch, report: Any, tmp_path: Path
) -> None:
    """Fail closed: the intent record cannot be appended, so the gate stops before validating."""
    calls: list[str | None] = []
    _feed(monkeypatch, report, calls)
    missing = tmp_path / "no-such-dir" / "audit.jsonl"
    monkeypatch.setattr(audit.Auditor, "for_target", staticmethod(
        lambda target, *a, **k: audit.Auditor(target.stack, audit.FileSink(str(missing)), "tester",
                                              fail_closed=target.fail_closed)))
    with pytest.raises(audit.AuditUnavailable) as caught:
        PromotionGateProvider().create(_props(audit=_target()))
    assert (caught.value.operation, caught.value.result, caught.value.acted) == ("gate", "started", False)
    assert calls == []


def test_failed_checks_are_recorded_refused_naming_the_first_line(
    monkeypatch: pytest.MonkeyPatch, report: Any, trail: _Trail
) -> None:
    _feed(monkeypatch, report)
    with pytest.raises(DeploymentError):
        PromotionGateProvider().create(_props(audit=_target(), exchanges=[KEY]))
    assert _results(trail) == [("gate", "started", "green"), ("gate", "refused", "green")]
    error = trail.records()[-1]["error"]
    assert error.endswith(": required checks that did not run and pass: safety.exchange_keys")
    assert "\n" not in error


def test_a_disabled_gate_is_recorded_refused(
    monkeypatch: pytest.MonkeyPatch, report: Any, trail: _Trail
) -> None:
    calls: list[str | None] = []
    _feed(monkeypatch, report, calls)
    with pytest.raises(DeploymentError):
        PromotionGateProvider().create(_props(audit=_target(), enabled=False))
    assert _results(trail) == [("gate", "started", "green"), ("gate", "refused", "green")]
    assert "disabled" in trail.records()[-1]["error"]
    assert calls == []


def test_a_broken_gate_is_recorded_failed_without_its_secrets(
    monkeypatch: pytest.MonkeyPatch, trail: _Trail
) -> None:
    """Not a verdict: the validation run itself broke. Every secret the gate holds is masked."""
    leak = f"exchange answered 500 for {KEY['api_key']} {KEY['api_secret']} (alertmanager {AM_PASSWORD})"
    _feed(monkeypatch, RuntimeError(leak))
    with pytest.raises(RuntimeError):
        PromotionGateProvider().create(
            _props(audit=_target(), exchanges=[KEY], alertmanagerPassword=AM_PASSWORD))
    assert _results(trail) == [("gate", "started", "green"), ("gate", "failed", "green")]
    error = trail.records()[-1]["error"]
    assert error.startswith("exchange answered 500 for ")
    for secret in (KEY["api_key"], KEY["api_secret"], AM_PASSWORD):
        assert secret not in error
    assert error.count("***") == 3


def test_fail_open_a_gate_goes_on_without_its_records(
    monkeypatch: pytest.MonkeyPatch, report: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`failClosed: false` travels through the gate's props: the approval stands, with a warning."""
    _feed(monkeypatch, report)
    missing = tmp_path / "no-such-dir" / "audit.jsonl"
    monkeypatch.setattr(audit.Auditor, "for_target", staticmethod(
        lambda target, *a, **k: audit.Auditor(target.stack, audit.FileSink(str(missing)), "tester",
                                              fail_closed=target.fail_closed)))
    outs = PromotionGateProvider().create(_props(audit=_target(failClosed=False))).outs
    assert outs is not None and outs["approvedColor"] == "green"
    assert "could not append the gate record" in capsys.readouterr().err


def test_no_audit_target_means_no_records(
    monkeypatch: pytest.MonkeyPatch, report: Any, trail: _Trail
) -> None:
    _feed(monkeypatch, report)
    PromotionGateProvider().create(_props())
    assert trail.records() == []

