"""The audit trail check: the live color got there by a passed gate, and nobody rewrote the trail.

Reads the trail (a file, or the log store's copy) and verifies its hash chain; the record format and
the chain are release/audit.py's (this package imports neither Pulumi nor the components).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import httpx

from validation.context import CheckFailed, Context, Passed
from validation.models import Category
from validation.options import ValidationOptions
from validation.registry import check

# --------------------------------------------------------------------------- audit trail
# The live color must be there by the gate's approval: the trail shows a passed verdict before its
# switch, and a chain no one rewrote afterwards (docs/security.md, "Audit trail").
#: The record keys release/audit.py writes (validation imports neither pulumi nor components).
AUDIT_FIELDS = ("time", "actor", "stack", "operation", "from", "to", "backup_id", "result", "duration_ms",
                "error", "reason", "checks")
#: Records written before `reason` and `checks` existed are still complete records.
AUDIT_LEGACY_FIELDS = AUDIT_FIELDS[:10]
#: The hash chain (release/audit.py): each line's last key `prev` is the sha256 of the line
#: before it (its bytes, no newline); the first line of a trail chains onto AUDIT_GENESIS.
AUDIT_PREV = "prev"
AUDIT_GENESIS = "0" * 64
_HEX64 = re.compile(r"[0-9a-f]{64}")
SWITCHES = ("switch", "emergency-switch", "rollback")
#: Results that are a verdict; `started` is only the intent written before an operation acts.
VERDICTS = ("ok", "refused", "failed")


def _audit_skip(options: ValidationOptions) -> str | None:
    if not (options.audit_log_file or options.audit_loki_url):
        return "no audit log given (--audit-log-file or --audit-loki-url)"
    return None if options.color else "no --color: the deployment to look for is unknown"


async def _audit_lines(ctx: Context) -> list[str]:
    o = ctx.options
    if o.audit_log_file:
        try:  # split on newlines only (the writers' separator), bytes kept exactly for the hashes
            with open(o.audit_log_file, encoding="utf-8", errors="surrogateescape", newline="") as handle:
                text = handle.read()
        except OSError as exc:
            raise CheckFailed(f"cannot read the audit log {o.audit_log_file}: {exc.strerror or exc}") from exc
        lines = text.split("\n")
        return lines[:-1] if lines and lines[-1] == "" else lines
    query = '{job="audit"}' if not o.audit_stack else f'{{job="audit", stack="{o.audit_stack}"}}'
    url = f"{o.audit_loki_url}/loki/api/v1/query_range"
    params = {"query": query, "limit": "5000", "since": "720h", "direction": "forward"}
    try:
        async with httpx.AsyncClient(timeout=o.check_timeout) as client:
            response = await client.get(url, params=params)
    except httpx.HTTPError as exc:
        raise CheckFailed(f"Loki at {o.audit_loki_url} did not answer: {exc}") from exc
    if response.status_code != 200:
        raise CheckFailed(f"Loki query {query} -> HTTP {response.status_code}")
    entries = [tuple(value) for stream in response.json().get("data", {}).get("result", [])
               for value in stream.get("values", [])]
    return [str(line) for _, line in sorted(entries)]


def _line_hash(line: str) -> str:
    return hashlib.sha256(line.encode("utf-8", "surrogateescape")).hexdigest()


def _prev_of(line: str) -> str | None:
    """A line's `prev` when it is a chained record (its last key, a sha256 hex), else None."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or list(record)[-1:] != [AUDIT_PREV]:
        return None
    prev = record[AUDIT_PREV]
    return prev if isinstance(prev, str) and _HEX64.fullmatch(prev) else None


def audit_chain(lines: list[str], anchor: str | None = None, *, in_file_order: bool = True) -> dict[str, Any]:
    """Verify the hash chain; structured: `status` ok | unchained | broken, and where it broke.

    In file order (`--audit-log-file`): lines before the first chained line are legacy
    (accepted, counted in `legacy_lines`); from it on every line must carry `prev` = sha256 of
    the line before it (GENESIS for line 1). `first_broken_line` is the first line whose `prev`
    does not match: a changed line breaks the line after it, a removed line the one that
    followed it, an inserted line itself (or the one after it, when forged with a good `prev`).
    `anchor` (`LINE:SHA256`, the deploy record's `auditHead` in Pulumi state): line LINE must
    hash to SHA256, so a truncated or entirely recomputed trail fails too.
    Loki's copy (`in_file_order=False`) may be a window of the trail and is sorted by time:
    every chained line but the oldest must follow another one (no gap, no fork), and the
    anchor's hash must be among the lines.
    """
    prevs = [_prev_of(line) for line in lines]
    hashes = [_line_hash(line) for line in lines]
    chained_at = [i for i, prev in enumerate(prevs) if prev is not None]
    result: dict[str, Any] = {"status": "ok", "legacy_lines": 0, "chained_lines": len(chained_at),
                              "first_broken_line": None, "reason": None, "head": None, "anchor": anchor}

    def broken(index: int, reason: str) -> dict[str, Any]:
        return {**result, "status": "broken", "first_broken_line": index + 1, "reason": reason}

    if in_file_order:
        first = chained_at[0] if chained_at else len(lines)
        result["legacy_lines"] = sum(1 for line in lines[:first] if line.strip())
        for i in range(first, len(lines)):
            if prevs[i] is None:
                return broken(i, "not a chained record after the chain began (inserted or altered)")
            want = hashes[i - 1] if i > 0 else AUDIT_GENESIS
            if prevs[i] != want:
                where = f"line {i}" if i > 0 else "the genesis value"
                return broken(i, f"prev does not match {where}: a line was changed, removed or inserted")
        if lines:
            result["head"] = f"{len(lines)}:{hashes[-1]}"
    else:
        known = {hashes[i] for i in chained_at}
        seen: dict[str, int] = {}
        starts = []
        for i in chained_at:
            prev = str(prevs[i])
            if prev in seen:
                return broken(i, f"forks: line {seen[prev] + 1} chains onto the same line")
            seen[prev] = i
            if prev not in known:
                starts.append(i)
        if len(starts) > 1:
            return broken(starts[1], "its prev is not among the lines: a line before it was removed or "
                                     "changed")
        result["legacy_lines"] = len(lines) - len(chained_at)
    if not chained_at:
        result["status"] = "unchained"
    if anchor is not None:
        number, _, digest = anchor.partition(":")
        if in_file_order:
            index = int(number) - 1
            if index >= len(lines):
                return broken(len(lines), f"the trail has {len(lines)} lines; the anchor is line {number} "
                                          "(truncated)")
            if hashes[index] != digest:
                return broken(index, "does not match the anchor: the trail was rewritten up to here")
        elif digest not in hashes:
            return broken(len(lines), "the anchor's line is not among the lines")
    return result


def unreviewed_emergencies(numbered: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Successful emergency switches whose color no passed gate verdict covers.

    Covered: the newest gate verdict for that color before the switch passed (a break-glass
    back to a color the gate approved), or a passed verdict for it follows (reviewed after).
    """
    found: list[dict[str, Any]] = []
    for i, (number, rec) in enumerate(numbered):
        if rec["operation"] != "emergency-switch" or rec["result"] != "ok":
            continue
        color = rec["to"]
        before = [r for _, r in numbered[:i]
                  if r["operation"] == "gate" and r["result"] in VERDICTS and r["to"] == color]
        after = [r for _, r in numbered[i + 1:]
                 if r["operation"] == "gate" and r["result"] == "ok" and r["to"] == color]
        if (before and before[-1]["result"] == "ok") or after:
            continue
        found.append({"line": number, "time": rec["time"], "to": color, "actor": rec["actor"],
                      "reason": rec.get("reason"), "checks": rec.get("checks")})
    return found


def audit_findings(
    lines: list[str], color: str, stack: str | None = None, anchor: str | None = None,
    *, in_file_order: bool = True,
) -> tuple[list[str], dict[str, Any]]:
    """Problems with the trail for `color` being live (empty: fine), and the records that prove it.

    The newest successful switch of any kind must have made `color` live, and a passed gate
    verdict for `color` must precede it; every successful emergency switch must be covered by
    a passed gate verdict for its color (`unreviewed_emergencies`); every line must be a
    complete record (current or legacy keys, chained or not); the hash chain holds
    (`audit_chain`, in `details["chain"]`).
    """
    problems: list[str] = []
    chain = audit_chain(lines, anchor, in_file_order=in_file_order)
    if chain["status"] == "broken":
        problems.append(f"the hash chain is broken at line {chain['first_broken_line']}: {chain['reason']}")
    numbered: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            problems.append(f"line {number} is not JSON")
            continue
        if isinstance(record, dict) and list(record)[-1:] == [AUDIT_PREV]:
            record.pop(AUDIT_PREV)
        if not isinstance(record, dict) or tuple(record) not in (AUDIT_FIELDS, AUDIT_LEGACY_FIELDS):
            problems.append(f"line {number} is not a complete audit record")
            continue
        if stack is None or record["stack"] == stack:
            numbered.append((number, record))
    records = [record for _, record in numbered]
    emergencies = unreviewed_emergencies(numbered)
    for found in emergencies:
        problems.append(
            f"emergency switch to {found['to']} at {found['time']} by {found['actor']} "
            f"(line {found['line']}, checks={found['checks'] or 'unknown'}) has no passed gate verdict "
            f"for {found['to']}"
        )
    switches = [(i, r) for i, r in enumerate(records) if r["operation"] in SWITCHES and r["result"] == "ok"]
    if not switches:
        problems.append("no successful switch record")
        return problems, {"records": len(records), "unreviewed_emergency": emergencies, "chain": chain}
    last_index, last = switches[-1]
    if last["to"] != color:
        problems.append(f"the newest successful switch made {last['to']} live, not {color}")
    gates = [i for i, r in enumerate(records[:last_index])
             if r["operation"] == "gate" and r["result"] == "ok" and r["to"] == color]
    if not gates and last["operation"] == "switch":
        problems.append(f"no passed gate verdict for {color} before its switch")
    return problems, {"records": len(records), "switch_line": numbered[last_index][0], "gates": len(gates),
                      "unreviewed_emergency": emergencies, "chain": chain}


@check(
    "security.audit_log",
    Category.SECURITY,
    "The audit trail holds the current deployment: a passed gate verdict for --color, then the "
    "newest successful switch to it; no emergency switch without a passed gate verdict for its color; "
    "every line a complete record (file or Loki); the hash chain holds (no line changed, removed or "
    "inserted) and, with --audit-anchor LINE:SHA256, reaches the anchored line unchanged.",
    skip_when=_audit_skip,
)
async def audit_log(ctx: Context) -> Passed:
    color = str(ctx.options.color)
    lines = await _audit_lines(ctx)
    o = ctx.options
    problems, details = audit_findings(lines, color, o.audit_stack, o.audit_anchor,
                                       in_file_order=bool(o.audit_log_file))
    if problems:
        raise CheckFailed("; ".join(problems), **details)
    chain = details["chain"]
    said = {"ok": f"chain intact ({chain['chained_lines']} chained, {chain['legacy_lines']} legacy lines)",
            "unchained": f"no chained line yet ({chain['legacy_lines']} legacy lines)"}[chain["status"]]
    anchored = "; anchor matches" if o.audit_anchor else "; no --audit-anchor"
    return Passed(f"{details['records']} records; {color} live after a passed gate; {said}{anchored}",
                  details)
