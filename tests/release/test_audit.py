"""The audit trail's record, shipping and check, without Docker (issue 14, part 3).

Promtail and Loki are not packaged in Debian and no registry is reachable, so their configs
are checked structurally: the program's rendered promtail.yml / loki.yml are loaded as YAML
and the audit job's pipeline is walked against a record the real writer produced (its json
stage's keys exist in the record, its timestamp parses as RFC 3339, its labels are the
extracted fields, its metrics stage counts every line). The records themselves are real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

import contract
from release import audit
from release.audit import FIELDS, Auditor, AuditRecord, FileSink, parse
from render.monitoring import layout
from tests.support import render_with, rendered
from tests.support.audit_trail import _check, _line

ROOT = Path(__file__).resolve().parents[2]


def _record(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    sink = FileSink(str(tmp_path / "audit.jsonl"))
    Auditor("prod", sink, actor="alice").record(**{"operation": "switch", "result": "ok",
                                                    "duration_ms": 12.34, **kw})
    [line] = (tmp_path / "audit.jsonl").read_text().splitlines()
    return parse(line)


def test_a_record_has_every_field_in_order(tmp_path: Path) -> None:
    rec = _record(tmp_path, from_="blue", to="green")
    assert tuple(rec) == FIELDS
    assert rec["actor"] == "alice" and rec["stack"] == "prod" and rec["operation"] == "switch"
    assert (rec["from"], rec["to"], rec["backup_id"], rec["result"], rec["error"]) == (
        "blue", "green", None, "ok", None)
    assert rec["duration_ms"] == 12.3
    stamp = datetime.fromisoformat(rec["time"].replace("Z", "+00:00"))
    offset = stamp.utcoffset()
    assert rec["time"].endswith("Z") and offset is not None and offset.total_seconds() == 0


def test_unknown_operation_or_result_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        AuditRecord(actor="a", stack="s", operation="reboot", result="ok", duration_ms=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown result"):
        AuditRecord(actor="a", stack="s", operation="gate", result="maybe", duration_ms=1)  # type: ignore[arg-type]


def test_actor_from_environment_else_configured_else_os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(audit.ACTOR_ENV, "carol")
    assert audit.default_actor("ci") == "carol"
    monkeypatch.delenv(audit.ACTOR_ENV)
    assert audit.default_actor("ci") == "ci"
    import getpass

    assert audit.default_actor(None) == getpass.getuser()


def test_no_generated_secret_reaches_a_record(tmp_path: Path) -> None:
    """The gate's error with the stack's generated passwords in it: none is in the line."""
    graph = rendered("prod")
    # The render's random provider mock generates `mock-<name>-<length>` (tools/render.py).
    passwords = [f"mock-{r.name}-{int(r.inputs.get('length', 32))}"
                 for r in graph.of_type("random:index/randomPassword:RandomPassword")]
    assert passwords, "the render generated no passwords"
    message = (f"check failed: alertmanager said 401 for prometheus:{passwords[0]} "
               f"(password={passwords[-1]}) url=http://prometheus:{passwords[0]}@alertmanager:9093")
    sink = FileSink(str(tmp_path / "audit.jsonl"))
    auditor = Auditor("prod", sink, actor="a", secrets=passwords)
    auditor.record("gate", "refused", 5, to="green", error=message)
    text = (tmp_path / "audit.jsonl").read_text()
    for password in passwords:
        assert password not in text
    assert parse(text.strip())["error"].count("***") >= 3


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    """Many processes append long records at once: every line is one whole record."""
    path = tmp_path / "audit.jsonl"
    script = ("import sys; from release.audit import Auditor, FileSink; "
              "a = Auditor('s', FileSink(sys.argv[1]), actor='w' + sys.argv[2]); "
              "[a.record('backup', 'failed', 1, backup_id='b' * 200, error='x' * 900) for _ in range(50)]")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), str(i)], cwd=ROOT)
             for i in range(8)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    lines = path.read_text().splitlines()
    assert len(lines) == 400
    assert all(parse(line)["operation"] == "backup" for line in lines)


def test_a_failed_append_warns_and_does_not_raise_when_fail_open(tmp_path: Path) -> None:
    said: list[str] = []
    path = tmp_path / "missing" / "audit.jsonl"
    auditor = Auditor("s", FileSink(str(path)), actor="a", warn=said.append, fail_closed=False)
    auditor.begin("switch", to="green")
    auditor.record("switch", "ok", 1)
    assert len(said) == 2 and all(f"file {path}" in line for line in said)
    assert "could not append the switch record" in said[0]


# ------------------------------------------------------------------ intent first, fail closed (issue 20)


def test_intent_then_outcome(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    auditor = Auditor("prod", FileSink(str(path)), actor="alice")
    auditor.begin("gate", to="green")
    auditor.record("gate", "ok", 5, to="green")
    recs = [parse(line) for line in path.read_text().splitlines()]
    assert [(r["operation"], r["result"], r["to"], r["duration_ms"]) for r in recs] == [
        ("gate", "started", "green", 0.0), ("gate", "ok", "green", 5.0)]
    assert all(tuple(r) == FIELDS and r["reason"] is None and r["checks"] is None for r in recs)


def test_fail_closed_intent_that_cannot_be_appended_raises_naming_the_sink(tmp_path: Path) -> None:
    """The default: `begin` raises AuditUnavailable (result started, nothing acted) and writes nothing."""
    path = tmp_path / "not-mounted" / "audit.jsonl"
    with pytest.raises(audit.AuditUnavailable) as refused:
        Auditor("prod", FileSink(str(path)), actor="a").begin("switch", to="green")
    exc = refused.value
    assert (exc.operation, exc.result, exc.acted, exc.where) == ("switch", "started", False, f"file {path}")
    assert exc.cause.startswith("FileNotFoundError")
    assert "refused before it acted" in str(exc)


def test_fail_closed_outcome_that_cannot_be_appended_raises_after_acting() -> None:
    """/dev/full: the kernel's always-full device, a real ENOSPC on every write."""
    auditor = Auditor("prod", FileSink("/dev/full"), actor="a", fail_closed=True)
    with pytest.raises(audit.AuditUnavailable) as lost:
        auditor.record("switch", "ok", 3, from_="blue", to="green")
    exc = lost.value
    assert (exc.operation, exc.result, exc.acted) == ("switch", "ok", True)
    assert exc.cause.startswith("OSError") and "No space left on device" in exc.cause
    with pytest.raises(audit.AuditUnavailable) as refused:
        auditor.record("switch", "refused", 3, to="green", error="nginx -t failed")
    assert (refused.value.acted, refused.value.error) == (False, "nginx -t failed")


def test_fail_closed_travels_through_the_target_props() -> None:
    from release.audit import AuditTarget

    on = AuditTarget("prod", "v", "img")
    assert on.fail_closed is True and on.props()["failClosed"] is True
    off = AuditTarget.from_props(AuditTarget("prod", "v", "img", fail_closed=False).props())
    assert off is not None and off.fail_closed is False
    auditor = Auditor.for_target(off)
    assert auditor is not None and auditor.fail_closed is False
    # State written before the key existed: fail closed.
    legacy = AuditTarget.from_props({"stack": "prod", "volume": "v", "image": "img"})
    assert legacy is not None and legacy.fail_closed is True
    with pytest.raises(ValueError, match="failClosed"):
        AuditTarget.from_props({"stack": "prod", "volume": "v", "image": "img", "failClosed": "no"})


def test_a_legacy_record_still_parses_with_null_reason_and_checks() -> None:
    legacy = ('{"time":"2025-01-01T12:00:00.123Z","actor":"a","stack":"prod","operation":"switch",'
              '"from":"blue","to":"green","backup_id":null,"result":"ok","duration_ms":1.0,"error":null}')
    rec = parse(legacy)
    assert tuple(rec) == FIELDS and (rec["reason"], rec["checks"]) == (None, None)
    assert _check([_line("gate", "ok", "green"), legacy])[0] == []


def test_reason_and_checks_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown checks"):
        AuditRecord(actor="a", stack="s", operation="emergency-switch", result="ok", duration_ms=1,
                    checks="some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reason"):
        AuditRecord(actor="a", stack="s", operation="emergency-switch", result="ok", duration_ms=1,
                    reason=" ")


# ------------------------------------------------------------------ shipping


def _promtail(graph: Any) -> dict[str, Any]:
    [text] = [c for k, c in graph.files().items() if k.endswith(layout.PROMTAIL_CONFIG)]
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def test_promtail_ships_the_audit_file_with_its_labels_and_counter(tmp_path: Path) -> None:
    graph = rendered("prod")
    jobs = {job["job_name"]: job for job in _promtail(graph)["scrape_configs"]}
    job = jobs["audit"]
    [static] = job["static_configs"]
    assert static["labels"]["job"] == "audit" and static["labels"]["stack"] == "prod"
    assert static["labels"]["__path__"] == f"{audit.AUDIT_DIR}/{audit.AUDIT_FILE}"
    stages = job["pipeline_stages"]
    assert [next(iter(s)) for s in stages] == ["json", "labels", "timestamp", "metrics"]
    # Walk the pipeline over a record the real writer produced.
    record = _record(tmp_path, from_="blue", to="green")
    extracted = {name: record[path] for name, path in stages[0]["json"]["expressions"].items()}
    assert extracted == {"operation": "switch", "result": "ok", "time": record["time"]}
    assert set(stages[1]["labels"]) == {"operation", "result"} <= set(extracted)
    assert stages[2]["timestamp"] == {"source": "time", "format": "RFC3339Nano"}
    datetime.fromisoformat(extracted["time"].replace("Z", "+00:00"))
    [(name, metric)] = stages[3]["metrics"].items()
    assert metric["prefix"] + name == "paper_trading_audit_records_total"
    assert metric["type"] == "Counter" and metric["config"] == {"match_all": True, "action": "inc"}


def test_log_collector_mounts_the_audit_volume_read_only_and_backup_writes_it() -> None:
    graph = rendered("prod")
    prefix = "paper-trading"
    by_name = {c.inputs["name"]: c for c in graph.containers}
    volume = audit.volume_name(prefix)
    collector = [v for v in by_name[f"{prefix}-log-collector"].inputs["volumes"]
                 if v.get("volumeName") == volume]
    assert collector == [{"volumeName": volume, "containerPath": audit.AUDIT_DIR, "readOnly": True}]
    backup = {v["containerPath"]: v for v in by_name[f"{prefix}-backup"].inputs["volumes"]
              if v.get("volumeName") == volume}
    assert set(backup) == {audit.AUDIT_DIR, contract.AUDIT_OWNERSHIP_DONOR}
    assert not any(v.get("readOnly") for v in backup.values())
    writers = [n for n, c in by_name.items() for v in c.inputs.get("volumes") or []
               if v.get("volumeName") == volume and not v.get("readOnly")]
    assert set(writers) == {f"{prefix}-backup"}, "only the backup container may write the audit volume"
    [res] = [r for r in graph.of_type("docker:index/volume:Volume") if r.inputs["name"] == volume]
    assert res.options["protect"] is True and res.options["retainOnDelete"] is True


def test_loki_keeps_audit_and_request_log_longer() -> None:
    graph = render_with("prod", security=json.dumps({"audit": {"retentionDays": 30}}))
    [text] = [c for k, c in graph.files().items() if k.endswith(layout.LOKI_CONFIG)]
    limits = yaml.safe_load(text)["limits_config"]
    others = limits["retention_period"]
    assert int(others.rstrip("h")) < 720
    assert {s["selector"]: s["period"] for s in limits["retention_stream"]} == {
        '{job="audit"}': "720h", '{audit="access"}': "720h"}
    # Never shorter than the other logs.
    short = render_with("prod", security=json.dumps({"audit": {"retentionDays": 1}}))
    [text] = [c for k, c in short.files().items() if k.endswith(layout.LOKI_CONFIG)]
    assert {s["period"] for s in yaml.safe_load(text)["limits_config"]["retention_stream"]} == {others}


def test_gate_and_switch_know_where_to_record() -> None:
    graph = rendered("prod")
    props = [r.inputs.get("audit") for r in graph.resources if r.inputs.get("kind") in (
        "paper-trading:promotion-gate", "paper-trading:routing-switch")]
    assert len(props) == 2
    for p in props:
        assert p is not None
        assert p["volume"] == "paper-trading-audit-data" and p["stack"] == "prod" and p["user"] == "postgres"
    off = render_with("prod", security=json.dumps({"audit": {"enabled": False}}))
    assert all(r.inputs.get("audit") is None for r in off.resources if r.inputs.get("kind") in (
        "paper-trading:promotion-gate", "paper-trading:routing-switch"))


def test_bad_audit_config_names_the_key() -> None:
    from settings import Settings

    with pytest.raises(Exception) as bad:
        Settings.model_validate({"paperTradingMode": True, "allowRealTrades": False,
                                 "deployment": {"activeColor": "blue", "blue": {"image": "a:1"},
                                                "green": {"image": "a:1"}},
                                 "security": {"audit": {"retentionDays": 0}}})
    assert "retentionDays" in str(bad.value)


def test_bad_fail_closed_names_the_key() -> None:
    from settings import Settings

    base = {"paperTradingMode": True, "allowRealTrades": False,
            "deployment": {"activeColor": "blue", "blue": {"image": "a:1"}, "green": {"image": "a:1"}}}
    assert Settings.model_validate(base).security.audit.fail_closed is True
    with pytest.raises(Exception) as bad:
        Settings.model_validate({**base, "security": {"audit": {"failClosed": "sometimes"}}})
    [error] = bad.value.errors()  # type: ignore[attr-defined]
    assert error["loc"] == ("security", "audit", "failClosed")


def test_prod_sets_fail_closed_explicitly_and_every_writer_gets_it() -> None:
    stack = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]
    assert stack["paper-trading:security"]["audit"]["failClosed"] is True
    kinds = ("paper-trading:promotion-gate", "paper-trading:routing-switch", "paper-trading:deploy-record")
    for fail_closed, rendered_graph in ((True, rendered("prod")), (False, render_with(
            "prod", security=json.dumps({"audit": {"failClosed": False}})))):
        props = [r.inputs["audit"] for r in rendered_graph.resources if r.inputs.get("kind") in kinds]
        assert len(props) == 3 and all(p["failClosed"] is fail_closed for p in props), props
        [backup] = [c for c in rendered_graph.containers if c.inputs["name"] == "paper-trading-backup"]
        env = dict(e.split("=", 1) for e in backup.inputs["envs"])
        assert env["AUDIT_FAIL_CLOSED"] == ("1" if fail_closed else "0")


# ------------------------------------------------------------------ validation check






def test_audit_check_passes_on_gate_then_switch() -> None:
    assert _check([_line("gate", "ok", "green"), _line("switch", "ok", "green")])[0] == []


@pytest.mark.parametrize("lines, problem", [
    ([_line("gate", "ok", "green")], "no successful switch record"),
    ([_line("switch", "ok", "green")], "no passed gate verdict"),
    ([_line("gate", "refused", "green"), _line("switch", "ok", "green")], "no passed gate verdict"),
    ([_line("gate", "ok", "green"), _line("switch", "ok", "green"), _line("emergency-switch", "ok", "blue")],
     "made blue live"),
    ([_line("gate", "ok", "green"), _line("switch", "ok", "green"), '{"time": "x"}'], "not a complete"),
])
def test_audit_check_fails_without_the_current_deployment(lines: list[str], problem: str) -> None:
    problems, _ = _check(lines)
    assert any(problem in p for p in problems), problems


def test_audit_check_runs_from_the_cli_on_a_file(tmp_path: Path) -> None:
    """The real CLI on a real file: the check's row in the JSON report."""
    log = tmp_path / "audit.jsonl"
    log.write_text(_line("gate", "ok", "blue") + "\n" + _line("switch", "ok", "blue") + "\n")
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "validation", "--base-url", "http://127.0.0.1:9", "--color", "blue",
         "--timeout", "5", "--audit-log-file", str(log), "--report", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    checks = {c["name"]: c for c in json.loads(report.read_text())["checks"]}
    assert checks["security.audit_log"]["status"] == "passed", checks["security.audit_log"]


# ------------------------------------------------------------------ unreviewed emergency switches (issue 20)


def _trail(tmp_path: Path, steps: list[tuple[str, str, str]]) -> tuple[Path, list[dict[str, Any]]]:
    """A real trail: each (operation, result, to) written by the real writer, the emergency ones by
    an auditor carrying the CLI's reason and checks; intent records first, as the writers do."""
    path = tmp_path / "audit.jsonl"
    sink = FileSink(str(path))
    for operation, result, to in steps:
        emergency = operation == "emergency-switch"
        auditor = Auditor("prod", sink, actor="oncall" if emergency else "ci",
                          reason="prod down, green crashloops" if emergency else None,
                          checks="none" if emergency else None)
        auditor.begin(operation, to=to)  # type: ignore[arg-type]
        auditor.record(operation, result, 1, to=to)  # type: ignore[arg-type]
    return path, [parse(line) for line in path.read_text().splitlines()]


def _cli_check(tmp_path: Path, log: Path, color: str) -> dict[str, Any]:
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "validation", "--base-url", "http://127.0.0.1:9", "--color", color,
         "--timeout", "5", "--audit-log-file", str(log), "--report", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    checks = {c["name"]: c for c in json.loads(report.read_text())["checks"]}
    found: dict[str, Any] = checks["security.audit_log"]
    return found


def test_an_emergency_switch_without_a_gate_verdict_fails_the_check(tmp_path: Path) -> None:
    """Break-glass to blue, which no gate ever passed: the CLI's check fails, naming that record."""
    log, recs = _trail(tmp_path, [("gate", "ok", "green"), ("switch", "ok", "green"),
                                  ("emergency-switch", "ok", "blue")])
    row = _cli_check(tmp_path, log, "blue")
    assert row["status"] == "failed" and row["blocking"] is True
    [found] = row["details"]["unreviewed_emergency"]
    emergency = recs[-1]
    assert (found["time"], found["to"], found["actor"], found["checks"], found["reason"], found["line"]) == (
        emergency["time"], "blue", "oncall", "none", "prod down, green crashloops", 6)


def test_a_gate_verdict_after_the_emergency_switch_clears_it(tmp_path: Path) -> None:
    log, _ = _trail(tmp_path, [("gate", "ok", "green"), ("switch", "ok", "green"),
                               ("emergency-switch", "ok", "blue"), ("gate", "ok", "blue")])
    row = _cli_check(tmp_path, log, "blue")
    assert row["status"] == "passed", row
    assert row["details"]["unreviewed_emergency"] == []


@pytest.mark.parametrize("steps, unreviewed", [
    # Back to a color whose newest verdict passed (a rollback by hand): covered.
    ([("gate", "ok", "blue"), ("switch", "ok", "blue"), ("gate", "ok", "green"), ("switch", "ok", "green"),
      ("emergency-switch", "ok", "blue")], []),
    # Its newest verdict before was a refusal: not covered, even though an older one passed.
    ([("gate", "ok", "blue"), ("gate", "refused", "blue"), ("emergency-switch", "ok", "blue")], ["blue"]),
    # A refused emergency switch changed nothing: nothing to review.
    ([("gate", "ok", "green"), ("switch", "ok", "green"), ("emergency-switch", "refused", "blue")], []),
    # A later gate for the OTHER color does not review it.
    ([("emergency-switch", "ok", "blue"), ("gate", "ok", "green")], ["blue"]),
])
def test_which_emergency_switches_are_unreviewed(tmp_path: Path, steps: list[tuple[str, str, str]],
                                                 unreviewed: list[str]) -> None:
    from validation.checks_audit import audit_findings

    log, _ = _trail(tmp_path, steps)
    problems, details = audit_findings(log.read_text().splitlines(), "blue")
    assert [found["to"] for found in details["unreviewed_emergency"]] == unreviewed
    assert sum(p.startswith("emergency switch to") for p in problems) == len(unreviewed)


def test_intent_records_never_count_as_a_switch_or_a_verdict(tmp_path: Path) -> None:
    """A switch that was refused after its intent: the newest successful switch is still the old one."""
    log, _ = _trail(tmp_path, [("gate", "ok", "green"), ("switch", "ok", "green"),
                               ("gate", "refused", "blue"), ("switch", "refused", "blue")])
    row = _cli_check(tmp_path, log, "green")
    assert row["status"] == "passed", row


# ------------------------------------------------------------------ the emergency CLI's arguments (issue 20)


@pytest.mark.parametrize("extra, complaint", [
    ([], "the following arguments are required: --reason"),
    (["--reason", "   "], "argument --reason: --reason must say why"),
    (["--reason", "x" * 501], "argument --reason: --reason must be one line of at most 500 characters"),
    (["--reason", "two\nlines"], "argument --reason: --reason must be one line"),
    (["--reason", "drill", "--no-audit"], "unrecognized arguments: --no-audit"),
])
def test_the_emergency_cli_requires_a_reason_and_has_no_way_around_the_record(
        extra: list[str], complaint: str) -> None:
    """Refused by the argument parser (exit 2) before any Docker call: DOCKER_HOST points nowhere."""
    proc = subprocess.run(
        [sys.executable, "-m", "release.routing", "switch", "--to", "blue", "--container", "p", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DOCKER_HOST": "tcp://127.0.0.1:9"},
    )
    assert proc.returncode == 2
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("python -m release.routing") and ": error: " in last and complaint in last, last


def test_what_an_emergency_switch_checked() -> None:
    import argparse

    from release.routing.cli import checks_done

    def args(url: str | None, no_checks: bool) -> argparse.Namespace:
        return argparse.Namespace(url=url, no_checks=no_checks)

    cases = [(None, True), (None, False), ("https://x", True), ("https://x", False)]
    assert [checks_done(args(*case)) for case in cases] == ["none", "none", "confirm", "post-promotion"]
