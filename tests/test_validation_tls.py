"""TLS, headers, redirect and rate limit through a real nginx front with a test CA (trustme)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.fakes.validation_servers import Front, RefApp, nginx_front, reference_app
from tests.support import require_tool
from tests.test_validation_cli import failed_checks, run_cli

pytestmark = pytest.mark.tools


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def app() -> Iterator[RefApp]:
    with reference_app(color="green") as running:
        yield running


def _front(
    tmp: Path, app: RefApp, ca: trustme.CA, *hosts: str, days: int = 365, **kw: bool
) -> Iterator[Front]:
    require_tool("nginx")
    now = dt.datetime.now(dt.UTC)
    leaf = ca.issue_cert(*(hosts or ("127.0.0.1", "localhost")), not_after=now + dt.timedelta(days=days))
    with nginx_front(
        tmp,
        app.port,
        leaf.cert_chain_pems[0].bytes(),
        leaf.private_key_pem.bytes(),
        ca.cert_pem.bytes(),
        **kw,
    ) as front:
        yield front


def validate(
    front: Front, tmp: Path, *extra: str, ca_file: str = ""
) -> tuple[int, str, set[str], dict[str, object]]:
    report = tmp / "report.json"
    result = run_cli(
        "--base-url",
        front.https_url,
        "--color",
        "green",
        "--ca-file",
        ca_file or front.ca_file,
        "--report",
        str(report),
        *extra,
        env={"VALIDATION_HTTP_URL": front.http_url},
    )
    doc = json.loads(report.read_text())
    return result.returncode, result.stdout, failed_checks(doc), doc


def test_healthy_tls_front_passes_every_security_check(tmp_path: Path, app: RefApp, ca: trustme.CA) -> None:
    for front in _front(tmp_path / "ngx", app, ca):
        code, out, failed, doc = validate(front, tmp_path)
        assert code == 0, out
        statuses = {c["name"]: c["status"] for c in doc["checks"]}  # type: ignore[union-attr,index]
        for name in (
            "security.tls_protocol",
            "security.certificate",
            "security.headers",
            "security.https_redirect",
            "security.rate_limit",
        ):
            assert statuses[name] == "passed", (name, out)
        assert sum(1 for s in statuses.values() if s == "passed") >= 18


def test_expiring_certificate_fails(tmp_path: Path, app: RefApp, ca: trustme.CA) -> None:
    for front in _front(tmp_path / "ngx", app, ca, days=3):
        code, out, failed, _ = validate(front, tmp_path)
        assert code == 1 and failed == {"security.certificate"}, out
        assert "expires in" in out


def test_certificate_for_another_host_fails(tmp_path: Path, app: RefApp, ca: trustme.CA) -> None:
    for front in _front(tmp_path / "ngx", app, ca, "other.example"):
        code, out, failed, _ = validate(front, tmp_path)
        assert code == 1 and "security.certificate" in failed, out


def test_untrusted_certificate_fails(tmp_path: Path, app: RefApp, ca: trustme.CA) -> None:
    trusted = tmp_path / "trusted-ca.pem"
    ca.cert_pem.write_to_path(str(trusted))
    for front in _front(tmp_path / "ngx", app, trustme.CA()):
        code, out, failed, _ = validate(front, tmp_path, ca_file=str(trusted))
        assert code == 1 and "security.certificate" in failed, out


def test_server_name_reaches_a_tunnel_address(tmp_path: Path, app: RefApp, ca: trustme.CA) -> None:
    """Through a tunnel the URL is 127.0.0.1 but the certificate names the public host."""
    for front in _front(tmp_path / "ngx", app, ca, "paper.example.com"):
        report = tmp_path / "r.json"
        result = run_cli(
            "--base-url",
            front.https_url,
            "--color",
            "green",
            "--ca-file",
            front.ca_file,
            "--report",
            str(report),
            env={"VALIDATION_SERVER_NAME": "paper.example.com"},
        )
        assert result.returncode == 0, result.stdout


def test_missing_headers_fail(tmp_path: Path, app: RefApp, ca: trustme.CA) -> None:
    app.set_faults("no_security_headers")
    try:
        for front in _front(tmp_path / "ngx", app, ca, headers=False):
            code, out, failed, _ = validate(front, tmp_path)
            assert code == 1 and failed == {"security.headers"}, out
    finally:
        app.set_faults()


def test_missing_rate_limit_fails(tmp_path: Path, app: RefApp, ca: trustme.CA) -> None:
    app.set_faults("no_rate_limit")
    try:
        for front in _front(tmp_path / "ngx", app, ca, rate_limit=False):
            code, out, failed, _ = validate(front, tmp_path)
            assert code == 1 and failed == {"security.rate_limit"}, out
    finally:
        app.set_faults()


def test_insecure_skips_certificate_verification(tmp_path: Path, app: RefApp, ca: trustme.CA) -> None:
    for front in _front(tmp_path / "ngx", app, trustme.CA()):
        report = tmp_path / "r.json"
        result = run_cli("--base-url", front.https_url, "--insecure", "--report", str(report))
        assert result.returncode == 0, result.stdout
        checks = {c["name"]: c for c in json.loads(report.read_text())["checks"]}
        assert checks["security.certificate"]["status"] == "skipped"
        assert checks["security.tls_protocol"]["status"] == "passed"


def test_front_that_still_speaks_tls10_fails(tmp_path: Path, app: RefApp, ca: trustme.CA) -> None:
    """The legacy half of the protocol check really asks: a TLS 1.0/1.1 front is caught."""
    for front in _front(tmp_path / "ngx", app, ca, legacy_tls=True):
        code, out, failed, doc = validate(front, tmp_path)
        assert code == 1 and failed == {"security.tls_protocol"}, out
        assert "accepts legacy TLSv1" in out


def test_legacy_probe_says_when_this_client_cannot_ask(
    tmp_path: Path, app: RefApp, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client OpenSSL without TLS 1.0/1.1 must not report them as refused by the server."""
    import ssl

    from validation import ValidationOptions, checks_security
    from validation import validate as run_validation
    from validation.tls import legacy_context

    def incapable() -> ssl.SSLContext:
        ctx = legacy_context()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # min above max: no protocol left to offer
        return ctx

    monkeypatch.setattr(checks_security, "legacy_context", incapable)
    for front in _front(tmp_path / "ngx", app, ca, legacy_tls=True):
        report = run_validation(ValidationOptions(base_url=front.https_url, ca_file=front.ca_file))
        check = next(c for c in report.checks if c.name == "security.tls_protocol")
        assert check.status == "passed", check.message
        assert "not probed" in check.message and check.details["legacy_probed"] is False
        assert "refused" not in check.message
