"""The audit writer's own rules, offline: masking, targets, the fail-closed error, the strict parser,
and the one-shot writer container's isolation (asked of a recording Docker client)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from release import audit


def test_known_secrets_are_masked_whole_even_when_one_contains_another() -> None:
    """Longest first: a secret that contains a shorter one is masked whole, never half."""
    short, long = "abcd", "abcd-efgh-1234"
    text = audit.scrub(f"login failed for {long} (prefix {short})", [short, long])
    assert text == "login failed for *** (prefix ***)"


def test_a_four_character_secret_is_masked_shorter_ones_are_not() -> None:
    assert audit.scrub("pin 9876 and x1z", ["9876", "x1z"]) == "pin *** and x1z"


@pytest.mark.parametrize("key", ["password", "passwd", "secret", "token", "api_key", "apikey", "api-key",
                                 "passphrase", "authorization", "db_password", "X-Auth-Token"])
def test_secret_looking_pairs_are_masked(key: str) -> None:
    said = audit.scrub(f"request failed: {key}=hunter22 status=500")
    assert said == f"request failed: {key}=*** status=500"


def test_basic_auth_in_a_url_is_masked() -> None:
    assert audit.scrub("GET https://alice:pw123@host/x failed") == "GET https://alice:***@host/x failed"


def test_an_error_is_one_line_of_at_most_max_error_characters() -> None:
    text = audit.scrub("a\nb  " + "x" * 2 * audit.MAX_ERROR)
    assert "\n" not in text and len(text) == audit.MAX_ERROR
    assert text.startswith("a b x") and text.endswith("…")


def test_a_disabled_target_writes_nothing() -> None:
    target = audit.AuditTarget(stack="s", volume="v", image="i", enabled=False)
    assert audit.Auditor.for_target(target) is None
    assert audit.Auditor.for_target(audit.AuditTarget.from_props(target.props())) is None
    assert audit.Auditor.for_target(None) is None


def test_a_target_from_props_is_enabled_and_fail_closed_unless_told_otherwise() -> None:
    target = audit.AuditTarget.from_props({"volume": "v", "image": "i"})
    assert target is not None
    assert (target.enabled, target.fail_closed, target.stack) == (True, True, "unknown")
    auditor = audit.Auditor.for_target(target, actor="alice")
    assert auditor is not None and auditor.fail_closed is True and auditor.actor == "alice"
    assert audit.AuditTarget.from_props({"volume": "v"}) is None


@pytest.mark.parametrize(("result", "acted"), [("started", False), ("refused", False), ("ok", True),
                                               ("failed", True)])
def test_the_fail_closed_error_says_whether_the_operation_acted(result: str, acted: bool) -> None:
    exc = audit.AuditUnavailable("switch", result, "volume v", "OSError: disk full", "boom")
    assert exc.acted is acted
    if result == "started":
        assert "refused before it acted" in str(exc) and "nothing was done" in str(exc)
    elif acted:
        assert f"ended {result} (boom)" in str(exc) and "it was not undone" in str(exc)
    else:
        assert "nothing was changed" in str(exc)


def _line(**over: Any) -> str:
    record = json.loads(audit.AuditRecord("alice", "prod", "switch", "ok", 1.0, "blue", "green").line())
    record.update(over)
    return json.dumps(record)


def test_the_parser_takes_only_records_with_exactly_the_fields() -> None:
    assert audit.parse(_line())["to"] == "green"
    extra = _line(note="not a field")
    with pytest.raises(ValueError, match="not an audit record"):
        audit.parse(extra)
    missing = json.loads(_line())
    del missing["actor"]
    with pytest.raises(ValueError, match="not an audit record"):
        audit.parse(json.dumps(missing))
    reordered = dict(reversed(list(json.loads(_line()).items())))
    with pytest.raises(ValueError, match="not an audit record"):
        audit.parse(json.dumps(reordered))


def test_a_record_longer_than_one_atomic_write_is_refused() -> None:
    huge = audit.AuditRecord("a" * audit.MAX_LINE, "prod", "switch", "ok", 1.0)
    with pytest.raises(ValueError, match="record longer than"):
        huge.line()


class _Recorder:
    def __init__(self) -> None:
        self.runs: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.containers = self

    def run(self, *args: Any, **kwargs: Any) -> bytes:
        self.runs.append((args, kwargs))
        return b""


def test_the_one_shot_writer_is_isolated() -> None:
    """No network, read-only root, no capability, no privilege gain, the audit volume only."""
    client = _Recorder()
    audit.VolumeSink("pt-audit-data", "writer:1", client=client).append('{"x":1}')
    [(args, kw)] = client.runs
    assert args[0] == "writer:1" and kw["user"] == audit.WRITER_USER
    assert (kw["network_mode"], kw["read_only"], kw["cap_drop"]) == ("none", True, ["ALL"])
    assert kw["security_opt"] == ["no-new-privileges"] and kw["remove"] is True
    assert all(v.startswith("pt-audit-data:") for v in kw["volumes"])
    assert kw["environment"]["AUDIT_RECORD"] == '{"x":1}'
