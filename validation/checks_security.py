"""Security checks: TLS, certificate, headers, redirect, rate limit and injection probes."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time

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
