"""External scanners on the product's own proxy config: gixy-ng and sslyze (issue 13).

- gixy-ng (static analysis) reads the rendered prod, dev and ci `nginx.conf` exactly as the
  program uploads it (only the routing include's path points at the rendered routing file in a
  temp dir, so gixy sees the maps too), told the nginx release the stack pins
  (`--nginx-version`, which drives its CVE check). Its JSON report must hold no finding at
  LOW severity or above, except the documented false positives in `FALSE_POSITIVES` (each with
  the reason and a structural test that it is that case). UNSPECIFIED is gixy's informational
  level and is printed, not failed on.
- sslyze scans the real nginx (the host's, tests/support/fidelity_nginx.py) running the rendered prod
  config with a certificate chain made here by a test CA that the scan trusts, so the
  certificate is valid; its Mozilla checker must find the server compliant with the
  intermediate profile (no issue at all), and the certificate must validate for the host name.

Negative controls run every time, so a scanner that silently checks nothing fails the suite:
gixy must report a dropped `worker_rlimit_nofile` and an nginx release below the floor, and
sslyze must find a proxy that accepts a CBC-SHA1 cipher non-compliant.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from contract.versions import NGINX_FLOOR, dotted, release_in_tag
from render.nginx.conf import TLS_CIPHERS
from settings import Settings
from tests.support import missing, rendered, require_tool
from tests.support.fakes.validation_servers import free_port
from tests.support.fidelity_nginx import Edit, apply, prod_settings, product_proxy

ROOT = Path(__file__).resolve().parents[2]
CONF = "etc/paper-trading/nginx/nginx.conf"
ROUTING = "etc/paper-trading/nginx/routing.conf"
ROUTING_INCLUDE = "include /etc/paper-trading/nginx/routing.conf;"
STACKS = ("prod", "dev", "ci")
#: gixy's levels, lowest first; everything from LOW up fails the test.
SEVERITIES = ("UNSPECIFIED", "LOW", "MEDIUM", "HIGH")
FAIL_FROM = "LOW"

# ----------------------------------------------------------------------------- gixy


def proxy_files(stack: str) -> tuple[str, str, Any]:
    """(nginx.conf, routing include, settings image) as the program uploads them for `stack`."""
    graph = rendered(stack)
    proxies = [r for r in graph.containers if r.label_map.get("paper-trading.service") == "proxy"]
    assert len(proxies) == 1
    name = proxies[0].inputs["name"]
    files = graph.files()
    return files[f"{name}/{CONF}"], files[f"{name}/{ROUTING}"], proxies[0].inputs["image"]


def gixy_exe() -> str:
    exe = Path(sys.executable).parent / "gixy"
    if not exe.exists():
        missing("gixy-ng is not installed (requirements-dev.txt)")
    return str(exe)


@dataclass(frozen=True)
class Finding:
    plugin: str
    severity: str
    summary: str
    reason: str
    line: int

    def __str__(self) -> str:
        return f"{self.severity} {self.plugin} (line {self.line}): {self.summary} {self.reason}"


def gixy(conf: str, routing: str, version: tuple[int, int, int], workdir: Path) -> tuple[list[Finding], str]:
    """gixy-ng's JSON findings for `conf` (and the text it scanned)."""
    require_tool("nginx")  # the config includes the host's /etc/nginx/mime.types
    (workdir / "routing.conf").write_text(routing)
    scanned = apply(conf, [Edit(ROUTING_INCLUDE, f"include {workdir}/routing.conf;", 1)])
    (workdir / "nginx.conf").write_text(scanned)
    proc = subprocess.run(
        [gixy_exe(), "-f", "json", "--nginx-version", dotted(version), str(workdir / "nginx.conf")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode in (0, 1), f"gixy failed ({proc.returncode}):\n{proc.stderr}"
    assert "File not found" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    assert isinstance(report, list)
    findings = [
        Finding(i["plugin"], i["severity"], i["summary"], i.get("reason") or "", int(i.get("line") or 0))
        for i in report
    ]
    assert all(f.severity in SEVERITIES for f in findings), findings
    return findings, scanned


def server_block(conf: str, line: int) -> list[str]:
    """The lines of the `server { ... }` block that starts at 1-based `line`."""
    lines = conf.splitlines()
    assert lines[line - 1].strip() == "server {", f"line {line} opens no server block: {lines[line - 1]!r}"
    depth, block = 0, []
    for text in lines[line - 1:]:
        block.append(text)
        depth += text.count("{") - text.count("}")
        if depth == 0:
            return block
    raise AssertionError(f"server block at line {line} never closes")


def _plain_http_listener_on_a_443ish_port(finding: Finding, conf: str, settings: Settings) -> bool:
    """gixy takes any `listen` containing "443" for TLS; with TLS off the preview listener is
    plain HTTP on container port 9443, so "missing ssl_protocols/ssl_ciphers/HSTS" is void."""
    if settings.server.ssl.enabled:
        return False
    block = server_block(conf, finding.line)
    listens = [text.split()[1:] for text in block if text.strip().startswith("listen ")]
    return bool(listens) and all("ssl" not in args[-1] and "443" in args[0] for args in listens)


#: (plugin, summary) -> the structural test that the finding is that false positive.
FALSE_POSITIVES: dict[tuple[str, str], Callable[[Finding, str, Settings], bool]] = {
    ("weak_ssl_tls", "Missing ssl_protocols directive"): _plain_http_listener_on_a_443ish_port,
    ("weak_ssl_tls", "Missing ssl_ciphers directive"): _plain_http_listener_on_a_443ish_port,
    ("hsts_header", "Missing HSTS header"): _plain_http_listener_on_a_443ish_port,
}


def stack_settings(stack: str) -> Settings:
    from tests.support.proxy_settings import stack_settings as load

    return load(stack)


def _false_positive(finding: Finding, conf: str, settings: Settings) -> bool:
    check = FALSE_POSITIVES.get((finding.plugin, finding.summary))
    return check is not None and check(finding, conf, settings)


def real_findings(stack: str, findings: Sequence[Finding], conf: str) -> list[Finding]:
    settings = stack_settings(stack)
    threshold = SEVERITIES.index(FAIL_FROM)
    return [
        f for f in findings
        if SEVERITIES.index(f.severity) >= threshold
        and not _false_positive(f, conf, settings)
    ]


@pytest.mark.parametrize("stack", STACKS)
def test_gixy_finds_nothing_in_the_rendered_config(stack: str, tmp_path: Path) -> None:
    conf, routing, image = proxy_files(stack)
    version = release_in_tag(image)
    assert version is not None, image
    findings, scanned = gixy(conf, routing, version, tmp_path)
    for finding in findings:
        print(f"{stack}: {finding}")  # shown with -s: the whole report, including what is excused
    assert [str(f) for f in real_findings(stack, findings, scanned)] == []
    if stack == "prod":  # TLS on: nothing to excuse at all
        assert [str(f) for f in findings if f.severity != "UNSPECIFIED"] == []


def test_gixy_reports_a_dropped_rlimit(tmp_path: Path) -> None:
    """Negative control: without worker_rlimit_nofile, gixy's fd rule fires on the prod config."""
    conf, routing, _ = proxy_files("prod")
    line = f"worker_rlimit_nofile {prod_settings().proxy.open_files_limit};\n"
    before, _ = gixy(conf, routing, NGINX_FLOOR, tmp_path)
    after, scanned = gixy(apply(conf, [Edit(line, "", 1)]), routing, NGINX_FLOOR, tmp_path)
    new = {f.plugin for f in real_findings("prod", after, scanned)} - {f.plugin for f in before}
    assert new == {"worker_rlimit_nofile_vs_connections"}


def test_gixy_knows_cves_below_the_floor(tmp_path: Path) -> None:
    """gixy's nginx CVE data agrees with the floor: the release before it is vulnerable, the floor is not."""
    conf, routing, _ = proxy_files("prod")
    below = (NGINX_FLOOR[0], NGINX_FLOOR[1], NGINX_FLOOR[2] - 1)
    findings, _ = gixy(conf, routing, below, tmp_path)
    assert [f for f in findings if f.plugin == "nginx_cves"], f"gixy knows no CVE in nginx {dotted(below)}"
    at_floor, _ = gixy(conf, routing, NGINX_FLOOR, tmp_path)
    assert [str(f) for f in at_floor if f.plugin == "nginx_cves"] == []


# ----------------------------------------------------------------------------- sslyze


@dataclass(frozen=True)
class TlsScan:
    issues: dict[str, str]
    versions: set[str]
    certificate_valid: bool
    hostname_matches: bool


def sslyze_scan(port: int, host: str, ca_file: Path) -> TlsScan:
    try:
        from sslyze import (  # type: ignore[attr-defined]  # sslyze re-exports without __all__
            CertificateInfoExtraArgument,
            ScanCommandsExtraArguments,
            Scanner,
            ServerNetworkLocation,
            ServerScanRequest,
            ServerScanStatusEnum,
        )
        from sslyze.mozilla_tls_profile.tls_config_checker import (
            SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
            MozillaTlsConfiguration,
            ServerNotCompliantWithTlsConfiguration,
            TlsConfigurationEnum,
            check_server_against_tls_configuration,
        )
    except ImportError:
        missing("sslyze is not installed (requirements-dev.txt)")
        raise
    request = ServerScanRequest(
        server_location=ServerNetworkLocation(hostname=host, port=port, ip_address="127.0.0.1"),
        scan_commands=SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
        scan_commands_extra_arguments=ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=ca_file),
        ),
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    results = list(scanner.get_results())
    assert len(results) == 1
    result = results[0]
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    issues: dict[str, str] = {}
    try:
        check_server_against_tls_configuration(
            result, MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE))
    except ServerNotCompliantWithTlsConfiguration as exc:
        issues = dict(exc.issues)
    scan = result.scan_result
    assert scan is not None
    versions = {
        name for field, name in [
            ("ssl_2_0_cipher_suites", "SSLv2"), ("ssl_3_0_cipher_suites", "SSLv3"),
            ("tls_1_0_cipher_suites", "TLSv1"), ("tls_1_1_cipher_suites", "TLSv1.1"),
            ("tls_1_2_cipher_suites", "TLSv1.2"), ("tls_1_3_cipher_suites", "TLSv1.3"),
        ]
        if getattr(scan, field).result.is_tls_version_supported
    }
    cert_info = scan.certificate_info.result
    assert cert_info is not None
    deployments = cert_info.certificate_deployments
    return TlsScan(
        issues=issues,
        versions=versions,
        certificate_valid=bool(deployments) and all(d.verified_certificate_chain for d in deployments),
        hostname_matches=bool(deployments) and all(_names_host(d.received_certificate_chain[0], host)
                                                   for d in deployments),
    )


def _names_host(leaf: Any, host: str) -> bool:
    """The leaf's subjectAltName lists `host` (sslyze 6 no longer reports the match itself)."""
    from cryptography import x509

    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return host in names.get_values_for_type(x509.DNSName)


@dataclass(frozen=True)
class Chain:
    fullchain_pem: bytes  # leaf + intermediate, as nginx serves it
    key_pem: bytes
    root_pem: bytes  # what the scan trusts


def make_chain(host: str) -> Chain:
    """Root CA -> intermediate CA -> leaf for `host`, RFC 5280 shaped (sslyze validates strictly;
    trustme's leaf marks subjectAltName critical beside a subject, which that rejects), ECDSA P-256,
    SHA-256, a 90-day leaf (the Mozilla profile caps leaf lifespans)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "paper-trading tests"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def issue(subject: x509.Name, key: Any, issuer: x509.Name, issuer_key: Any, days: int,
              ca: bool, extra: Sequence[tuple[Any, bool]]) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - day).not_valid_after(now + days * day)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca and issuer != subject else None),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                           critical=False)
        )
        for extension, critical in extra:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_usage = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                             crl_sign=True, encipher_only=False, decipher_only=False)
    leaf_usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                               data_encipherment=False, key_agreement=False, key_cert_sign=False,
                               crl_sign=False, encipher_only=False, decipher_only=False)
    root_key, inter_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = issue(name("test root"), root_key, name("test root"), root_key, 3650, True, [(ca_usage, True)])
    inter = issue(name("test intermediate"), inter_key, root.subject, root_key, 1825, True,
                  [(ca_usage, True)])
    leaf = issue(name(host), leaf_key, inter.subject, inter_key, 90, False, [
        (leaf_usage, True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (x509.SubjectAlternativeName([x509.DNSName(host)]), False),
    ])
    pem = serialization.Encoding.PEM
    return Chain(
        fullchain_pem=leaf.public_bytes(pem) + inter.public_bytes(pem),
        key_pem=leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        root_pem=root.public_bytes(pem),
    )


def scan_product_proxy(tmp_path: Path, edits: Sequence[Edit] = ()) -> TlsScan:
    host = prod_settings().server.host
    chain = make_chain(host)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(chain.root_pem)
    # Nothing needs the apps for a TLS scan: unused loopback ports stand for the upstreams.
    upstreams = {"blue": free_port(), "green": free_port()}
    with product_proxy(upstreams, chain.fullchain_pem, chain.key_pem, chain.root_pem, edits) as front:
        port = int(front.live_url.rsplit(":", 1)[1])
        return sslyze_scan(port, host, ca_file)


def test_sslyze_finds_the_prod_proxy_mozilla_intermediate_compliant(tmp_path: Path) -> None:
    scan = scan_product_proxy(tmp_path)
    assert scan.issues == {}
    assert scan.versions == {"TLSv1.2", "TLSv1.3"}
    assert scan.certificate_valid and scan.hostname_matches


def test_sslyze_refuses_a_weak_cipher(tmp_path: Path) -> None:
    """Negative control: the same proxy also offering ECDHE-ECDSA-AES128-SHA (CBC, SHA-1)."""
    weak = Edit(f"ssl_ciphers {TLS_CIPHERS};", f"ssl_ciphers {TLS_CIPHERS}:ECDHE-ECDSA-AES128-SHA;", 1)
    scan = scan_product_proxy(tmp_path, [weak])
    assert set(scan.issues) == {"ciphers"}, scan.issues
    assert "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA" in scan.issues["ciphers"]
    assert scan.certificate_valid
