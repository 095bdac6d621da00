"""The proxy's `nginx.conf`, built from the settings in one place.

The file never says which color is live: that is the name of a marker file in the
routing directory, tested per request (`routing.py`), so a blue/green switch renames
one file, with no config change and no reload, and the proxy container's inputs stay
the same. Paths and listen ports are parameters (`NginxPaths`, `NginxListen`) only so tests can run this exact
config with the host's nginx on loopback; production uses the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from settings import COLORS, MAX_REPLICAS, Settings

from .routing import ROUTING_DIR, ROUTING_PATH, routing_directives

CONF_DIR = "/etc/paper-trading/nginx"
#: The proxy's DNS alias that exists only on the metrics network: the status listener binds
#: to the address Docker's DNS gives it (nginx resolves a `listen` host at load and reload).
STATUS_ALIAS = "proxy-status"
#: Relay paths on the status listener: Prometheus and the blackbox exporter reach each app
#: replica's metrics and readiness through the proxy, so they share no network with the apps.
SCRAPE_PREFIX = "/scrape"
CONF_PATH = f"{CONF_DIR}/nginx.conf"
ACME_ROOT = "/var/www/acme"

HSTS = "max-age=63072000; includeSubDomains"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"
TLS_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
])

# Obvious attack patterns in the raw request line (path and query, still
# percent-encoded, matched case-insensitively). Defence in depth only: the app
# must handle these itself. Kept specific so normal trading calls never match.
# No `\\`, `\n`, `\t` or `\r` inside: nginx's quoted strings would rewrite them.
_SP = r"(?:\s|\+|%20|%09|%0a|%0d)"
BLOCKED_URI_PATTERNS: tuple[str, ...] = (
    # SQL injection
    rf"union(?:{_SP}|/\*.*?\*/|%2f%2a.*?%2a%2f)+(?:all{_SP}+)?select",
    rf"(?:'|%27){_SP}*(?:or|and){_SP}+(?:'|%27|[0-9]|true|false)",
    rf"(?:'|%27){_SP}*(?:--|%2d%2d|#|%23|;|%3b)",
    rf"(?:;|%3b){_SP}*(?:drop|truncate|shutdown|insert|delete|update|alter)(?:{_SP}|$)",
    r"(?:sleep|benchmark|pg_sleep)(?:\(|%28)[0-9]",
    rf"waitfor{_SP}+delay",
    r"information_schema",
    # cross-site scripting
    r"(?:<|%3c)(?:/|%2f)?(?:script|iframe|svg|object|embed)",
    r"javascript(?::|%3a)",
    rf"on(?:error|load|mouseover|focus|click){_SP}*(?:=|%3d)",
    r"document\.cookie",
    # command injection
    rf"(?:;|%3b|\||%7c|&&|%26%26|`|%60|\$\(|%24%28){_SP}*"
    rf"(?:cat|ls|id|whoami|uname|wget|curl|bash|sh|nc|rm|python[0-9.]*|perl)(?:{_SP}|&|$|%3b|;|\)|%29|\||%7c|`|%60)",
    # path traversal and probes for local files
    r"(?:\.|%2e)(?:\.|%2e)(?:/|%2f|\x5c|%5c)",
    r"(?:/|%2f)etc(?:/|%2f)(?:passwd|shadow)",
    r"(?:/|%2f)proc(?:/|%2f)self",
    r"%00",
)


#: The prefix locations under the `auth` rate limit: the IDS's auth jail watches exactly these.
AUTH_LOCATIONS: tuple[str, str] = ("/api/auth/", "/auth/")
#: The access-log format of the IDS's file: `audit` plus the raw query (`$args`), which the
#: log store (stdout, format `audit`) never receives.
IDS_LOG_FORMAT = "ids"


@dataclass(frozen=True)
class NginxPaths:
    """Where things are inside the proxy container (tests point them at a temp dir)."""

    conf_dir: str = CONF_DIR
    #: The routing defaults (read-only, with nginx.conf).
    routing_include: str = ROUTING_PATH
    #: The marker files (`routing_dir`): writable by root only, never by nginx.
    markers_dir: str = ROUTING_DIR
    tls_cert: str = "/run/tls/fullchain.pem"
    tls_key: str = "/run/tls/privkey.pem"
    pid: str = "/tmp/nginx.pid"
    temp_dir: str = "/var/cache/nginx"
    mime_types: str = "/etc/nginx/mime.types"
    access_log: str = "/dev/stdout"
    #: A second copy of the access log in a file, for the IDS; None: none.
    access_log_file: str | None = None
    error_log: str = "stderr"
    acme_root: str = ACME_ROOT

    @property
    def conf(self) -> str:
        return f"{self.conf_dir}/nginx.conf"

    @property
    def routing_dir(self) -> str:
        """Where the routing switch renames its marker files (`nginx/routing.py`)."""
        return self.markers_dir


@dataclass(frozen=True)
class NginxListen:
    """Listen ports inside the container and where each color's app is found.

    `upstreams` overrides `app-<color>:<server.port>` (Docker DNS aliases) with
    `host:port` per color; only tests use it, to reach stand-ins on loopback.
    """

    address: str = ""
    http: int = 8080
    https: int = 8443
    preview: int = 9443
    status: int = 8081
    upstreams: tuple[tuple[str, str], ...] = ()
    #: Where the status listener binds besides 127.0.0.1 (the container healthcheck): the
    #: metrics-only alias. Ignored when `address` is set (tests bind everything there).
    status_host: str = STATUS_ALIAS
    #: How long nginx waits to connect to one app task before it tries the next. On Swarm a task
    #: on a node just lost stays in DNS until the managers mark the node down; every request sent
    #: to it waits this long first (stack/swarm/proxy.py sets 1 s: the nodes share a LAN).
    connect_timeout_s: int = 5

    def at(self, port: int) -> str:
        return f"{self.address}:{port}" if self.address else str(port)


def _q(value: str) -> str:
    """An nginx double-quoted string."""
    if '"' in value or "\\\\" in value:
        raise ValueError(f"cannot quote {value!r} for nginx")
    return f'"{value}"'


def _upstream_map(source: str, target: str, settings: Settings, listen: NginxListen) -> list[str]:
    overrides = dict(listen.upstreams)
    lines = [f"    map {source} {target} {{", '        default "";']
    for color in COLORS:
        address = overrides.get(color, f"app-{color}:{settings.server.port}")
        lines.append(f"        {color} {_q(address)};")
    lines.append("    }")
    return lines


PROXY_PASS = "proxy_pass http://$app_upstream;"


def _proxy_headers(websocket: bool = False) -> list[str]:
    """What the app receives about the request."""
    lines = [
        "proxy_http_version 1.1;",
        "proxy_set_header Host $host;",
        "proxy_set_header X-Real-IP $remote_addr;",
        # The proxy is the edge: never forward a client-supplied chain.
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Request-ID $request_id;",
        'proxy_set_header X-Preview-Color "";',
    ]
    if websocket:
        lines += [
            "proxy_set_header Upgrade $http_upgrade;",
            "proxy_set_header Connection $connection_upgrade;",
            "proxy_read_timeout 1h;",
            "proxy_send_timeout 1h;",
        ]
    else:
        lines.append('proxy_set_header Connection "";')
    return lines


def _locations(settings: Settings, public: bool) -> list[str]:
    api = settings.proxy.api_rate_limit
    auth = settings.proxy.auth_rate_limit
    api_limit = f"limit_req zone=api burst={api.burst} nodelay;"
    auth_limit = f"limit_req zone=auth burst={auth.burst} nodelay;"
    blocks: list[tuple[str, list[str]]] = [
        ("location /", []),
        ("location /api/", [api_limit]),
        (f"location {AUTH_LOCATIONS[0]}", [api_limit, auth_limit]),
        (f"location {AUTH_LOCATIONS[1]}", [auth_limit]),
    ]
    # Server-level proxy_set_header lines apply to every location that sets none;
    # /ws sets its own, so it repeats them all (nginx does not merge them).
    lines = [f"        {line}" for line in _proxy_headers()]
    for head, extra in blocks:
        lines.append(f"        {head} {{ {' '.join([*extra, PROXY_PASS])} }}")
    lines.append("        location /ws {")
    lines += [f"            {line}" for line in [api_limit, *_proxy_headers(websocket=True), PROXY_PASS]]
    lines.append("        }")
    if public:
        # The app's metrics are for Prometheus on the monitoring network, not the internet.
        lines.append(f"        location = {settings.app.health.metrics} {{ return 404; }}")
    return lines


def _security_headers(tls: bool) -> list[str]:
    lines = [f"add_header Strict-Transport-Security {_q(HSTS)} always;"] if tls else []
    return lines + [
        'add_header X-Content-Type-Options "nosniff" always;',
        'add_header X-Frame-Options "DENY" always;',
        'add_header Referrer-Policy "no-referrer" always;',
        f"add_header Content-Security-Policy {_q(CSP)} always;",
        f"add_header Permissions-Policy {_q(PERMISSIONS_POLICY)} always;",
        'add_header Cross-Origin-Opener-Policy "same-origin" always;',
    ]


def _app_server(settings: Settings, listen_on: str, tls: bool, preview: bool, paths: NginxPaths) -> list[str]:
    color = "$preview_color" if preview else "$live_color"
    upstream = "$preview_upstream" if preview else "$live_upstream"
    role = "preview" if preview else "live"
    body = [
        f"listen {listen_on}{' ssl' if tls else ''} default_server;",
        "server_name _;",
        # First: everything below reads the color these lines set for the request.
        *routing_directives(role, paths.routing_dir),
        *_security_headers(tls),
        f"add_header X-Deployment-Color {color} always;",
        "add_header X-Upstream-Color $upstream_http_x_deployment_color always;",
        f"set $app_upstream {upstream};",
        'if ($blocked_request) { return 400 "request blocked\\n"; }',
    ]
    if preview:
        body.append(
            'if ($preview_color = invalid) { return 400 "X-Preview-Color must be blue or green\\n"; }'
        )
        if settings.swarm is not None:
            # Swarm publishes on every address of an edge node: only the deployer may see the candidate.
            body += [f"allow {source};" for source in settings.swarm.preview_from] + ["deny all;"]
    body.append(f'if ({color} = none) {{ return 503 "no color promoted yet ({role})\\n"; }}')
    lines = [f"    # {role} traffic", "    server {"]
    lines += [f"        {line}" for line in body]
    lines += _locations(settings, public=not preview)
    lines.append("    }")
    return lines


def _redirect_server(settings: Settings, listen: NginxListen, paths: NginxPaths) -> list[str]:
    port = settings.proxy.https_port
    target = f"https://{settings.server.host}{'' if port == 443 else f':{port}'}"
    return [
        "    # plain HTTP: only ACME challenges, everything else moves to HTTPS",
        "    server {",
        f"        listen {listen.at(listen.http)} default_server;",
        "        server_name _;",
        *[f"        {line}" for line in _security_headers(tls=False)],
        # The static handler answers 404 for a missing token: no try_files (a stat per request).
        "        location /.well-known/acme-challenge/ {",
        f"            root {paths.acme_root};",
        "        }",
        f"        location / {{ return 301 {target}$request_uri; }}",
        "    }",
    ]


def scrape_path(replica: str, what: str) -> str:
    """The relay path for one replica: `what` is `metrics` or `ready`."""
    if what not in ("metrics", "ready"):
        raise ValueError(f"no scrape relay for {what!r}")
    return f"{SCRAPE_PREFIX}/{replica}/{what}"


def _scrape_relays(settings: Settings) -> list[str]:
    """GET-only relays to this stack's app replicas, one per path: never an open proxy.

    The pattern admits exactly `<prefix>-app-<color>-<n>` for every replica count the config
    allows (`MAX_REPLICAS`), so scaling a color changes nothing here: the proxy is not
    replaced (live traffic) when the live color scales out.
    """
    health = settings.app.health
    numbers = "|".join(str(n) for n in range(1, MAX_REPLICAS + 1))
    # name_prefix is `[a-z][a-z0-9-]*` (config): nothing in it is special to the regex.
    replica = f"{settings.name_prefix}-app-(?:{'|'.join(COLORS)})-(?:{numbers})"
    # A variable makes nginx resolve the replica per request (Docker DNS, frontend network),
    # so a replaced replica is found and a missing one is a 502, not a failed reload.
    # The whole upstream URI is in the variable: nginx requests exactly that path (no part of
    # the client's URI is passed on), and nothing follows the host in `proxy_pass` itself.
    lines = []
    for what, path in (("metrics", health.metrics), ("ready", health.ready)):
        pattern = _q(f"^{SCRAPE_PREFIX}/(?<scrape_replica>{replica})/{what}$")
        target = _q(f"$scrape_replica:{settings.server.port}{path}")
        lines.append(
            f"        location ~ {pattern} {{ limit_except GET {{ deny all; }} "
            f"set $scrape_target {target}; proxy_pass http://$scrape_target; }}"
        )
    return lines


def _status_server(settings: Settings, listen: NginxListen) -> list[str]:
    if listen.address:
        listens = [f"listen {listen.at(listen.status)};"]
    else:
        # Not on every address: the apps share the frontend network with the proxy.
        # (On Swarm, where the alias would name every proxy task, `status_host` is loopback: once.)
        listens = list(dict.fromkeys([f"listen {listen.status_host}:{listen.status};",
                                      f"listen 127.0.0.1:{listen.status};"]))
    return [
        "    # status: container health, stub_status for the exporter and the scrape relay for",
        "    # Prometheus; bound to the metrics network's alias and loopback only, never published",
        "    server {",
        *[f"        {line}" for line in listens],
        "        server_name _;",
        "        access_log off;",
        '        location = /nginx-health { default_type text/plain; return 200 "ok\\n"; }',
        # Defence in depth (gixy status_page_exposed): only loopback (healthcheck) and the private
        # ranges Docker assigns container networks from; the listener's binding is the real fence.
        "        location = /stub_status { stub_status; allow 127.0.0.0/8; allow 10.0.0.0/8; "
        "allow 172.16.0.0/12; allow 192.168.0.0/16; deny all; }",
        *_scrape_relays(settings),
        "        location / { return 404; }",
        "    }",
    ]


def _log_format() -> list[str]:
    fields = [
        ('"time":"', "$time_iso8601", '"'),
        ('"request_id":"', "$request_id", '"'),
        ('"remote_addr":"', "$remote_addr", '"'),
        ('"listener":"', "$server_port", '"'),
        ('"host":"', "$host", '"'),
        ('"method":"', "$request_method", '"'),
        ('"uri":"', "$uri", '"'),
        ('"status":', "$status", ""),
        ('"bytes":', "$body_bytes_sent", ""),
        ('"request_time":', "$request_time", ""),
        ('"upstream_addr":"', "$upstream_addr", '"'),
        ('"upstream_status":"', "$upstream_status", '"'),
        # The color the client was told (what add_header set); empty on the redirect.
        ('"color":"', "$sent_http_x_deployment_color", '"'),
        # 1 when the raw request line matched BLOCKED_URI_PATTERNS (the IDS's injection jail;
        # only the IDS's file also carries the query itself, see below).
        ('"blocked":"', "$blocked_request", '"'),
        ('"user_agent":"', "$http_user_agent", '"'),
    ]
    # The IDS's copy: the raw query right after the path (its filters read it, decoding nothing:
    # render/ids matches percent-encoded forms). Not in the log store's copy.
    ids = [*fields[:7], ('"args":"', "$args", '"'), *fields[7:]]
    return [
        f"    log_format {name} escape=json '{{{','.join(f'{a}{b}{c}' for a, b, c in parts)}}}';"
        for name, parts in (("audit", fields), (IDS_LOG_FORMAT, ids))
    ]


def render_nginx_conf(
    settings: Settings, paths: NginxPaths = NginxPaths(), listen: NginxListen = NginxListen()
) -> str:
    """The whole `nginx.conf` for `settings`; independent of the active color."""
    tls = settings.server.ssl.enabled
    proxy = settings.proxy
    workers = proxy.worker_processes
    temp = paths.temp_dir
    api_rate = proxy.api_rate_limit.rate_per_second
    auth_rate = proxy.auth_rate_limit.rate_per_second
    lines = [
        "# Generated by render/nginx/conf.py. The live color is a routing marker's name (app servers).",
        f"worker_processes {workers};",
        # The same value is the container's nofile ulimit (stack/proxy.py): one setting.
        f"worker_rlimit_nofile {proxy.open_files_limit};",
        f"pid {paths.pid};",
        f"error_log {paths.error_log} warn;",
        # On a reload old workers finish in-flight requests for at most this long;
        # open websockets are closed when it expires.
        f"worker_shutdown_timeout {proxy.worker_shutdown_timeout};",
        "",
        "events {",
        f"    worker_connections {proxy.worker_connections};",
        "}",
        "",
        "http {",
        f"    include {paths.mime_types};",
        "    default_type text/plain;",
        "    server_tokens off;",
        "    sendfile on;",
        "    tcp_nopush on;",
        "    keepalive_timeout 65s;",
        "    client_max_body_size 1m;",
        "    client_header_timeout 10s;",
        "    client_body_timeout 10s;",
        "    send_timeout 30s;",
        "    reset_timedout_connection on;",
        f"    client_body_temp_path {temp}/client_temp;",
        f"    proxy_temp_path {temp}/proxy_temp;",
        f"    fastcgi_temp_path {temp}/fastcgi_temp;",
        f"    uwsgi_temp_path {temp}/uwsgi_temp;",
        f"    scgi_temp_path {temp}/scgi_temp;",
        "",
        "    # Docker's embedded DNS: app-<color> aliases are looked up per request,",
        "    # so a replaced app container is found without a reload.",
        "    resolver 127.0.0.11 valid=5s ipv6=off;",
        "    resolver_timeout 3s;",
        f"    proxy_connect_timeout {listen.connect_timeout_s}s;",
        "    proxy_send_timeout 60s;",
        "    proxy_read_timeout 60s;",
        "    proxy_hide_header X-Powered-By;",
        "    proxy_hide_header X-Deployment-Color;",
        "",
        *_log_format(),
        f"    access_log {paths.access_log} audit;",
        *([f"    access_log {paths.access_log_file} {IDS_LOG_FORMAT};"] if paths.access_log_file else []),
        "",
        f"    limit_req_zone $binary_remote_addr zone=api:10m rate={api_rate}r/s;",
        f"    limit_req_zone $binary_remote_addr zone=auth:10m rate={auth_rate}r/s;",
        "    limit_req_status 429;",
        "    limit_req_log_level warn;",
        "",
        "    # $routing_live_default and $routing_preview_default: the colors while no routing marker",
        "    # exists (bootstrap: none); each app server sets $live_color / $preview_default_color",
        "    # per request from its marker files.",
        f"    include {paths.routing_include};",
        "",
        "    # X-Preview-Color picks the preview color (the gate validates a candidate",
        "    # with it); absent -> the routing default; anything else -> 400.",
        "    map $http_x_preview_color $preview_color {",
        '        "" $preview_default_color;',
        "        blue blue;",
        "        green green;",
        "        default invalid;",
        "    }",
        *_upstream_map("$live_color", "$live_upstream", settings, listen),
        *_upstream_map("$preview_color", "$preview_upstream", settings, listen),
        "    map $http_upgrade $connection_upgrade {",
        "        default upgrade;",
        '        "" close;',
        "    }",
        "    map $request_uri $blocked_request {",
        "        default 0;",
        *[f"        {_q('~*' + pattern)} 1;" for pattern in BLOCKED_URI_PATTERNS],
        "    }",
        "",
    ]
    if tls:
        lines += [
            f"    ssl_certificate {paths.tls_cert};",
            f"    ssl_certificate_key {paths.tls_key};",
            "    ssl_protocols TLSv1.2 TLSv1.3;",
            f"    ssl_ciphers {TLS_CIPHERS};",
            "    ssl_prefer_server_ciphers off;",
            "    ssl_ecdh_curve X25519:prime256v1:secp384r1;",
            "    ssl_session_cache shared:TLS:10m;",
            "    ssl_session_timeout 1d;",
            "    ssl_session_tickets off;",
            "",
            *_redirect_server(settings, listen, paths),
            "",
            *_app_server(settings, listen.at(listen.https), tls=True, preview=False, paths=paths),
        ]
    else:
        lines += _app_server(settings, listen.at(listen.http), tls=False, preview=False, paths=paths)
    lines += [
        "",
        *_app_server(settings, listen.at(listen.preview), tls=tls, preview=True, paths=paths),
        "",
        *_status_server(settings, listen),
        "}",
    ]
    return "\n".join(lines) + "\n"
