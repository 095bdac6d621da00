"""IDS evasions (issue 21, item 5) under the real tools: the rendered prod proxy on loopback (the
real nginx writing the IDS's access-log file, `log_format ids`) and the real `fail2ban-regex`
running each generated jail filter over the lines it wrote.

Each case is one request sent with curl (method, raw path and query as given, headers); its log
line is found by nginx's `request_id`. Asserted per case: the set of jails whose filter matched
that line and the address each filter extracted (`<ADDR>`), never a substring of a listing.

- methods nginx accepts but `[A-Z]*` did not match (`POST_`, `GET-X`) still count;
- encoded injections (`%55nion %53elect`, double encoding, `%0b`, `/**/`, `union(`) that the
  proxy's `blocked` flag misses and the app receives are injection matches;
- every path under the proxy's auth rate limit counts for the auth jail, not only the login;
- a spoofed `X-Forwarded-For` / `X-Real-IP` changes nothing: the address is the peer's;
- normal trading traffic matches nothing (and 404s only the `errors` jail).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from render.ids import JAILS, IdsPaths, bundle
from tests.support import require_tool, stop_process
from tests.support.fidelity_nginx import prod_settings
from tests.support.ids_proxy import _start_proxy

pytestmark = pytest.mark.tools

SPOOFED = "203.0.113.77"


@dataclass(frozen=True)
class Case:
    name: str
    target: str  # raw path and query, sent as is
    jails: frozenset[str]  # the jails whose filters must match its line (exactly these)
    method: str = "GET"
    headers: tuple[str, ...] = ()


def _case(
    name: str, target: str, jails: set[str], method: str = "GET", headers: tuple[str, ...] = ()
) -> Case:
    return Case(name, target, frozenset(jails), method, headers)


#: Encoded injections: the proxy's raw-line patterns do not see these (status 200: the app got them).
ENCODED_INJECTIONS = (
    _case("percent-encoded letters", "/api/orders?id=1%20%55nion%20%53elect%20password", {"injection"}),
    _case("double encoding", "/api/orders?id=1%2520%2555nion%2520%2553elect%2520password", {"injection"}),
    _case("vertical tab separator", "/api/orders?id=1%0bunion%0bselect%0bpassword", {"injection"}),
    _case("comment and vertical tab", "/api/orders?id=1/**/UNION/*x*/%0bSELECT/**/password", {"injection"}),
    _case("union(", "/api/orders?id=1+union(select+password+from+users)", {"injection"}),
    _case("half-encoded comment", "/api/orders?id=1%2f*x*%2fUNION%2f*x*%2fSELECT+1", {"injection"}),
    _case("double-encoded script", "/search?q=%253Cscript%253Ealert(1)", {"injection"}),
    _case("double-encoded traversal", "/files?name=%252e%252e%252f%252e%252e%252fetc%252fpasswd",
          {"injection"}),
    _case("double-encoded quote or", "/api/orders?id=1%2527%2520or%25201=1", {"injection"}),
    _case("double-encoded nul", "/files?name=a.txt%2500.png", {"injection"}),
    _case("encoded command", "/api/ping?host=x%253bwhoami", {"injection"}),
    _case("double-encoded path", "/api/%2555nion%2520%2553elect", {"injection", "errors"}),
)
#: Methods nginx accepts (`_` and `-` in the token) that `[A-Z]*` missed.
ODD_METHODS = (
    _case("POST_ probe", "/wp-login.php", {"probe", "errors"}, method="POST_"),
    _case("GET-X injection", "/api/orders?id=1%20%55nion%20%53elect%201", {"injection"}, method="GET-X"),
    _case("GET_ blocked injection", "/api/orders?id=1%20UNION%20SELECT%201", {"injection", "errors"},
          method="GET_"),
)
#: Every path the proxy rate-limits as auth (`location /api/auth/`, `location /auth/`).
AUTH = (
    _case("login", "/api/auth/login", {"auth", "errors"}, method="POST"),
    _case("other api auth path", "/api/auth/token", {"auth", "errors"}, method="POST"),
    _case("auth location", "/auth/login", {"auth", "errors"}, method="POST"),
    _case("auth with an odd method", "/api/auth/login", {"auth", "errors"}, method="POST_"),
)
#: Reads flooding an auth path: the auth rate limit's 429s are counted (a read's 401 is not).
READ_FLOOD = tuple(_case(f"read flood {n}", "/auth/login", {"errors"}) for n in range(9))
#: Spoofed forwarding headers: the jail matches, the address is still the peer's (127.0.0.1).
SPOOF = tuple(f"{h}: {SPOOFED}" for h in ("X-Forwarded-For", "X-Real-IP", "Forwarded"))
SPOOFED_CASES = (
    _case("spoofed injection", "/api/orders?id=1%20%55nion%20%53elect%201", {"injection"}, headers=SPOOF),
    _case("spoofed probe", "/.env", {"probe", "errors"}, headers=SPOOF),
)
#: Normal traffic: nothing but a 404 (errors) may match.
BENIGN = (
    _case("home", "/", set()),
    _case("ping", "/api/ping", set()),
    _case("order query", "/api/ping?symbol=BTC-USD&side=buy&qty=0.5&type=limit", set()),
    _case("dates and sort", "/api/ping?from=2024-01-01T00:00:00Z&to=2024-02-01&sort=-created", set()),
    _case("search words", "/api/ping?q=union+station+select+menu&page=2", set()),
    _case("apostrophe", "/api/ping?name=O%27Brien&note=rock%27n%27roll", set()),
    _case("encoded redirect", "/api/ping?next=%2Fdashboard%2Forders%3Fpage%3D2", set()),
    _case("percent sign", "/api/ping?discount=100%25&q=50%25+off", set()),
    _case("semicolon parameters", "/api/ping?a=1;id=2;ls=3", set()),
    _case("missing order", "/api/orders/42", {"errors"}),
    _case("head", "/api/ping", set(), method="HEAD"),
    _case("login ok", "/api/ping", set(), method="POST"),
    _case("signed-out session read", "/api/auth/session", {"errors"}),
    _case("signed-out session head", "/auth/session", {"errors"}, method="HEAD"),
)
#: In this order: one client address, and the auth rate limit (burst 5) must hold for BENIGN's two
#: auth reads and AUTH's four refusals (401), then run out during READ_FLOOD.
CASES = (*BENIGN, *ENCODED_INJECTIONS, *ODD_METHODS, *AUTH, *READ_FLOOD, *SPOOFED_CASES)
#: Lines that once made the injection filter backtrack for minutes (fail2ban reads the log in one
#: thread: a pinned filter misses everything after). Near nginx's request-line limit (8k).
PATHOLOGICAL = (
    _case("comment starts", "/api/ping?x=union" + "/*/" * 2000, set()),
    _case("comments and spaces", "/api/ping?x=%27" + "/*a*/+" * 1000, set()),
    _case("double escapes", "/api/ping?x=union" + "%2525" * 1200, set()),
    _case("escaped comments", "/api/ping?x=union" + "/*%2520*/" * 600, set()),
)
#: Seconds each jail's fail2ban-regex may take over the pathological lines (it takes well under 2).
PATHOLOGICAL_SECONDS = 20


class _App(BaseHTTPRequestHandler):
    """Both colors' upstream, for any method: 401 under the auth paths, 200 on / and /api/ping."""

    def _answer(self) -> None:
        path = self.path.split("?")[0]
        auth = path.startswith(("/api/auth/", "/auth/"))
        code = 401 if auth else 200 if path in ("/", "/api/ping", "/api/orders", "/search", "/files") else 404
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # every method token nginx passes on
            return self._answer
        raise AttributeError(name)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return


@dataclass(frozen=True)
class Sent:
    case: Case
    status: int
    request_id: str
    line: dict[str, object]


@dataclass(frozen=True)
class Run:
    sent: dict[str, Sent]
    #: jail -> request_id -> the address its filter extracted
    matches: dict[str, dict[str, str]]

    def jails(self, name: str) -> frozenset[str]:
        rid = self.sent[name].request_id
        return frozenset(j for j in JAILS if rid in self.matches[j])

    def addresses(self, name: str) -> set[str]:
        rid = self.sent[name].request_id
        return {self.matches[j][rid] for j in JAILS if rid in self.matches[j]}


def _send(curl: str, port: int, case: Case) -> int:
    args = [curl, "-sk", "--path-as-is", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}",
            "-X", case.method]
    for header in case.headers:
        args += ["-H", header]
    if case.method == "HEAD":
        args = [a for a in args if a not in ("-X", "HEAD")] + ["-I"]
    result = subprocess.run([*args, f"https://127.0.0.1:{port}{case.target}"],
                            capture_output=True, text=True, timeout=30)
    return int(result.stdout.strip() or 0)


def _new_line(log: Path, seen: int) -> dict[str, object]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) > seen:
            assert len(lines) == seen + 1, lines[seen:]
            parsed: dict[str, object] = json.loads(lines[seen])
            return parsed
        time.sleep(0.05)
    raise AssertionError("nginx wrote no access-log line")


def _fail2ban_matches(regex: str, log: Path, filter_file: Path, timeout: float = 120) -> dict[str, str]:
    """request_id -> extracted address, for every line the filter matched (`-o msg`: the lines)."""
    try:
        result = subprocess.run([regex, "-o", "msg", str(log), str(filter_file)],
                                capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{filter_file.name}: fail2ban-regex still running after {timeout}s") from None
    assert result.returncode == 0, result.stdout + result.stderr
    rows = subprocess.run([regex, "-o", "ip", str(log), str(filter_file)],
                          capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    addresses = rows.stdout.split()
    assert len(lines) == len(addresses), (result.stdout, rows.stdout)
    return {str(line["request_id"]): address for line, address in zip(lines, addresses, strict=True)}


def run_cases(cases: tuple[Case, ...], timeout: float = 120) -> Run:
    curl = require_tool("curl")
    regex = require_tool("fail2ban-regex")
    root = Path(tempfile.mkdtemp(prefix="ids-evasion-"))
    root.chmod(0o755)  # nginx workers run as another user
    app = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    proxy = None
    try:
        proxy, https_port = _start_proxy(root, {}, app.server_address[1])
        log = root / "access.log"
        sent: dict[str, Sent] = {}
        for case in cases:
            seen = len(log.read_text().splitlines()) if log.exists() else 0
            status = _send(curl, https_port, case)
            line = _new_line(log, seen)
            sent[case.name] = Sent(case, status, str(line["request_id"]), line)
        paths = IdsPaths(run_dir=str(root / "ids"), access_log=str(log))
        files = bundle(prod_settings(), paths, public_listeners=(https_port,))
        matches: dict[str, dict[str, str]] = {}
        for jail in JAILS:
            filter_file = root / "ids" / "conf" / "filter.d" / f"paper-trading-{jail}.conf"
            filter_file.parent.mkdir(parents=True, exist_ok=True)
            filter_file.write_text(files[f"conf/filter.d/paper-trading-{jail}.conf"])
            matches[jail] = _fail2ban_matches(regex, log, filter_file, timeout)
        return Run(sent, matches)
    finally:
        if proxy is not None:
            stop_process(proxy, timeout=10)
        app.shutdown()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    yield run_cases(CASES)


@pytest.mark.parametrize("case", ENCODED_INJECTIONS, ids=lambda c: c.name)
def test_encoded_injection_reaches_the_app_and_is_counted(run: Run, case: Case) -> None:
    sent = run.sent[case.name]
    assert sent.line["blocked"] == "0", "the proxy's own patterns caught it: not an evasion case"
    assert run.jails(case.name) == case.jails, (sent.line, run.jails(case.name))
    assert run.addresses(case.name) == {"127.0.0.1"}


@pytest.mark.parametrize("case", ODD_METHODS, ids=lambda c: c.name)
def test_method_tokens_nginx_accepts_are_counted(run: Run, case: Case) -> None:
    sent = run.sent[case.name]
    assert sent.line["method"] == case.method, sent.line  # nginx accepted and logged the token
    assert run.jails(case.name) == case.jails, (sent.line, run.jails(case.name))


@pytest.mark.parametrize("case", AUTH, ids=lambda c: c.name)
def test_every_auth_location_counts(run: Run, case: Case) -> None:
    sent = run.sent[case.name]
    assert sent.status == 401, sent.line
    assert run.jails(case.name) == case.jails, (sent.line, run.jails(case.name))


def test_auth_rate_limit_counts_for_reads_too(run: Run) -> None:
    statuses = [run.sent[c.name].status for c in READ_FLOOD]
    assert 429 in statuses, statuses  # the proxy's auth burst ran out (GET 401s: BENIGN)
    for case in READ_FLOOD:
        sent = run.sent[case.name]
        expected = {"auth", "errors"} if sent.status == 429 else {"errors"}
        assert run.jails(case.name) == expected, (sent.line, run.jails(case.name))


@pytest.mark.parametrize("case", SPOOFED_CASES, ids=lambda c: c.name)
def test_spoofed_forwarding_headers_do_not_pick_the_address(run: Run, case: Case) -> None:
    sent = run.sent[case.name]
    assert sent.line["remote_addr"] == "127.0.0.1", sent.line
    assert run.jails(case.name) == case.jails, (sent.line, run.jails(case.name))
    assert run.addresses(case.name) == {"127.0.0.1"}
    assert all(SPOOFED not in found.values() for found in run.matches.values())


@pytest.mark.parametrize("case", BENIGN, ids=lambda c: c.name)
def test_normal_traffic_matches_no_detector(run: Run, case: Case) -> None:
    sent = run.sent[case.name]
    assert sent.status in (200, 401, 404), sent.line
    assert run.jails(case.name) == case.jails, (sent.line, run.jails(case.name))


def test_every_case_was_logged_once(run: Run) -> None:
    assert len({s.request_id for s in run.sent.values()}) == len(CASES)


def test_pathological_lines_do_not_pin_the_filters() -> None:
    pathological = run_cases(PATHOLOGICAL, timeout=PATHOLOGICAL_SECONDS)
    for case in PATHOLOGICAL:
        sent = pathological.sent[case.name]
        assert sent.status == 200 and len(str(sent.line["args"])) > 3000, sent.status
        assert pathological.jails(case.name) == case.jails
