"""Security checks: TLS, certificate, headers, redirect, rate limit and injection probes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import ssl
import time
from typing import Any

import httpx

from validation.context import CheckFailed, Context, Passed, ssl_context
from validation.models import Category
from validation.options import ValidationOptions
from validation.registry import check
from validation.tls import handshake, legacy_context, unverified_context

HSTS_MIN_AGE = 31536000


def _not_https(options: ValidationOptions) -> str | None:
    return None if options.is_https else "base URL is plain HTTP"


def _cert_skip(options: ValidationOptions) -> str | None:
    if not options.is_https:
        return "base URL is plain HTTP"
    return "--insecure: certificate not verified" if options.insecure else None


@check(
    "security.tls_protocol",
    Category.SECURITY,
    "HTTPS only: the negotiated protocol is TLS 1.2 or 1.3 and a TLS 1.0/1.1-only client is refused.",
    skip_when=_not_https,
)
async def tls_protocol(ctx: Context) -> Passed:
    o = ctx.options
    try:
        shake = await handshake(o.host, o.port, o.tls_name, unverified_context(), o.check_timeout)
    except (OSError, ssl.SSLError) as exc:
        raise CheckFailed(f"TLS handshake failed: {exc}") from exc
    if shake.version not in ("TLSv1.2", "TLSv1.3"):
        raise CheckFailed(f"negotiated {shake.version or 'no TLS'}, need TLSv1.2 or newer")
    try:
        legacy = await handshake(o.host, o.port, o.tls_name, legacy_context(), o.check_timeout)
    except ssl.SSLError as exc:
        if exc.reason == "NO_PROTOCOLS_AVAILABLE":
            # This client's OpenSSL cannot offer TLS 1.0/1.1 at all: nothing was asked of the server.
            return Passed(
                f"{shake.version} ({shake.cipher}); TLS 1.0/1.1 not probed: this client cannot offer them",
                {"legacy_probed": False},
            )
        return Passed(f"{shake.version} ({shake.cipher}); TLS 1.0/1.1 refused", {"legacy_probed": True})
    except OSError:
        return Passed(f"{shake.version} ({shake.cipher}); TLS 1.0/1.1 refused", {"legacy_probed": True})
    raise CheckFailed(f"server accepts legacy {legacy.version}")


@check(
    "security.certificate",
    Category.SECURITY,
    "HTTPS only: the certificate verifies (system CAs or --ca-file) for the host and does not expire "
    "within the configured number of days (default 14).",
    skip_when=_cert_skip,
)
async def certificate(ctx: Context) -> Passed:
    o = ctx.options
    try:
        shake = await handshake(o.host, o.port, o.tls_name, ssl_context(o), o.check_timeout)
    except ssl.SSLCertVerificationError as exc:
        raise CheckFailed(f"certificate for {o.tls_name} does not verify: {exc.verify_message}") from exc
    except (OSError, ssl.SSLError) as exc:
        raise CheckFailed(f"TLS handshake failed: {exc}") from exc
    not_after = shake.cert.get("notAfter")
    if not isinstance(not_after, str):
        raise CheckFailed("certificate has no expiry date")
    days = (ssl.cert_time_to_seconds(not_after) - time.time()) / 86400
    if days < o.cert_min_days:
        raise CheckFailed(f"certificate expires in {days:.1f} days (< {o.cert_min_days})", notAfter=not_after)
    return Passed(f"valid for {o.tls_name}, {days:.0f} days left", {"notAfter": not_after})


@check(
    "security.headers",
    Category.SECURITY,
    "Responses carry X-Content-Type-Options nosniff, X-Frame-Options DENY/SAMEORIGIN, Referrer-Policy, "
    "Content-Security-Policy, Permissions-Policy and (HTTPS) HSTS max-age>=31536000; includeSubDomains.",
)
async def headers(ctx: Context) -> Passed:
    response = await ctx.get(ctx.options.paths.basic)
    h = response.headers

    def values(name: str) -> set[str]:
        # A proxy and the app may both send a header; httpx joins repeats with ", ".
        return {v.strip().lower() for v in h.get_list(name, split_commas=True) if v.strip()}

    problems: list[str] = []
    if values("X-Content-Type-Options") != {"nosniff"}:
        problems.append("X-Content-Type-Options")
    frame = values("X-Frame-Options")
    if not frame or not frame <= {"deny", "sameorigin"}:
        problems.append("X-Frame-Options")
    for name in ("Referrer-Policy", "Content-Security-Policy", "Permissions-Policy"):
        if not h.get(name):
            problems.append(name)
    if ctx.options.is_https:
        hsts = h.get("strict-transport-security", "")
        age = re.search(r"max-age=(\d+)", hsts)
        if not age or int(age.group(1)) < HSTS_MIN_AGE or "includesubdomains" not in hsts.lower():
            problems.append("Strict-Transport-Security")
    if problems:
        raise CheckFailed(f"missing or weak headers: {', '.join(problems)}", missing=problems)
    return Passed("all security headers present")


@check(
    "security.https_redirect",
    Category.SECURITY,
    "Plain HTTP redirects (301/308) to https:// (needs an https base URL on 443 or VALIDATION_HTTP_URL).",
    skip_when=lambda o: None if o.redirect_url else "no plain-HTTP URL to test",
)
async def https_redirect(ctx: Context) -> Passed:
    base = ctx.options.redirect_url
    assert base is not None
    extra = {"Host": ctx.options.server_name} if ctx.options.server_name else {}
    response = await ctx.get(ctx.options.paths.basic, base=base, headers=extra)
    location = response.headers.get("location", "")
    if response.status_code not in (301, 302, 307, 308) or not location.startswith("https://"):
        raise CheckFailed(
            f"http answered {response.status_code} (Location {location!r}), expected a redirect to https"
        )
    return Passed(f"{response.status_code} -> {location}")


@check(
    "security.rate_limit",
    Category.SECURITY,
    "A concurrent burst of (burst + 10) requests to the auth path gets at least one 429.",
    skip_when=lambda o: "rate limit burst set to 0" if o.rate_limit_burst == 0 else None,
)
async def rate_limit(ctx: Context) -> Passed:
    path = ctx.options.rate_limit_path
    count = ctx.options.rate_limit_burst + 10

    async def one() -> int:
        return (await ctx.get(path, retry=False)).status_code

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    statuses: list[int] = []
    try:
        for next_done in asyncio.as_completed(tasks):
            try:
                statuses.append(await next_done)
            except CheckFailed:
                statuses.append(0)
            if statuses[-1] == 429:
                return Passed(f"429 after {len(statuses)} of {count} responses")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    seen = sorted(set(statuses))
    raise CheckFailed(f"no 429 in a burst of {count} to {path} (statuses {seen})", statuses=seen)


SQL_PROBES = ("' OR '1'='1' --", "1; DROP TABLE users--", "' UNION SELECT password FROM users--")
XSS_PROBES = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')
CMD_PROBES = ("; cat /etc/passwd", "$(id)", "| ls -la /", "`uname -a`")
#: Characters an HTML-escaping app must transform; a payload with them seen verbatim is unescaped.
DANGEROUS = re.compile(r"[<>\"']")
LEAKS = ("root:x:0:0", "uid=0(", "Traceback (most recent call last)")


async def _probe(ctx: Context, kind: str, payloads: tuple[str, ...]) -> Passed:
    path = ctx.options.injection_path

    async def one(payload: str) -> tuple[str, httpx.Response]:
        return payload, await ctx.get(path, params={"q": payload})

    results = await asyncio.gather(*(one(p) for p in payloads))
    problems: list[str] = []
    codes: list[int] = []
    for payload, response in results:
        codes.append(response.status_code)
        body = response.text
        if response.status_code >= 500:
            problems.append(f"{payload!r} -> {response.status_code}")
        elif DANGEROUS.search(payload) and payload in body:
            problems.append(f"{payload!r} reflected unescaped")
        elif any(leak in body for leak in LEAKS):
            problems.append(f"{payload!r} leaked system output")
    if problems:
        raise CheckFailed(f"{kind} probes: {'; '.join(problems)}", statuses=codes)
    return Passed(f"{len(payloads)} probes -> {sorted(set(codes))}", {"statuses": codes})


@check(
    "security.sql_injection",
    Category.SECURITY,
    "SQL-injection probes on the API get a 4xx (or a safe 2xx), never a 5xx, never reflected unescaped.",
)
async def sql_injection(ctx: Context) -> Passed:
    return await _probe(ctx, "SQL-injection", SQL_PROBES)


@check("security.xss", Category.SECURITY, "XSS probes: never a 5xx, never reflected unescaped.")
async def xss(ctx: Context) -> Passed:
    return await _probe(ctx, "XSS", XSS_PROBES)


@check(
    "security.command_injection",
    Category.SECURITY,
    "Command-injection probes: never a 5xx, never reflected unescaped, no command output.",
)
async def command_injection(ctx: Context) -> Passed:
    return await _probe(ctx, "command-injection", CMD_PROBES)


# --------------------------------------------------------------------------- audit trail
# The live color must be there by the gate's approval: the trail shows a passed verdict before its
# switch, and a chain no one rewrote afterwards (docs/security.md, "Audit trail").
#: The record keys components/audit.py writes (validation imports neither pulumi nor components).
AUDIT_FIELDS = ("time", "actor", "stack", "operation", "from", "to", "backup_id", "result", "duration_ms",
                "error", "reason", "checks")
#: Records written before `reason` and `checks` existed are still complete records.
AUDIT_LEGACY_FIELDS = AUDIT_FIELDS[:10]
#: The hash chain (components/audit.py): each line's last key `prev` is the sha256 of the line
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


# --------------------------------------------------------------------------- host firewall


async def probe_port(host: str, port: int, timeout: float) -> str:
    """`open` (the handshake completed), `refused` (RST) or `timeout` (dropped)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return f"error: {exc.strerror or exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return "open"


def firewall_findings(results: dict[int, str], open_ports: tuple[int, ...],
                      closed_ports: tuple[int, ...]) -> list[str]:
    problems = [f"public port {p} does not answer ({results[p]})" for p in open_ports if results[p] != "open"]
    problems += [f"port {p} answers from outside; only {sorted(open_ports)} may"
                 for p in closed_ports if results[p] == "open"]
    return problems


@check(
    "security.firewall",
    Category.SECURITY,
    "With --firewall-address (the host as seen from this machine, never loopback): the public ports "
    "(--firewall-open-ports, default 80,443) answer and none of --firewall-closed-ports does.",
    skip_when=lambda o: None if o.firewall_address else "no --firewall-address",
)
async def firewall(ctx: Context) -> Passed:
    o = ctx.options
    host = str(o.firewall_address)
    ports = sorted(set(o.firewall_open_ports) | set(o.firewall_closed_ports))
    found = await asyncio.gather(*(probe_port(host, p, min(o.check_timeout, 3.0)) for p in ports))
    results = dict(zip(ports, found, strict=True))
    problems = firewall_findings(results, o.firewall_open_ports, o.firewall_closed_ports)
    details = {str(p): r for p, r in results.items()}
    if problems:
        raise CheckFailed("; ".join(problems), **details)
    return Passed(f"{host}: {len(o.firewall_open_ports)} public ports answer, "
                  f"{len(o.firewall_closed_ports)} others do not", details)
