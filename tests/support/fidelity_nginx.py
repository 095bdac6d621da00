"""The product's own proxy on loopback: the rendered prod `nginx.conf`, run by the real nginx.

The config is the file the Pulumi program uploads into the proxy container
(`tools.render.evaluate("prod").files()`), not a stand-in. Only what cannot work outside
the container is changed, by the explicit substitutions in `LOOPBACK` (listen ports, the
certificate, pid/temp/routing paths, the Docker-DNS upstreams): each must match the rendered
text exactly as often as listed, and afterwards no container-only path or listener may remain,
so a changed template fails here instead of silently running something else.

Fault variants (a proxy that lost a header, its rate limit, or speaks TLS 1.0) are further
substitutions of the same kind (`Edit`), also asserted to have matched.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from render.nginx.conf import STATUS_ALIAS, TLS_CIPHERS
from settings import Settings, parse_settings
from tests.support import rendered, require_tool, stop_process
from tests.support.fakes.validation_servers import Front, free_port, wait_port
from tools.render import stack_config

PROXY = "paper-trading-proxy"
CONF_FILE = f"{PROXY}/etc/paper-trading/nginx/nginx.conf"
ROUTING_FILE = f"{PROXY}/etc/paper-trading/nginx/routing.conf"


@cache
def prod_settings() -> Settings:
    config, secrets = stack_config("prod")
    prefix = "paper-trading:"
    raw = {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)}
    return parse_settings(raw, frozenset(k[len(prefix):] for k in secrets if k.startswith(prefix)))


def auth_burst() -> int:
    """The prod proxy's burst on the auth paths (what `security.rate_limit` must be told)."""
    return prod_settings().proxy.auth_rate_limit.burst


@dataclass(frozen=True)
class Edit:
    """Replace `old` by `new`; `old` must occur exactly `count` times in the rendered text."""

    old: str
    new: str
    count: int


def apply(text: str, edits: Sequence[Edit]) -> str:
    for edit in edits:
        found = text.count(edit.old)
        assert found == edit.count, (
            f"substitution {edit.old!r} matched {found} time(s) in the rendered config, expected "
            f"{edit.count}: the template changed, update the substitution deliberately"
        )
        text = text.replace(edit.old, edit.new)
    return text


def rendered_file(path: str, stack: str = "prod") -> str:
    """A generated file of the stack by `<container>/<path>`; a missing one fails the test."""
    files = rendered(stack).files()
    assert path in files, f"the {stack} program no longer renders {path}: {sorted(files)}"
    return files[path]


@dataclass(frozen=True)
class Ports:
    http: int
    https: int
    preview: int
    status: int


def loopback_edits(root: Path, ports: Ports, upstreams: Mapping[str, int]) -> list[Edit]:
    """Container ports/paths/aliases of the rendered prod config -> this test's loopback ones."""
    edits = [
        # listeners: container ports on all addresses -> free loopback ports
        Edit("listen 8080 default_server;", f"listen 127.0.0.1:{ports.http} default_server;", 1),
        Edit("listen 8443 ssl default_server;", f"listen 127.0.0.1:{ports.https} ssl default_server;", 1),
        Edit("listen 9443 ssl default_server;", f"listen 127.0.0.1:{ports.preview} ssl default_server;", 1),
        # the status listener binds the metrics-only alias and loopback -> one loopback port
        Edit("        listen 127.0.0.1:8081;\n", "", 1),
        Edit(f"listen {STATUS_ALIAS}:8081;", f"listen 127.0.0.1:{ports.status};", 1),
        # the certificate mounted at /run/tls -> the test CA's leaf
        Edit("ssl_certificate /run/tls/fullchain.pem;", f"ssl_certificate {root}/tls/fullchain.pem;", 1),
        Edit("ssl_certificate_key /run/tls/privkey.pem;", f"ssl_certificate_key {root}/tls/privkey.pem;", 1),
        # writable paths of the container -> the temp dir
        Edit("pid /tmp/nginx.pid;", f"pid {root}/nginx.pid;", 1),
        Edit("/var/cache/nginx/", f"{root}/cache/", 5),
        Edit(
            "include /etc/paper-trading/nginx/routing.conf;",
            f"include {root}/routing/routing.conf;",
            1,
        ),
        # the routing markers the app servers test per request (live-*, preview-*): 3 tests per
        # server (blue, green, blue again: render/nginx/routing.py routing_directives)
        Edit("/etc/paper-trading/routing/", f"{root}/routing/", 6),
        Edit("root /var/www/acme;", f"root {root}/acme;", 1),
        # the IDS's copy of the access log on the proxy-logs volume -> the temp dir (issue 14, part 2)
        Edit("access_log /var/log/paper-trading/access.log ids;",
             f"access_log {root}/access.log ids;", 1),
    ]
    # Docker-DNS aliases app-<color>:3000 (live and preview maps) -> the apps on loopback
    for color, port in upstreams.items():
        edits.append(Edit(f'"app-{color}:{prod_settings().server.port}"', f'"127.0.0.1:{port}"', 2))
    return edits


def assert_loopback_only(conf: str) -> None:
    """Nothing of the container is left: every listener on loopback, no container path or alias."""
    listens = re.findall(r"^\s*listen\s+(\S+)", conf, re.M)
    assert listens and all(spec.startswith("127.0.0.1:") for spec in listens), listens
    for leftover in ("/run/tls/", "/etc/paper-trading/", "/var/cache/nginx", "/tmp/nginx.pid", '"app-',
                     "/var/log/paper-trading"):
        assert leftover not in conf, f"{leftover!r} still in the loopback config"


# ----------------------------------------------------------------------------- fault edits

#: What `security.headers` requires; the rendered proxy sends each on its TLS listeners.
SECURITY_HEADERS = (
    "Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy",
    "Content-Security-Policy", "Permissions-Policy",
)

def without_header(name: str) -> list[Edit]:
    """The proxy lost one security header (every listener that sends it)."""
    conf = rendered_file(CONF_FILE)
    lines = [
        line for line in conf.splitlines(keepends=True) if line.strip().startswith(f"add_header {name} ")
    ]
    assert lines, f"the rendered config sends no {name}"
    return [Edit(line, "", conf.count(line)) for line in dict.fromkeys(lines)]


def without_auth_rate_limit() -> list[Edit]:
    """The proxy lost the auth zone's limit (both public and preview, /api/auth/ and /auth/)."""
    return [Edit(f" limit_req zone=auth burst={auth_burst()} nodelay;", "", 4)]


def with_legacy_tls() -> list[Edit]:
    """A misconfigured proxy that still speaks TLS 1.0/1.1 (OpenSSL 3 needs SECLEVEL=0 for them)."""
    return [
        Edit("ssl_protocols TLSv1.2 TLSv1.3;", "ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;", 1),
        Edit(f"ssl_ciphers {TLS_CIPHERS};", "ssl_ciphers DEFAULT:@SECLEVEL=0;", 1),
    ]


# ----------------------------------------------------------------------------- running it

@dataclass
class ProductFront(Front):
    """The running product proxy: `https_url` is the preview listener (what the gate validates)."""

    live_url: str
    conf: str


@contextmanager
def product_proxy(
    upstreams: Mapping[str, int],
    cert_pem: bytes,
    key_pem: bytes,
    ca_pem: bytes,
    edits: Sequence[Edit] = (),
) -> Iterator[ProductFront]:
    """The rendered prod proxy on loopback in front of `upstreams` ({color: port})."""
    nginx = require_tool("nginx")
    assert set(upstreams) == {"blue", "green"}, "map both colors' upstreams"
    # Not under pytest's 0700 tmp: nginx workers run as another user.
    root = Path(tempfile.mkdtemp(prefix="product-proxy-"))
    root.chmod(0o755)
    try:
        for folder in ("tls", "cache", "routing", "acme"):
            (root / folder).mkdir()
        (root / "tls" / "fullchain.pem").write_bytes(cert_pem)
        (root / "tls" / "privkey.pem").write_bytes(key_pem)
        (root / "ca.pem").write_bytes(ca_pem)
        # The proxy's own (bootstrap) routing include: no color live, the candidate picked by header.
        (root / "routing" / "routing.conf").write_text(rendered_file(ROUTING_FILE))
        picked: list[int] = []
        while len(picked) < 4:  # distinct: a released port can be handed out again
            port = free_port()
            if port not in picked:
                picked.append(port)
        ports = Ports(*picked)
        conf = apply(rendered_file(CONF_FILE), [*loopback_edits(root, ports, upstreams), *edits])
        assert_loopback_only(conf)
        (root / "nginx.conf").write_text(conf)
        base = [nginx, "-e", str(root / "error.log"), "-p", str(root), "-c", str(root / "nginx.conf")]
        checked = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr
        proc = subprocess.Popen(
            [*base, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            try:
                for port in (ports.preview, ports.https, ports.http, ports.status):
                    wait_port(port)
            except TimeoutError:
                raise AssertionError(
                    f"nginx did not start: {(root / 'error.log').read_text()}"
                ) from None
            yield ProductFront(
                https_url=f"https://127.0.0.1:{ports.preview}",
                http_url=f"http://127.0.0.1:{ports.http}",
                ca_file=str(root / "ca.pem"),
                live_url=f"https://127.0.0.1:{ports.https}",
                conf=conf,
            )
        finally:
            stop_process(proc, timeout=5)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def nginx_front(
    workdir: Path,
    upstream: int,
    cert_pem: bytes,
    key_pem: bytes,
    ca_pem: bytes,
    *,
    headers: bool = True,
    rate_limit: bool = True,
    legacy_tls: bool = False,
) -> Iterator[ProductFront]:
    """The product proxy in front of one app for both colors (the old helper's signature, for bench)."""
    del workdir  # the proxy's files live in their own 0755 temp dir
    edits: list[Edit] = []
    if not headers:
        for name in SECURITY_HEADERS:
            edits += without_header(name)
    if not rate_limit:
        edits += without_auth_rate_limit()
    if legacy_tls:
        edits += with_legacy_tls()
    with product_proxy({"blue": upstream, "green": upstream}, cert_pem, key_pem, ca_pem, edits) as front:
        yield front
