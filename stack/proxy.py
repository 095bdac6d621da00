"""The edge proxy: one hardened nginx container in front of both colors.

Its inputs never depend on `deployment.activeColor`: it ships a bootstrap routing
include that promotes nothing (`none` -> 503), and the routing resource writes the
real one and reloads nginx. So a color switch never replaces this container; only
a change to the proxy's own settings or image does (a short outage, see docs/proxy.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

import programs
from contract import ROLE_LABEL
from render.ids import ACCESS_LOG_DIR, ACCESS_LOG_FILE
from render.nginx import ROUTING_PATH, NginxListen, NginxPaths, render_nginx_conf, render_routing
from render.nginx.conf import CONF_DIR, CONF_PATH, STATUS_ALIAS
from render.nginx.routing import ROUTING_DIR
from settings import IdsConfig, ProxyConfig, ServerConfig, Settings
from stack.carrier import carry
from stack.common import (
    NetworkNames,
    config_file,
    hardened_container_args,
    healthcheck,
    http_probe,
    scratch_volume,
)
from stack.volumes import runtime_volume_name

PROXY_ROLE = "proxy"
#: The role of the proxy's never-started file carrier (stack/carrier.py).
CARRIER_ROLE = "carrier"
PROXY_ALIAS = "proxy"
#: nginx's uid/gid in the official image; listens only on unprivileged ports.
PROXY_USER = "101:101"
LISTEN = NginxListen()
#: The access log also goes to a file on the `proxy-logs` volume, the IDS's feed.
PATHS = NginxPaths(access_log_file=ACCESS_LOG_FILE)
#: nginx with the access-log file's rotation beside it (`proxy_command`); its `$0` is the name.
LOG_ROTATION = programs.text("proxy/nginx-rotating-log.sh")
LOG_ROTATION_NAME = "nginx-rotating-log"
#: The proxy opens a new connection to the app per request (its upstream is resolved per request,
#: so no keepalive pool), and each one closed leaves a TIME_WAIT for 60 s on the proxy's side.
#: Linux's default ephemeral range (32768-60999) then runs out at about 470 new requests a second
#: sustained for a minute: nginx answers 502 (connect: cannot assign requested address), seen in
#: bench/cutover.py's third run. Reusing TIME_WAIT ports for new outgoing connections (safe with
#: TCP timestamps, Linux's default) and a wider range remove that ceiling; both are per network
#: namespace, so they touch this container only.
PROXY_SYSCTLS = {"net.ipv4.tcp_tw_reuse": "1", "net.ipv4.ip_local_port_range": "16384 65000"}


@dataclass(frozen=True)
class ProxyProps:
    """What the proxy reads: its section, the server's (host, TLS), whether the IDS reads its
    access log, its image, and its rendered files (nginx.conf from render/nginx)."""

    name_prefix: str
    image: str
    proxy: ProxyConfig
    server: ServerConfig
    ids: IdsConfig
    files: Mapping[str, str]

    @classmethod
    def of(cls, settings: Settings) -> ProxyProps:
        return cls(settings.name_prefix, settings.images.nginx, settings.proxy, settings.server,
                   settings.security.ids, proxy_files(settings))


@dataclass(frozen=True)
class ProxyArgs:
    props: ProxyProps
    networks: NetworkNames
    stack_labels: Mapping[str, str]
    depends_on: Sequence[pulumi.Resource] = ()


def proxy_paths(settings: Settings) -> NginxPaths:
    """The access-log file exists only where the IDS reads it."""
    return PATHS if settings.security.ids.enabled else NginxPaths()


#: nginx in the foreground, its error log on stderr (the container's log).
NGINX_FOREGROUND = ("nginx", "-e", "stderr", "-c", CONF_PATH, "-g", "daemon off;")


def proxy_command(props: ProxyProps) -> list[str]:
    """nginx in the foreground; with the IDS on, also the access-log file's bounded rotation.

    With the IDS on, programs/proxy/nginx-rotating-log.sh (by `sh -c`): every 30 s a loop
    beside nginx moves the file to `access.log.1` once it is larger than
    `security.ids.accessLogMaxMb` and tells nginx to reopen its logs (`-s reopen`, same uid):
    at most two files on the size-limited tmpfs volume, so the log never fills it (a full log
    would blind the IDS). fail2ban follows the rename. Its arguments: the file, the limit in
    bytes, nginx's configuration.
    """
    if not props.ids.enabled:
        return list(NGINX_FOREGROUND)
    limit = props.ids.access_log_max_mb * 1024 * 1024
    return ["sh", "-c", LOG_ROTATION, LOG_ROTATION_NAME, ACCESS_LOG_FILE, str(limit), CONF_PATH]


def proxy_volumes(props: ProxyProps, conf: docker.ContainerVolumeArgs) -> list[docker.ContainerVolumeArgs]:
    """`conf`: the carrier's volume, read-only at CONF_DIR; the routing markers: a volume of the
    proxy's own (writable by root only, removed with the container: a new proxy promotes nothing)."""
    volumes = [conf, scratch_volume(ROUTING_DIR)]
    if props.ids.enabled:
        volumes.append(docker.ContainerVolumeArgs(
            volume_name=runtime_volume_name(props.name_prefix, "proxy-logs"),
            container_path=ACCESS_LOG_DIR,
        ))
    return volumes


def proxy_files(settings: Settings, listen: NginxListen = LISTEN) -> dict[str, str]:
    """In-container path -> content of every file the proxy reads (from its carrier's volume here)."""
    return {
        CONF_PATH: render_nginx_conf(settings, proxy_paths(settings), listen),
        # Bootstrap copy: nothing promoted, so nothing unvalidated is ever live.
        ROUTING_PATH: render_routing(None, None),
    }


def proxy_ports(props: ProxyProps) -> list[docker.ContainerPortArgs]:
    """Published ports, each with an explicit host address; preview only on loopback."""
    proxy = props.proxy
    ports = [docker.ContainerPortArgs(
        internal=LISTEN.http, external=proxy.http_port, ip=proxy.public_address, protocol="tcp",
    )]
    if props.server.ssl.enabled:
        ports.append(docker.ContainerPortArgs(
            internal=LISTEN.https, external=proxy.https_port, ip=proxy.public_address, protocol="tcp",
        ))
    ports.append(docker.ContainerPortArgs(
        internal=LISTEN.preview, external=proxy.preview_port, ip="127.0.0.1", protocol="tcp",
    ))
    return ports


def proxy_mounts(props: ProxyProps) -> list[docker.ContainerMountArgs]:
    """The TLS pair, read-only from the host (the key must be readable by uid 101)."""
    mounts: list[docker.ContainerMountArgs] = []
    ssl = props.server.ssl
    if ssl.enabled:
        for source, target in ((ssl.cert_path, PATHS.tls_cert), (ssl.key_path, PATHS.tls_key)):
            mounts.append(
                docker.ContainerMountArgs(type="bind", source=source, target=target, read_only=True)
            )
    return mounts


def proxy_ulimits(props: ProxyProps) -> dict[str, int]:
    """The container's ulimits (soft = hard): open files as the nginx.conf promises, processes."""
    return {"nofile": props.proxy.open_files_limit, "nproc": props.proxy.max_processes}


def public_url(props: ProxyProps) -> str:
    if props.server.ssl.enabled:
        return f"https://{props.server.host}:{props.proxy.https_port}"
    return f"http://{props.server.host}:{props.proxy.http_port}"


def preview_url(props: ProxyProps) -> str:
    scheme = "https" if props.server.ssl.enabled else "http"
    return f"{scheme}://127.0.0.1:{props.proxy.preview_port}"


class Proxy(pulumi.ComponentResource):
    """nginx: TLS, security headers, rate limits and the blue/green switch point."""

    def __init__(self, name: str, args: ProxyArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("paper-trading:proxy:Proxy", name, None, opts)
        s = args.props
        self.container_name = f"{s.name_prefix}-proxy"
        self.files = dict(s.files)
        self.public_url = public_url(s)
        self.preview_url = preview_url(s)
        self.image = docker.RemoteImage(
            "image", name=s.image, keep_locally=True, opts=pulumi.ResourceOptions(parent=self),
        )
        health = f"http://127.0.0.1:{LISTEN.status}/nginx-health"
        # The generated files arrive through a never-started carrier (stack/carrier.py):
        # the proxy mounts them read-only and runs with a read-only root.
        carried = carry(
            "proxy", consumer=self.container_name, directory=CONF_DIR,
            files=[(config_file(path, content), content) for path, content in self.files.items()],
            container_args=dict(
                image=s.image, service=f"{PROXY_ROLE}-files", stack_labels=args.stack_labels,
                networks={args.networks.frontend: []}, limits=s.proxy.limits, user=PROXY_USER,
                healthcheck=healthcheck(http_probe(health), start_period="10s"),
                extra_labels={ROLE_LABEL: CARRIER_ROLE},
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.image, *args.depends_on]),
        )
        self.carrier = carried.carrier
        self.files_volume = carried.volume
        self.container = docker.Container(
            "proxy",
            **hardened_container_args(
                image=s.image, name=self.container_name, service=PROXY_ROLE,
                stack_labels=args.stack_labels,
                # `proxy` on frontend and metrics (the blackbox exporter probes the live listener);
                # the status listener binds only to STATUS_ALIAS, an alias that exists on the
                # metrics network alone, so the apps on the frontend cannot reach it.
                networks={
                    args.networks.frontend: [PROXY_ALIAS],
                    args.networks.metrics: [PROXY_ALIAS, STATUS_ALIAS],
                },
                limits=s.proxy.limits, user=PROXY_USER,
                tmpfs={
                    "/tmp": "rw,noexec,nosuid,size=16m",
                    # Docker makes a tmpfs root-owned whatever the image says: hand it to nginx's user.
                    PATHS.temp_dir: "rw,noexec,nosuid,size=64m,uid={},gid={}".format(*PROXY_USER.split(":")),
                    "/var/run": "rw,noexec,nosuid,size=1m",
                },
                volumes=proxy_volumes(s, carried.mount),
                mounts=proxy_mounts(s) or None,
                ports=proxy_ports(s),
                command=proxy_command(s),
                healthcheck=healthcheck(http_probe(health), start_period="10s"),
                wait=True,
                extra_labels={ROLE_LABEL: PROXY_ROLE},
                # nofile is nginx's worker_rlimit_nofile (one setting); nproc bounds uid 101's processes.
                ulimits=proxy_ulimits(s),
            ),
            sysctls=PROXY_SYSCTLS,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.image, carried.carrier, *args.depends_on],
                # Fixed name and host ports: the old container must go first.
                delete_before_replace=True,
            ),
        )
        self.register_outputs({"publicUrl": self.public_url, "previewUrl": self.preview_url})
