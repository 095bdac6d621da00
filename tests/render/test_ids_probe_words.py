"""Each probe path the `probe` jail names is matched on its own (real `fail2ban-regex`).

tests/render/test_ids_real.py bans a scanner for a burst of probe paths (any `maxretry` of them
suffice), so one alternative dropped from PROBE_PATH goes unnoticed there. Here one access-log
line per probe word (as the proxy writes it: status 404 on a public listener) goes through the
generated `probe` filter; every line must be matched, and ordinary paths, the preview listener
and non-404 answers must not be.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from render.ids import IdsPaths, bundle
from tests.support import require_tool
from tests.support.fidelity_nginx import prod_settings

PUBLIC = 443
PREVIEW = 8443
#: One path per alternative of PROBE_PATH (spelled out: a word dropped there must still be tested).
PROBE_PATHS = (
    "/wp-login.php", "/wp-content/x", "/wordpress/", "/xmlrpc", "/phpmyadmin/", "/pma/", "/myadmin/",
    "/cgi-bin/x", "/.git/config", "/.env", "/.aws/credentials", "/.ssh/id_rsa", "/.svn/entries",
    "/admin", "/administrator/", "/actuator/health", "/server-status", "/vendor/phpunit/x", "/boaform/x",
    "/hnap1", "/manager/html", "/solr/", "/jenkins/", "/owa/", "/autodiscover/x", "/console",
    "/debug", "/telescope/x", "/_ignition/x",
    "/index.php", "/x.php5", "/x.asp", "/x.aspx", "/x.jsp", "/x.cgi", "/x.pl", "/x.env", "/x.ini",
    "/x.bak", "/x.old", "/x.sql", "/x.swp", "/x.git", "/x.svn", "/x.htaccess", "/x.htpasswd",
    "/x.DS_Store", "/x.php/extra", "/WP-LOGIN.PHP",
)
ORDINARY = ("/health", "/api/v1/orders", "/static/app.js", "/x.phpx", "/docs/wp", "/orders/pl")


def _line(request_id: str, path: str, status: int = 404, listener: int = PUBLIC) -> str:
    return ('{"time":"2026-01-01T00:00:00+00:00",'
            f'"request_id":"{request_id}","remote_addr":"203.0.113.9","listener":"{listener}",'
            f'"host":"example.test","method":"GET","uri":{json.dumps(path)},"args":"",'
            f'"status":{status},"bytes":0,"blocked":"0"}}')


def _matched(tmp_path: Path, lines: list[str]) -> set[str]:
    regex = require_tool("fail2ban-regex")
    files = bundle(prod_settings(), IdsPaths(run_dir=str(tmp_path)), public_listeners=(PUBLIC,))
    filter_file = tmp_path / "paper-trading-probe.conf"
    filter_file.write_text(files["conf/filter.d/paper-trading-probe.conf"])
    log = tmp_path / "access.log"
    log.write_text("\n".join(lines) + "\n")
    done = subprocess.run([regex, "-o", "msg", str(log), str(filter_file)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return {str(json.loads(row)["request_id"]) for row in done.stdout.splitlines() if row.startswith("{")}


def test_every_probe_word_is_matched_and_nothing_else(tmp_path: Path) -> None:
    lines = [_line(f"{i:04x}", path) for i, path in enumerate(PROBE_PATHS)]
    lines += [_line(f"a{i:03x}", path) for i, path in enumerate(ORDINARY)]
    lines += [_line("b000", "/wp-login.php", listener=PREVIEW), _line("b001", "/wp-login.php", status=200),
              _line("b002", "/.env", status=403)]
    matched = _matched(tmp_path, lines)
    missed = [path for i, path in enumerate(PROBE_PATHS) if f"{i:04x}" not in matched]
    assert missed == []
    assert sorted(matched - {f"{i:04x}" for i in range(len(PROBE_PATHS))}) == []
