"""TLS, headers, redirect and rate limit through the product's own proxy with a test CA (trustme).

The front is the rendered prod `nginx.conf` run by the real nginx (tests/support/fidelity_nginx.py),
the reference app its upstream for both colors; validation goes through the preview listener
with `--color green`, as the promotion gate does. The app's own security headers and rate
limit are switched off in the healthy case, so what passes there is the proxy's doing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.support.fakes.validation_servers import RefApp, reference_app
from tests.support.fidelity_nginx import (
    Edit,
    ProductFront,
    auth_burst,
    product_proxy,
    with_legacy_tls,
    without_auth_rate_limit,
    without_header,
)
from tests.support.fidelity_report import APP_BLOCKING_CHECKS, assert_failed_exactly, check
from tests.support.validation_cli import run_report

pytestmark = pytest.mark.tools

SECURITY = (
    "security.tls_protocol",
    "security.certificate",
    "security.headers",
    "security.https_redirect",
    "security.rate_limit",
)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def app() -> Iterator[RefApp]:
    with reference_app(color="green") as running:
        yield running


@pytest.fixture()
def bare_app(app: RefApp) -> Iterator[RefApp]:
    """The app without its own security headers and rate limit: only the proxy can supply them."""
    app.set_faults("no_security_headers", "no_rate_limit")
    yield app
    app.set_faults()


@contextmanager
def front(
    app: RefApp, ca: trustme.CA, *hosts: str, days: int = 365, edits: Sequence[Edit] = ()
) -> Iterator[ProductFront]:
    now = dt.datetime.now(dt.UTC)
    leaf = ca.issue_cert(*(hosts or ("127.0.0.1", "localhost")), not_after=now + dt.timedelta(days=days))
    with product_proxy(
        {"blue": app.port, "green": app.port},
        leaf.cert_chain_pems[0].bytes(),
        leaf.private_key_pem.bytes(),
        ca.cert_pem.bytes(),
        edits,
    ) as running:
        yield running


def validate(
    running: ProductFront, tmp: Path, *extra: str, ca_file: str = "", env: dict[str, str] | None = None
) -> tuple[int, str, dict[str, Any]]:
    result, report = run_report(
        tmp,
        "--base-url",
        running.https_url,
        "--color",
        "green",
        "--ca-file",
        ca_file or running.ca_file,
        *extra,
        env={
            "VALIDATION_HTTP_URL": running.http_url,
            "VALIDATION_RATE_LIMIT_BURST": str(auth_burst()),
            **(env or {}),
        },
    )
    return result.returncode, result.stdout, report


def test_product_proxy_alone_passes_every_security_check(
    tmp_path: Path, bare_app: RefApp, ca: trustme.CA
) -> None:
    with front(bare_app, ca) as running:
        code, out, report = validate(running, tmp_path)
    assert code == 0, out
    assert_failed_exactly(report, set())
    for name in SECURITY:
        assert check(report, name)["status"] == "passed", (name, out)
    assert sum(1 for c in report["checks"] if c["status"] == "passed") >= 18


def test_expiring_certificate_fails(tmp_path: Path, app: RefApp, ca: trustme.CA) -> None:
    with front(app, ca, days=3) as running:
        code, out, report = validate(running, tmp_path)
    assert code == 1, out
    assert_failed_exactly(report, {"security.certificate"})
    assert "expires in" in check(report, "security.certificate")["message"]


def assert_unverifiable_certificate(report: dict[str, Any], reason: str) -> None:
    """A certificate that does not verify fails security.certificate, and with it every check that
    talks HTTPS to the app (the client verifies too, so none of their requests connects). Only the
    unverified TLS probe and the plain-HTTP redirect still pass."""
    assert_failed_exactly(report, APP_BLOCKING_CHECKS | {"security.certificate"})
    assert reason in check(report, "security.certificate")["message"]
    for name in APP_BLOCKING_CHECKS - {"security.rate_limit"}:
        assert "CERTIFICATE_VERIFY_FAILED" in check(report, name)["message"], name
    for name in ("security.tls_protocol", "security.https_redirect"):
        assert check(report, name)["status"] == "passed", name


def test_certificate_for_another_host_fails(tmp_path: Path, app: RefApp, ca: trustme.CA) -> None:
    with front(app, ca, "other.example") as running:
        code, out, report = validate(running, tmp_path)
    assert code == 1, out
    assert_unverifiable_certificate(report, "IP address mismatch")


def test_untrusted_certificate_fails(tmp_path: Path, app: RefApp, ca: trustme.CA) -> None:
    trusted = tmp_path / "trusted-ca.pem"
    ca.cert_pem.write_to_path(str(trusted))
    with front(app, trustme.CA()) as running:
        code, out, report = validate(running, tmp_path, ca_file=str(trusted))
    assert code == 1, out
    assert_unverifiable_certificate(report, "unable to get local issuer certificate")


def test_server_name_reaches_a_tunnel_address(tmp_path: Path, app: RefApp, ca: trustme.CA) -> None:
    """Through a tunnel the URL is 127.0.0.1 but the certificate names the public host."""
    with front(app, ca, "paper.example.com") as running:
        code, out, report = validate(running, tmp_path, env={"VALIDATION_SERVER_NAME": "paper.example.com"})
    assert code == 0, out
    assert check(report, "security.certificate")["status"] == "passed"


def test_proxy_without_a_header_fails_only_the_headers_check(
    tmp_path: Path, bare_app: RefApp, ca: trustme.CA
) -> None:
    with front(bare_app, ca, edits=without_header("X-Frame-Options")) as running:
        assert "X-Frame-Options" not in running.conf
        code, out, report = validate(running, tmp_path)
    assert code == 1, out
    assert_failed_exactly(report, {"security.headers"})
    assert check(report, "security.headers")["details"]["missing"] == ["X-Frame-Options"]


def test_proxy_without_auth_rate_limit_fails_only_the_rate_limit_check(
    tmp_path: Path, bare_app: RefApp, ca: trustme.CA
) -> None:
    with front(bare_app, ca, edits=without_auth_rate_limit()) as running:
        assert "limit_req zone=auth " not in running.conf
        code, out, report = validate(running, tmp_path)
    assert code == 1, out
    assert_failed_exactly(report, {"security.rate_limit"})
    assert 429 not in check(report, "security.rate_limit")["details"]["statuses"]


def test_insecure_skips_certificate_verification(tmp_path: Path, app: RefApp, ca: trustme.CA) -> None:
    with front(app, trustme.CA()) as running:
        result, report = run_report(
            tmp_path, "--base-url", running.https_url, "--color", "green", "--insecure",
            env={"VALIDATION_RATE_LIMIT_BURST": str(auth_burst())},
        )
    assert result.returncode == 0, result.stdout
    assert_failed_exactly(report, set())
    assert check(report, "security.certificate")["status"] == "skipped"
    assert check(report, "security.tls_protocol")["status"] == "passed"


def test_front_that_still_speaks_tls10_fails(tmp_path: Path, app: RefApp, ca: trustme.CA) -> None:
    """The legacy half of the protocol check really asks: a TLS 1.0/1.1 front is caught."""
    with front(app, ca, edits=with_legacy_tls()) as running:
        code, out, report = validate(running, tmp_path)
    assert code == 1, out
    assert_failed_exactly(report, {"security.tls_protocol"})
    assert "accepts legacy TLSv1" in check(report, "security.tls_protocol")["message"]


def test_legacy_probe_says_when_this_client_cannot_ask(
    app: RefApp, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
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
    with front(app, ca, edits=with_legacy_tls()) as running:
        report = run_validation(ValidationOptions(base_url=running.https_url, ca_file=running.ca_file))
    result = check(report, "security.tls_protocol")
    assert result["status"] == "passed", result["message"]
    assert "not probed" in result["message"] and result["details"]["legacy_probed"] is False
    assert "refused" not in result["message"]
