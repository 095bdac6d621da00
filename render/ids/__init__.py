"""fail2ban's configuration for the IDS, generated from `security.ids` (docs/security.md).

Everything fail2ban needs is generated here and handed to the container as one bundle
(`bundle()`: relative path -> text): `fail2ban.conf`, `jail.conf` (one jail per detector),
`filter.d/paper-trading-<jail>.conf`, `action.d/paper-trading-decision.conf`, the allow-list,
`paths.json` and the two helper programs from programs/ids/ (`decide.py`: writes/removes one
decision file; `supervise.py`: runs fail2ban-server, serves its metrics, sweeps expired
decisions). The IDS container writes the bundle to a tmpfs and runs `supervise.py`; tests run
the same bundle on the host with `IdsPaths` pointing at a temp dir.

The filters read the proxy's JSON access-log file (render/nginx/conf.py, format `ids`:
`audit` plus the raw query `args` after `uri`). The fields before `uri` are written by nginx
itself (time, request id, client address = the TCP peer, listener, host, method), and nginx
escapes `"` in every value (`escape=json`), so a crafted path, query, user agent or forwarding
header cannot forge the client address a filter extracts.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

import programs
from settings import IdsJail, Settings

#: The detectors, in jail order; the jail name is the `<reason>` in a decision file and the
#: `jail` label of `paper_trading_ids_bans_total`.
JAILS: tuple[str, ...] = ("probe", "auth", "injection", "errors")
DECISIONS_DIR = "/var/lib/paper-trading/decisions"
ACCESS_LOG_DIR = "/var/log/paper-trading"
ACCESS_LOG_FILE = f"{ACCESS_LOG_DIR}/access.log"
RUN_DIR = "/run/paper-trading-ids"
#: The supervisor's metrics endpoint (`/metrics`), on the internal metrics network.
METRICS_PORT = 9191
METRICS_ALIAS = "ids"
#: How often the supervisor pings fail2ban and rewrites the metrics (seconds).
HEARTBEAT_SECONDS = 15
ACTION = "paper-trading-decision"


@dataclass(frozen=True)
class IdsPaths:
    """Where things are for the IDS (in the container by default; tests point them at a temp dir)."""

    run_dir: str = RUN_DIR
    access_log: str = ACCESS_LOG_FILE
    decisions_dir: str = DECISIONS_DIR
    metrics_listen: str = f"0.0.0.0:{METRICS_PORT}"
    python: str = "python3"
    fail2ban_server: str = "fail2ban-server"
    fail2ban_client: str = "fail2ban-client"
    heartbeat_seconds: float = HEARTBEAT_SECONDS

    @property
    def conf_dir(self) -> str:
        return f"{self.run_dir}/conf"


# ----------------------------------------------------------------------------- filters

_STR = r'(?:[^"\\]|\\.)*'  # a JSON string body as nginx escapes it


def _prefix(
    public_listeners: tuple[int, ...], method: str = _STR, uri: str = _STR, args: str = _STR
) -> str:
    """From the request id to the query: the part of an access-log line nginx alone writes.

    fail2ban cuts the matched `{"time":"...",` (the datepattern) out of the line first. Only the
    public listeners count: the preview listener (loopback) is where the gate's own checks
    deliberately send bad requests. Any method counts: nginx accepts `_` and `-` in one, and a
    filter that named only `[A-Z]` methods let `POST_` requests escape every jail.
    """
    listeners = "|".join(str(p) for p in public_listeners)
    return (
        r'^"request_id":"[0-9a-f]*","remote_addr":"<ADDR>","listener":"(?:' + listeners + r')",'
        r'"host":"' + _STR + r'","method":"' + method + r'","uri":"' + uri + r'",'
        r'"args":"' + args + r'",'
    )


#: Paths scanners probe for (case-insensitive): other stacks' admin pages, leaked files, CGI.
PROBE_PATH = (
    r"(?i:" + _STR + r"?"  # anything before, lazily
    r"(?:\.(?:php[0-9]?|aspx?|jsp|cgi|pl|env|ini|bak|old|sql|swp|git|svn|htaccess|htpasswd|ds_store)"
    r"(?:/|(?=\"))"
    r"|/(?:wp-|wordpress|xmlrpc|phpmyadmin|pma|myadmin|cgi-bin|\.git|\.env|\.aws|\.ssh|\.svn|"
    r"admin|administrator|actuator|server-status|vendor/phpunit|boaform|hnap1|manager/html|"
    r"solr|jenkins|owa|autodiscover|console|debug|telescope|_ignition)))" + _STR
)

# ----------------------------------------------------------------------------- injections
# The filters see the query raw (`$args`: percent-encoded as sent) and the path decoded once
# (`$uri`). So every character of an injection token is matched in each form it can take there:
# itself (either case), `%XX` (either hex case) or `%25...XX` (encoded again, any depth). fail2ban
# decodes nothing; this is what makes `%55nion %53elect` or `%2555nion` the same as `union`.

#: A percent sign, possibly itself percent-encoded (double encoding).
_PCT = r"%(?:25)*"


def _char(c: str) -> str:
    """One character of a token in any encoding (inside a case-insensitive group)."""
    if c == "\\":  # nginx's escape=json writes a backslash as two
        return r"(?:\\\\|" + _PCT + "5c)"
    codes = "|".join(sorted({f"{ord(c.lower()):02x}", f"{ord(c.upper()):02x}"}))  # `%55` is `U`
    return "(?:" + re.escape(c) + "|" + _PCT + f"(?:{codes}))"


def encoded(token: str) -> str:
    """`token` (ASCII, no `"`) in any percent-encoding; use inside `(?i:...)`."""
    return "".join(_char(c) for c in token)


def _any(*tokens: str) -> str:
    return "(?:" + "|".join(encoded(t) for t in tokens) + ")"


#: One byte that is not a letter or digit, raw or encoded (`+`, `%0b`, `%a0`, `(`, `%2528`...),
#: or a JSON escape nginx wrote (`\u000b`); `&` (the next parameter) and `"` (the field's end) are not.
_NONWORD = (
    r"(?:" + _PCT + r"(?:[01][0-9a-f]|2[0-9a-f]|3[a-f]|40|5[b-f]|60|7[b-f]|[89a-f][0-9a-f])"
    r"|\\(?:u00[0-9a-f]{2}|[^u])|[^a-z0-9%&\"\\])"
)
#: Inside a comment: a non-word unit that is not `*` or `/` (in any encoding), a letter or a digit.
_IN_COMMENT = (
    r"(?:" + r"%(?!(?:25)*2[af])" + _PCT[1:] + r"(?:[01][0-9a-f]|2[0-9a-e]|3[a-f]|40|5[b-f]|60|7[b-f]|"
    r"[89a-f][0-9a-f])|\\(?:u00[0-9a-f]{2}|[^u])|[^a-z0-9%&\"\\*/])"
)
#: An SQL comment holding a letter or digit (`/*x*/`, any encoding) and no other `*` or `/`;
#: `/**/` or `/*+*/` are plain non-word units. So a comment ends at its first `*/` and a span is
#: rarely both a comment and non-word units: a failed match stays cheap (an earlier comment unit
#: let `union/*/*/*...` backtrack for minutes, pinning fail2ban's one log reader).
_COMMENT = (
    encoded("/*") + _IN_COMMENT + r"{0,40}[a-z0-9](?:" + _IN_COMMENT + r"|[a-z0-9]){0,80}" + encoded("*/")
)
#: What may separate two SQL words: comments and non-word bytes, at least one (`union(select`).
_GAP = r"(?:" + _COMMENT + "|" + _NONWORD + r"){1,40}?"
#: The command names the proxy's command-injection pattern knows (BLOCKED_URI_PATTERNS).
_COMMANDS = ("cat", "ls", "id", "whoami", "uname", "wget", "curl", "bash", "sh", "nc", "rm", "python",
             "perl")
#: What ends a command word (as the proxy's pattern has it): a space, `;`, `)`, `|`, a backtick,
#: raw or encoded, or the end of the parameter or value; never `=` (`?a=1;id=2` is a parameter).
_CMD_END = (
    r"(?=[+;)|`&\"]|" + _PCT + r"(?:0[9a-d]|20|3b|29|7c|60)|\\u00[0-9a-f]{2})"
)
#: Injection tokens, in any encoding (case-insensitive), found in the raw query or the path.
INJECTION_TOKENS = "(?:" + "|".join([
    # SQL
    encoded("union") + _GAP + r"(?:" + _any("all", "distinct") + _GAP + r")?" + encoded("select"),
    encoded("information") + r"(?:" + encoded("_") + "|" + _GAP + ")" + encoded("schema"),
    _any("'") + _GAP.replace("{1,", "{0,") + _any("or", "and") + _GAP
    + r"(?:" + _any("'", "true", "false") + r"|[0-9]|" + _PCT + r"3[0-9])",
    _any("'") + _GAP.replace("{1,", "{0,") + r"(?:" + _any("--", "#", ";") + r")",
    _any("sleep", "benchmark") + _GAP.replace("{1,", "{0,") + _any("(") + _GAP.replace("{1,", "{0,")
    + r"(?:[0-9]|" + _PCT + r"3[0-9])",
    encoded("waitfor") + _GAP + encoded("delay"),
    # script
    encoded("<") + r"(?:" + encoded("/") + r")?" + _any("script", "iframe", "svg", "object", "embed"),
    encoded("javascript") + _GAP.replace("{1,", "{0,") + encoded(":"),
    # files and traversal
    encoded(".") + encoded(".") + r"(?:" + encoded("/") + "|" + _char("\\") + ")",
    encoded("/") + encoded("etc") + encoded("/") + _any("passwd", "shadow"),
    encoded("/") + encoded("proc") + encoded("/") + encoded("self"),
    _PCT + "00",
    # commands: `;`, `|`, `&&`, a backtick or `$(` then a known command, then a non-word byte or the end
    r"(?:" + _any(";", "|", "`", "$(", "&&") + r")" + _GAP.replace("{1,", "{0,") + _any(*_COMMANDS)
    + r"[0-9.]*" + _CMD_END,
]) + ")"
#: A logged path or query holding an injection token.
INJECTION_VALUE = r"(?i:" + _STR + r"?" + INJECTION_TOKENS + r")" + _STR


def auth_paths(settings: Settings) -> tuple[str, ...]:
    """Where nginx applies the auth rate limit (its `AUTH_LOCATIONS` prefixes), plus
    `validation.rateLimitPath` if it lies elsewhere: the auth jail's paths."""
    from render.nginx.conf import AUTH_LOCATIONS

    path = settings.validation.rate_limit_path
    inside = any(path.startswith(prefix) for prefix in AUTH_LOCATIONS)
    return AUTH_LOCATIONS if inside else (*AUTH_LOCATIONS, path)


def failregexes(jail: str, settings: Settings, public_listeners: tuple[int, ...]) -> list[str]:
    """fail2ban `failregex` lines of one jail (tag `<ADDR>`: an IP address, never a host name)."""
    if jail == "probe":
        return [_prefix(public_listeners, uri=PROBE_PATH) + r'"status":404,']
    if jail == "auth":
        # `$uri` is the normalised path nginx picked the location by: a prefix match is its match.
        prefixes = [re.escape(p) + ("" if p.endswith("/") else r"(?=\")") for p in auth_paths(settings)]
        uri = "(?:" + "|".join(prefixes) + ")" + _STR
        # A refused login or token call, whatever the method token, but not a read: a signed-out
        # page asking `GET /api/auth/session` is no attack. The auth rate limit (429) counts for
        # every method, reads included.
        unsafe = r'(?!(?:GET|HEAD|OPTIONS)")' + _STR
        return [
            _prefix(public_listeners, method=unsafe, uri=uri) + r'"status":(?:401|403),',
            _prefix(public_listeners, uri=uri) + r'"status":429,',
        ]
    if jail == "injection":
        return [
            _prefix(public_listeners) + r'"status":4[0-9][0-9],.*,"blocked":"1",',
            _prefix(public_listeners, uri=INJECTION_VALUE) + r'"status":[0-9]{3},',
            _prefix(public_listeners, args=INJECTION_VALUE) + r'"status":[0-9]{3},',
        ]
    if jail == "errors":
        return [_prefix(public_listeners) + r'"status":4[0-9][0-9],']
    raise ValueError(f"unknown jail {jail!r}")


def _conf_escape(value: str) -> str:
    """fail2ban's config parser interpolates `%(...)s`: a literal % is written %%."""
    return value.replace("%", "%%")


def filter_conf(jail: str, settings: Settings, public_listeners: tuple[int, ...]) -> str:
    lines = [
        f"# Generated by render/ids: jail {jail}.",
        "[Definition]",
        # The ISO 8601 time nginx writes first ($time_iso8601); fail2ban removes it from the line.
        'datepattern = ^\\{"time":"%%Y-%%m-%%dT%%H:%%M:%%S%%z",',
        "failregex = "
        + "\n            ".join(_conf_escape(r) for r in failregexes(jail, settings, public_listeners)),
        "ignoreregex =",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- jails, action

def jail_settings(settings: Settings) -> dict[str, IdsJail]:
    ids = settings.security.ids
    return {"probe": ids.probe, "auth": ids.auth, "injection": ids.injection, "errors": ids.errors}


def allow_list(settings: Settings) -> tuple[str, ...]:
    """Never banned: loopback plus `security.ids.allowList`."""
    return ("127.0.0.0/8", "::1/128", *settings.security.ids.allow_list)


def jail_conf(settings: Settings, paths: IdsPaths) -> str:
    ids = settings.security.ids
    lines = [
        "# Generated by render/ids from security.ids (docs/security.md).",
        "[DEFAULT]",
        f"ignoreip = {' '.join(allow_list(settings))}",
        "ignoreself = true",
        "usedns = no",
        # The log lives on a volume another container writes: poll it (rotation is followed).
        "backend = polling",
        f"logpath = {paths.access_log}",
        "logencoding = utf-8",
        f"bantime = {ids.ban_time_seconds}",
        "",
    ]
    for jail, cfg in jail_settings(settings).items():
        lines += [
            f"[{jail}]",
            f"enabled = {'true' if cfg.enabled else 'false'}",
            f"filter = paper-trading-{jail}",
            f"findtime = {cfg.find_time_seconds}",
            f"maxretry = {cfg.max_retry}",
            f"action = {ACTION}[jail={jail}]",
            "",
        ]
    return "\n".join(lines)


def fail2ban_conf(paths: IdsPaths) -> str:
    return "\n".join([
        "# Generated by render/ids: the server keeps nothing outside its tmpfs.",
        "[Definition]",
        "loglevel = INFO",
        "logtarget = STDERR",
        f"socket = {paths.run_dir}/fail2ban.sock",
        f"pidfile = {paths.run_dir}/fail2ban.pid",
        # Bans live in the decision files; the ban database is not kept across restarts.
        "dbfile = :memory:",
        "",
    ])


def action_conf(paths: IdsPaths) -> str:
    decide = f"{paths.python} {paths.run_dir}/decide.py"
    return "\n".join([
        "# Generated by render/ids: a ban is a decision file, nothing else (no firewall here).",
        "[Definition]",
        "actionstart =",
        "actionstop =",
        "actioncheck =",
        f"actionban = {decide} ban <ip> <bantime> <jail>",
        f"actionunban = {decide} unban <ip> <bantime> <jail>",
        "[Init]",
        "jail = default",
        "",
    ])


def _program(name: str) -> str:
    """One of the IDS's programs (programs/ids/), exactly as it is in the repository."""
    return programs.text(f"ids/{name}")


def bundle(
    settings: Settings, paths: IdsPaths = IdsPaths(), public_listeners: tuple[int, ...] = ()
) -> dict[str, str]:
    """Relative path (under `paths.run_dir`) -> content of every file the IDS runs with."""
    if not public_listeners:
        from render.nginx.conf import NginxListen

        listen = NginxListen()
        public_listeners = (listen.http, listen.https)
    files = {
        "conf/fail2ban.conf": fail2ban_conf(paths),
        "conf/jail.conf": jail_conf(settings, paths),
        f"conf/action.d/{ACTION}.conf": action_conf(paths),
        "allow-list": "\n".join(allow_list(settings)) + "\n",
        "paths.json": json.dumps({**asdict(paths), "conf_dir": paths.conf_dir, "jails": list(JAILS)},
                                 indent=2, sort_keys=True) + "\n",
        "decide.py": _program("decide.py"),
        "supervise.py": _program("supervise.py"),
    }
    for jail in JAILS:
        files[f"conf/filter.d/paper-trading-{jail}.conf"] = filter_conf(jail, settings, public_listeners)
    return files
