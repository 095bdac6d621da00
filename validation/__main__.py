"""CLI: `python -m validation --base-url URL [...]`; exit 0 passed, 1 a blocking check failed, 2 bad usage."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from validation import validate
from validation.options import ExchangeCredentials, ValidationOptions
from validation.report import headline, render_table
from validation.runner import applicable

ENV_HELP = """\
environment (optional settings beyond the flags):
  VALIDATION_CHECK_TIMEOUT     seconds one check may take incl. retries (default 5)
  VALIDATION_RETRIES           extra attempts on connection errors / 502-504 (default 2)
  VALIDATION_SERVER_NAME       TLS name + Host header when the URL is a tunnel or an IP
  VALIDATION_HTTP_URL          plain-HTTP URL for the redirect check
  VALIDATION_CERT_MIN_DAYS     minimum days before certificate expiry (default 14)
  VALIDATION_LATENCY_MS        p95 threshold of the smoke burst (default 500)
  VALIDATION_RATE_LIMIT_PATH   path of the rate-limit burst (default /api/auth/login)
  VALIDATION_RATE_LIMIT_BURST  configured burst of that path (default 5); 0 skips the check
  VALIDATION_EXPECTED_REPLICAS Prometheus targets expected for --color (default 1)
  VALIDATION_SKIP              comma-separated check names to skip
  GRAFANA_TOKEN or GRAFANA_USER + GRAFANA_PASSWORD   Grafana API credentials
  ALERTMANAGER_USER + ALERTMANAGER_PASSWORD        Alertmanager basic auth (user: prometheus)
  BINANCE_API_KEY, BINANCE_API_SECRET, BINANCE_BASE_URL
  KUCOIN_API_KEY, KUCOIN_API_SECRET, KUCOIN_API_PASSPHRASE, KUCOIN_BASE_URL
      exchange credentials for safety.exchange_keys (base URLs default to the sandboxes)

exit status: 0 every blocking check passed, 1 a blocking check failed, 2 bad usage
"""

SANDBOX = {"binance": "https://testnet.binance.vision", "kucoin": "https://openapi-sandbox.kucoin.com"}


class UsageError(Exception):
    pass


def _checks_help() -> str:
    lines = ["checks (blocking unless marked; all run concurrently):"]
    for item, _ in applicable(ValidationOptions(base_url="http://localhost")):
        mark = "" if item.blocking else " [non-blocking]"
        body = textwrap.fill(
            item.description + mark, width=96, initial_indent="      ", subsequent_indent="      "
        )
        lines.append(f"  {item.name}\n{body}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m validation",
        description="Validate a deployed paper-trading color through the proxy: health, paper-trading "
        "safety, "
        "security, monitoring and a latency smoke test, concurrently under one deadline.",
        epilog=_checks_help() + "\n\n" + ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--base-url", required=True, help="URL of the proxy listener to validate (http or https)")
    p.add_argument(
        "--color",
        choices=("blue", "green"),
        help="expected color; sent as X-Preview-Color and required in X-Deployment-Color",
    )
    p.add_argument("--report", type=Path, help="write the JSON report to this file")
    p.add_argument("--timeout", type=float, default=30.0, help="overall deadline in seconds (default 30)")
    p.add_argument("--prometheus-url", help="Prometheus base URL (enables the Prometheus checks)")
    p.add_argument("--alertmanager-url", help="Alertmanager base URL (enables its readiness check)")
    p.add_argument("--grafana-url", help="Grafana base URL (enables the Grafana checks)")
    p.add_argument("--audit-log-file", help="the audit trail file (audit.jsonl; enables security.audit_log)")
    p.add_argument("--audit-loki-url", help="Loki base URL to read the audit trail from (security.audit_log)")
    p.add_argument("--audit-stack", help="only audit records of this stack (security.audit_log)")
    p.add_argument("--audit-anchor", help="LINE:SHA256 the trail must still hold (the deploy record's "
                   "auditHead; security.audit_log)")
    p.add_argument("--firewall-address",
                   help="the host's address from this machine, not loopback (enables security.firewall)")
    p.add_argument("--firewall-open-ports", default="80,443",
                   help="comma-separated ports that must answer (security.firewall; default 80,443)")
    p.add_argument("--firewall-closed-ports", default="",
                   help="comma-separated ports that must not answer (security.firewall), e.g. 9090,5432")
    p.add_argument("--expect-work-role", choices=("standby", "active"),
                   help="safety.background_work: standby = the color must not run consumers or schedulers "
                   "(a candidate before promotion); active = it holds the work (after promotion); "
                   "default: inferred from the app's liveColor")
    p.add_argument("--work-enabled", choices=("true", "false"),
                   help="whether the stack runs background work (safety.background_work: with false a "
                   "live color may report role disabled; with true a disabled color fails)")
    p.add_argument("--ca-file", help="PEM bundle of CAs to trust for the target")
    p.add_argument(
        "--insecure", action="store_true", help="do not verify TLS certificates (skips security.certificate)"
    )
    return p


def _env_number(env: Mapping[str, str], name: str, kind: type) -> Any | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        return kind(raw)
    except ValueError as exc:
        raise UsageError(f"{name}={raw!r} is not a number") from exc


def _exchanges(env: Mapping[str, str]) -> list[ExchangeCredentials]:
    found = []
    for name in ("binance", "kucoin"):
        up = name.upper()
        key, secret = env.get(f"{up}_API_KEY"), env.get(f"{up}_API_SECRET")
        if not secret:
            continue
        if not key:
            raise UsageError(f"{up}_API_SECRET is set but {up}_API_KEY is not")
        found.append(
            ExchangeCredentials.model_validate(
                {
                    "exchange": name,
                    "api_key": key,
                    "api_secret": secret,
                    "passphrase": env.get(f"{up}_API_PASSPHRASE") or None,
                    "base_url": env.get(f"{up}_BASE_URL") or SANDBOX[name],
                }
            )
        )
    return found


def _ports(raw: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in raw.split(",") if p.strip())
    except ValueError as exc:
        raise UsageError(f"{flag} {raw!r}: comma-separated port numbers expected") from exc


def options_from(args: argparse.Namespace, env: Mapping[str, str]) -> ValidationOptions:
    if args.insecure and args.ca_file:
        raise UsageError("--insecure and --ca-file exclude each other")
    if args.ca_file and not os.path.isfile(args.ca_file):
        raise UsageError(f"--ca-file {args.ca_file}: no such file")
    values: dict[str, Any] = {
        "base_url": args.base_url,
        "color": args.color,
        "timeout": args.timeout,
        "prometheus_url": args.prometheus_url,
        "alertmanager_url": args.alertmanager_url,
        "grafana_url": args.grafana_url,
        "audit_log_file": args.audit_log_file,
        "audit_loki_url": args.audit_loki_url,
        "audit_stack": args.audit_stack,
        "audit_anchor": args.audit_anchor,
        "firewall_address": args.firewall_address,
        "firewall_open_ports": _ports(args.firewall_open_ports, "--firewall-open-ports"),
        "firewall_closed_ports": _ports(args.firewall_closed_ports, "--firewall-closed-ports"),
        "expect_work_role": args.expect_work_role,
        "work_enabled": None if args.work_enabled is None else args.work_enabled == "true",
        "ca_file": args.ca_file,
        "insecure": args.insecure,
        "server_name": env.get("VALIDATION_SERVER_NAME") or None,
        "http_url": env.get("VALIDATION_HTTP_URL") or None,
        "rate_limit_path": env.get("VALIDATION_RATE_LIMIT_PATH") or "/api/auth/login",
        "grafana_user": env.get("GRAFANA_USER") or None,
        "grafana_password": env.get("GRAFANA_PASSWORD") or None,
        "grafana_token": env.get("GRAFANA_TOKEN") or None,
        "alertmanager_user": env.get("ALERTMANAGER_USER") or None,
        "alertmanager_password": env.get("ALERTMANAGER_PASSWORD") or None,
        "skip": frozenset(s.strip() for s in env.get("VALIDATION_SKIP", "").split(",") if s.strip()),
        "exchanges": tuple(_exchanges(env)),
    }
    numbers = {
        "check_timeout": ("VALIDATION_CHECK_TIMEOUT", float),
        "retries": ("VALIDATION_RETRIES", int),
        "cert_min_days": ("VALIDATION_CERT_MIN_DAYS", int),
        "latency_threshold_ms": ("VALIDATION_LATENCY_MS", float),
        "rate_limit_burst": ("VALIDATION_RATE_LIMIT_BURST", int),
        "expected_replicas": ("VALIDATION_EXPECTED_REPLICAS", int),
    }
    for field, (name, kind) in numbers.items():
        value = _env_number(env, name, kind)
        if value is not None:
            values[field] = value
    return ValidationOptions.model_validate(values)


def unreachable(options: ValidationOptions, timeout: float = 3.0) -> str | None:
    """Why no TCP connection to the target can be opened, or None when one can."""
    try:
        with socket.create_connection((options.host, options.port), timeout=timeout):
            return None
    except socket.gaierror:
        return f"host name {options.host!r} not found"
    except TimeoutError:
        return f"no answer on {options.host}:{options.port} within {timeout:g}s"
    except OSError as exc:
        return (exc.strerror or str(exc) or type(exc).__name__).lower()


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        options = options_from(args, os.environ if env is None else env)
    except UsageError as exc:
        p.print_usage(sys.stderr)
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        p.print_usage(sys.stderr)
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        print(f"{p.prog}: error: {problems}", file=sys.stderr)
        return 2
    report = validate(options)
    print(headline(report, None if report.passed else unreachable(options)))
    print(render_table(report))
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(report.to_json() + "\n")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
