"""The real IDS on a real access log (issue 14, part 2; the bar: "a scan/brute-force replay is
banned within the configured window, and a clean client is never banned").

- the real nginx on this host runs the product's rendered prod `nginx.conf` (tests/support/fidelity_nginx.py
  substitutions; its public TLS listener also bound to each client's veth address), writing the
  JSON access log to a temp file as the proxy writes it to the `proxy-logs` volume;
- the real fail2ban (Debian's, `fail2ban-server` under the generated `supervise.py`) runs on the
  host in a temp dir with the bundle `render/ids` generates, reading that log;
- clients live in network namespaces (veth pairs to the host on private /30s, names unique per
  run, removed afterwards): a scanner, a brute forcer, an injector, a clean client and an
  allow-listed client that scans too.

Asserted on structured results: decision files (`<until> <jail>`), the clients' status codes and
the IDS's Prometheus metrics. Ban time is short here (`BAN_SECONDS`) so the unban is seen.
No firewall rule is loaded anywhere: the decisions are the IDS's whole output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from render.ids import IdsPaths, bundle
from settings import Settings
from tests.support import require_tool, stop_process
from tests.support.fakes.validation_servers import free_port
from tests.support.fidelity_nginx import (
    prod_settings,
)
from tests.support.ids_proxy import Client, _start_proxy

pytestmark = pytest.mark.tools

BAN_SECONDS = 20
#: How long after the last offending request the decision file must exist: fail2ban polls the
#: log every second; the rest is margin for a loaded CI host.
BAN_WINDOW_SECONDS = 8.0
PROBE_PATHS = (
    "/wp-login.php", "/.env", "/.git/config", "/phpmyadmin/index.php", "/cgi-bin/test.cgi",
    "/admin/config.php", "/vendor/phpunit/eval-stdin.php", "/actuator/env", "/server-status",
    "/backup.sql", "/wp-admin/setup-config.php", "/xmlrpc.php", "/.aws/credentials", "/index.php.bak",
    "/HNAP1/",
)
INJECTIONS = (
    "/api/orders?id=1%27%20OR%201=1--", "/search?q=%3Cscript%3Ealert(1)%3C/script%3E",
    "/api/orders?id=1%20UNION%20SELECT%20password%20FROM%20users", "/files?name=..%2f..%2fetc%2fpasswd",
)
#: Injections the proxy's own patterns miss (encoded letters, double encoding, `%0b`): they reach
#: the app, so only the IDS's reading of the raw query (`args`) can count them (issue 21, item 5).
EVASIONS = (
    "/api/orders?id=1%20%55nion%20%53elect%20password", "/api/orders?id=1%2520%2555nion%2520%2553elect",
    "/api/orders?id=1%0bunion%0bselect%0bpassword",
)


def ids_settings(allowed: str) -> Settings:
    """The prod stack with a short ban time and `allowed` on the allow-list (thresholds: prod's)."""
    base = prod_settings()
    ids = base.security.ids.model_copy(update={
        "ban_time_seconds": BAN_SECONDS, "allow_list": (*base.security.ids.allow_list, f"{allowed}/32"),
    })
    return base.model_copy(update={"security": base.security.model_copy(update={"ids": ids})})


# ----------------------------------------------------------------------------- the outside world







def fetch(
    client: Client, base: str, paths: tuple[str, ...], method: str = "GET", headers: tuple[str, ...] = ()
) -> list[int]:
    """Status codes of `paths` requested one after another from the client's namespace (real curl)."""
    curl = require_tool("curl")
    args = ["ip", "netns", "exec", client.netns, curl, "-sk", "--path-as-is", "--max-time", "5",
            "-X", method, "-w", "%{http_code}\n", *[a for h in headers for a in ("-H", h)]]
    for path in paths:
        args += ["-o", "/dev/null", f"{base}{path}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return [int(code) for code in result.stdout.split()]


# ----------------------------------------------------------------------------- the app and the proxy

class _App(BaseHTTPRequestHandler):
    """Both colors' upstream: 200 on / and /api/ping, 401 on the login, 404 elsewhere."""

    def _answer(self) -> None:
        path = self.path.split("?")[0]
        code = 200 if path in ("/", "/api/ping") else 401 if path == "/api/auth/login" else 404
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _answer  # noqa: N815

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # any other method token nginx passes on (`GET-X`)
            return self._answer
        raise AttributeError(name)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return


@dataclass(frozen=True)
class World:
    clients: dict[str, Client]
    root: Path
    https_port: int
    settings: Settings
    paths: IdsPaths
    metrics_url: str

    def base(self, client: Client) -> str:
        return f"https://{client.host_address}:{self.https_port}"

    def decision(self, client: Client) -> tuple[int, str] | None:
        target = Path(self.paths.decisions_dir) / client.address
        try:
            until, jail = target.read_text().split()
        except FileNotFoundError:
            return None
        return int(until), jail

    def wait_decision(
        self, client: Client, timeout: float = BAN_WINDOW_SECONDS
    ) -> tuple[int, str] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.decision(client)
            if found is not None:
                return found
            time.sleep(0.2)
        return self.decision(client)

    def log_lines(self) -> int:
        path = self.root / "access.log"
        return len(path.read_text().splitlines()) if path.exists() else 0




def _start_ids(
    root: Path, settings: Settings, https_port: int
) -> tuple[subprocess.Popen[bytes], IdsPaths, str]:
    require_tool("fail2ban-server")
    require_tool("fail2ban-client")
    metrics_port = free_port()
    paths = IdsPaths(
        run_dir=str(root / "ids"), access_log=str(root / "access.log"), decisions_dir=str(root / "decisions"),
        metrics_listen=f"127.0.0.1:{metrics_port}", python=sys.executable,
        fail2ban_server=require_tool("fail2ban-server"), fail2ban_client=require_tool("fail2ban-client"),
        heartbeat_seconds=1,
    )
    (root / "decisions").mkdir()
    # The listener field is the port nginx accepted on: here the test's public TLS port.
    for relative, text in bundle(settings, paths, public_listeners=(https_port,)).items():
        target = root / "ids" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    log = open(root / "ids.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen([sys.executable, str(root / "ids" / "supervise.py")], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if "paper_trading_ids_heartbeat_timestamp_seconds" in httpx.get(url, timeout=1).text:
                return proc, paths, url
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, (root / "ids.log").read_text()
        time.sleep(0.3)
    raise AssertionError(f"the IDS never answered a ping: {(root / 'ids.log').read_text()}")


@pytest.fixture(scope="module")
def world(clients: dict[str, Client]) -> Iterator[World]:
    root = Path(tempfile.mkdtemp(prefix="ids-real-"))
    root.chmod(0o755)  # nginx workers run as another user
    app = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        proxy, https_port = _start_proxy(root, clients, app.server_address[1])
        procs.append(proxy)
        settings = ids_settings(clients["allowed"].address)
        ids, paths, metrics_url = _start_ids(root, settings, https_port)
        procs.append(ids)
        yield World(clients, root, https_port, settings, paths, metrics_url)
    finally:
        for proc in reversed(procs):
            stop_process(proc, timeout=20)
        app.shutdown()
        if os.environ.get("KEEP_IDS_TMP"):
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def metrics(world: World) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in httpx.get(world.metrics_url, timeout=5).text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


# ----------------------------------------------------------------------------- the tests (in order)

def test_clean_client_is_served_before_anything(world: World) -> None:
    clean = world.clients["clean"]
    assert fetch(clean, world.base(clean), ("/", "/api/ping") * 3) == [200] * 6
    assert world.log_lines() >= 6, "nginx wrote no access-log file"


def test_scanner_is_banned_within_the_window(world: World) -> None:
    scanner = world.clients["scanner"]
    probe = world.settings.security.ids.probe
    codes = fetch(scanner, world.base(scanner), PROBE_PATHS)
    assert codes.count(404) >= probe.max_retry, codes
    sent = time.time()
    decision = world.wait_decision(scanner)
    assert decision is not None, f"{scanner.address} not banned within {BAN_WINDOW_SECONDS}s"
    until, jail = decision
    assert jail == "probe"
    assert sent + BAN_SECONDS - 2 <= until <= time.time() + BAN_SECONDS + 1, (until - sent)


def test_brute_force_on_the_auth_path_is_banned(world: World) -> None:
    brute = world.clients["brute"]
    auth = world.settings.security.ids.auth
    login = (world.settings.validation.rate_limit_path,) * (auth.max_retry + 2)
    codes = fetch(brute, world.base(brute), login, method="POST")
    assert set(codes) <= {401, 429} and len(codes) == auth.max_retry + 2, codes
    decision = world.wait_decision(brute)
    assert decision is not None and decision[1] == "auth", decision


def test_injection_probes_are_banned(world: World) -> None:
    injector = world.clients["injector"]
    codes = fetch(injector, world.base(injector), INJECTIONS)
    assert codes == [400] * len(INJECTIONS), codes  # the proxy blocks them; the IDS bans the sender
    decision = world.wait_decision(injector)
    assert decision is not None and decision[1] == "injection", decision


def test_spoofed_evasions_ban_the_real_sender(world: World) -> None:
    """Encoded injections the proxy lets through, two of them with a method token nginx accepts
    that `[A-Z]*` did not match (`GET-X`), all with forwarding headers naming the clean client:
    the ban lands on the sender's own address, never on the named one."""
    spoofer, clean = world.clients["spoofer"], world.clients["clean"]
    spoof = (f"X-Forwarded-For: {clean.address}", f"X-Real-IP: {clean.address}",
             f"Forwarded: for={clean.address}")
    codes = fetch(spoofer, world.base(spoofer), EVASIONS[:2], method="GET-X", headers=spoof)
    codes += fetch(spoofer, world.base(spoofer), EVASIONS[2:], headers=spoof)
    # Not blocked by the proxy (the app answered): the IDS alone sees them.
    assert codes == [404] * len(EVASIONS), codes
    decision = world.wait_decision(spoofer)
    assert decision is not None and decision[1] == "injection", decision
    assert world.decision(clean) is None, f"the spoofed address {clean.address} was banned"


def test_burst_of_4xx_is_banned(world: World) -> None:
    """Ordinary (non-probe) paths that do not exist, fast: the `errors` jail."""
    burster = world.clients["burster"]
    errors = world.settings.security.ids.errors
    paths = tuple(f"/api/orders/{n}/missing" for n in range(errors.max_retry + 5))
    codes = fetch(burster, world.base(burster), paths)
    assert all(400 <= code < 500 for code in codes) and len(codes) == errors.max_retry + 5, codes
    decision = world.wait_decision(burster)
    assert decision is not None and decision[1] == "errors", decision


def test_allow_listed_address_is_never_banned(world: World) -> None:
    allowed = world.clients["allowed"]
    codes = fetch(allowed, world.base(allowed), PROBE_PATHS + INJECTIONS)
    codes += fetch(allowed, world.base(allowed), ("/api/auth/login",) * 12, method="POST")
    assert 404 in codes and 400 in codes and 401 in codes, codes
    # The same traffic got the scanner banned in well under the window: wait the whole window.
    assert world.wait_decision(allowed) is None, f"allow-listed {allowed.address} was banned"


def test_clean_client_keeps_working_and_is_never_banned(world: World) -> None:
    clean = world.clients["clean"]
    assert fetch(clean, world.base(clean), ("/", "/api/ping") * 10) == [200] * 20
    assert world.decision(clean) is None
    banned = sorted(p.name for p in Path(world.paths.decisions_dir).iterdir() if not p.name.startswith("."))
    offenders = ("scanner", "brute", "injector", "burster", "spoofer")
    expected = sorted(world.clients[n].address for n in offenders)
    assert banned == expected


def test_bans_are_metrics(world: World) -> None:
    # The supervisor refreshes every second (heartbeat_seconds=1 here).
    time.sleep(1.5)
    found = metrics(world)
    for jail in ("probe", "auth", "injection", "errors"):
        assert found[f'paper_trading_ids_bans_total{{jail="{jail}"}}'] >= 1, found
    assert found["paper_trading_ids_active_bans"] == 5, found
    assert time.time() - found["paper_trading_ids_heartbeat_timestamp_seconds"] < 5


def test_ban_expires_after_the_ban_time(world: World) -> None:
    scanner = world.clients["scanner"]
    decision = world.decision(scanner)
    assert decision is not None, "the scanner's ban ended early"
    until = decision[0]
    assert until <= time.time() + BAN_SECONDS, f"the ban lasts {until - time.time():.0f}s, not {BAN_SECONDS}s"
    # Still banned shortly before the end, gone shortly after it (fail2ban's unban action).
    while time.time() < until - 2:
        assert world.decision(scanner) is not None, "unbanned before the ban time was over"
        time.sleep(0.5)
    deadline = until + 6
    while time.time() < deadline and world.decision(scanner) is not None:
        time.sleep(0.2)
    assert world.decision(scanner) is None, "the ban did not expire"
    assert fetch(scanner, world.base(scanner), ("/",)) == [200]
