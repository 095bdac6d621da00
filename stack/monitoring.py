"""The monitoring stack: Prometheus, Alertmanager, Grafana, logs (Loki + promtail or VictoriaLogs +
vlagent), exporters.

All config files come from `render.monitoring` builders and are uploaded
into anonymous volumes (read-only root filesystems); secrets are files in
`/run/secrets`, never envs. Nothing here reads `deployment.activeColor`: the live
color is measured by the blackbox exporter from the proxy's `X-Deployment-Color`,
so a flip never replaces a monitoring container. UIs are published only on
`monitoring.bindAddress` (127.0.0.1 by default). No Docker socket anywhere.
Alertmanager requires basic auth (password from pulumi-random, a secret file for Prometheus
and Grafana, only the bcrypt hash in Alertmanager's web config).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from contract import AUDIT_DIR, SECRETS_DIR
from render.monitoring import alertmanager, grafana, layout, rules, victorialogs
from render.monitoring.files import MonitoringFiles
from settings import Images, Limits, MonitoringConfig, Settings
from stack.common import NetworkNames, hardened_container_args, healthcheck, secret_file

NOBODY = "65534:65534"
GRAFANA_USER = "472:0"
LOKI_USER = "10001:10001"
# promtail reads Docker's json-file logs: files root:root 0640 in directories root:root 0710,
# so listing them needs uid 0 (a group-0 user can traverse but not list; measured, see
# docs/monitoring.md "Why the log collector runs as uid 0"). Every capability is still dropped.
ROOT_USER = "0:0"

#: Containers deployed without a healthcheck, and why. Docker runs a
#: healthcheck inside the container, and these upstream images are `FROM scratch`: no shell,
#: no wget/curl, nothing but the exporter. Prometheus scrapes each one (`up`), and
#: `TargetDown` (`up == 0` for 2m) fires when it stops answering.
NO_HEALTHCHECK: Final[Mapping[str, str]] = {
    "nginx-exporter": "nginx/nginx-prometheus-exporter is FROM scratch (no program to run a check); "
                      "watched by Prometheus job `nginx` (`up`, alert TargetDown)",
    "redis-exporter": "oliver006/redis_exporter (tags without -alpine) is FROM scratch (no program to "
                      "run a check); watched by Prometheus job `redis` (`up`, alert TargetDown)",
}


class _Password(Protocol):
    @property
    def result(self) -> pulumi.Output[str]: ...


class DatastoresLike(Protocol):
    """What monitoring needs from the `Datastores` component."""

    @property
    def postgres_password(self) -> _Password: ...

    @property
    def redis_password(self) -> _Password: ...

    database_name: str
    database_user: str


@dataclass(frozen=True)
class MonitoringProps:
    """What monitoring reads: its section, its images and limits, its rendered files."""

    name_prefix: str
    stack: str
    images: Images
    limits: Limits
    monitoring: MonitoringConfig
    files: MonitoringFiles

    @classmethod
    def of(cls, settings: Settings, stack: str) -> MonitoringProps:
        return cls(settings.name_prefix, stack, settings.images, settings.limits.monitoring,
                   settings.monitoring, MonitoringFiles.of(settings, stack))


@dataclass(frozen=True)
class MonitoringArgs:
    props: MonitoringProps
    networks: NetworkNames
    volume_names: Mapping[str, str]
    stack_labels: Mapping[str, str]
    datastores: DatastoresLike
    textfile_volume: str | None = None
    depends_on: Sequence[pulumi.Resource] = field(default_factory=list)


def _config_upload(path: str, content: str) -> docker.ContainerUploadArgs:
    return docker.ContainerUploadArgs(file=path, content=content, permissions="0644")


def _published(bind: str, internal: int, external: int) -> docker.ContainerPortArgs:
    return docker.ContainerPortArgs(internal=internal, external=external, ip=bind, protocol="tcp")


def _url(bind: str, port: int) -> str:
    host = "127.0.0.1" if bind == "0.0.0.0" else bind
    return f"http://{host}:{port}"


def _authenticated_check(
    port: int, path: str, user: str, password_file: str
) -> docker.ContainerHealthcheckArgs:
    """wget (busybox or GNU) with basic auth from the secret file: credentials in the URL, as both
    understand them (the password is alphanumeric, see RandomPassword(special=False))."""
    url = f'"http://{user}:$(cat {password_file})@127.0.0.1:{port}{path}"'
    return healthcheck(["CMD-SHELL", f"wget -q -O /dev/null {url}"])


def _http_check(port: int, path: str) -> docker.ContainerHealthcheckArgs:
    """busybox or GNU `wget` (prom/* images are busybox-based; Loki's distroless:debug has busybox)."""
    return healthcheck(["CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{port}{path}"])


def _collector_check(port: int) -> docker.ContainerHealthcheckArgs:
    """vlagent answers /health and can list Docker's json-file logs (a glob that lists nothing stays
    literal and `ls` fails): the check fails when the collector cannot read the containers' logs."""
    logs = f"{layout.DOCKER_CONTAINERS_DIR}/*/*-json.log"
    return healthcheck(["CMD-SHELL",
                        f"wget -q -O /dev/null http://127.0.0.1:{port}/health && ls {logs} >/dev/null"])


def _bash_http_check(port: int, path: str) -> docker.ContainerHealthcheckArgs:
    """A GET through bash's /dev/tcp, for an image with bash but no wget or curl (promtail's)."""
    request = f"GET {path} HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n"
    script = (f"exec 3<>/dev/tcp/127.0.0.1/{port} && printf '{request}' >&3 "
              "&& head -n 1 <&3 | grep -q '^HTTP/[0-9.]* 200 '")
    return healthcheck(["CMD", "bash", "-c", script])


class Monitoring(pulumi.ComponentResource):
    """Every monitoring container, its image, and the files it receives (`files`)."""

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("paper-trading:monitoring:Monitoring", name, None, opts)
        s = args.props
        mon = s.monitoring
        rendered = s.files
        self._args = args
        self._stack = s.stack
        self.images: dict[str, docker.RemoteImage] = {}
        self.containers: dict[str, docker.Container] = {}
        self.files: dict[str, dict[str, str]] = {}
        bind = mon.bind_address

        # --- Prometheus
        # Alertmanager's basic-auth password: Prometheus and Grafana read it
        # from a secret file, Alertmanager gets only its bcrypt hash; never a plain output.
        self.alertmanager_password: random.RandomPassword | None = None
        am_secret: list[docker.ContainerUploadArgs] = []
        if mon.alertmanager.enabled:
            self.alertmanager_password = random.RandomPassword(
                "alertmanager-password", length=32, special=False,
                opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["result", "bcryptHash"]))
            am_secret = [secret_file(layout.ALERTMANAGER_PASSWORD_FILE,
                                     self.alertmanager_password.result, owner="65534")]

        self.prometheus: docker.Container | None = None
        if mon.prometheus.enabled:
            self.prometheus = self._container(
                "prometheus", s.images.prometheus, s.limits, user=NOBODY,
                files={
                    layout.PROMETHEUS_CONFIG: rendered.prometheus,
                    layout.ALERT_RULES: rendered.alert_rules,
                    layout.RECORDING_RULES: rules.recording_rules(),
                },
                config_dir=layout.PROMETHEUS_DIR,
                secrets=am_secret or None,
                data=(args.volume_names["prometheus"], layout.PROMETHEUS_DATA),
                command=[
                    f"--config.file={layout.PROMETHEUS_CONFIG}",
                    f"--storage.tsdb.path={layout.PROMETHEUS_DATA}",
                    f"--storage.tsdb.retention.time={mon.prometheus.retention}",
                    f"--web.listen-address=:{layout.PROMETHEUS_PORT}",
                    f"--web.external-url={_url(bind, mon.prometheus.port)}/",
                ],
                ports=[_published(bind, layout.PROMETHEUS_PORT, mon.prometheus.port)],
                check=_http_check(layout.PROMETHEUS_PORT, "/-/ready"),
            )
        self.prometheus_url = _url(bind, mon.prometheus.port)

        # --- Alertmanager (its file is secret when a webhook URL is configured)
        self.alertmanager: docker.Container | None = None
        if self.alertmanager_password is not None:
            password = self.alertmanager_password
            am_shown = rendered.alertmanager
            if rendered.alertmanager_secret is None:
                am_upload = _config_upload(layout.ALERTMANAGER_CONFIG, am_shown)
            else:
                am_upload = docker.ContainerUploadArgs(
                    file=layout.ALERTMANAGER_CONFIG,
                    content=pulumi.Output.secret(rendered.alertmanager_secret.get_secret_value()),
                    permissions="0444")  # read by nobody (65534); see secret_file
            self.alertmanager = self._container(
                "alertmanager", s.images.alertmanager, s.limits, user=NOBODY,
                files={layout.ALERTMANAGER_CONFIG: am_shown}, uploads=[am_upload],
                config_dir=layout.ALERTMANAGER_DIR,
                secrets=[
                    secret_file(layout.ALERTMANAGER_WEB_CONFIG,
                                password.bcrypt_hash.apply(alertmanager.web_config), owner="65534"),
                    # For its own healthcheck, which must authenticate like everyone else.
                    *am_secret,
                ],
                data=(args.volume_names["alertmanager"], layout.ALERTMANAGER_DATA),
                command=[
                    f"--config.file={layout.ALERTMANAGER_CONFIG}",
                    f"--storage.path={layout.ALERTMANAGER_DATA}",
                    f"--web.listen-address=:{layout.ALERTMANAGER_PORT}",
                    f"--web.config.file={layout.ALERTMANAGER_WEB_CONFIG}",
                    f"--web.external-url={_url(bind, mon.alertmanager.port)}/",
                    "--cluster.listen-address=",
                ],
                ports=[_published(bind, layout.ALERTMANAGER_PORT, mon.alertmanager.port)],
                check=_authenticated_check(layout.ALERTMANAGER_PORT, "/-/ready", layout.ALERTMANAGER_USER,
                                           layout.ALERTMANAGER_PASSWORD_FILE),
            )
        self.alertmanager_url = _url(bind, mon.alertmanager.port)

        # --- Grafana (admin password from pulumi-random unless configured)
        self.grafana: docker.Container | None = None
        self.grafana_admin_password: random.RandomPassword | None = None
        admin: pulumi.Output[str] | None = None
        if mon.grafana.admin_password is not None:
            admin = pulumi.Output.secret(mon.grafana.admin_password.get_secret_value())
        if mon.grafana.enabled:
            if admin is None:
                self.grafana_admin_password = random.RandomPassword(
                    "grafana-admin-password", length=32, special=False,
                    opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["result"]))
                admin = self.grafana_admin_password.result
            grafana_files = {
                layout.GRAFANA_DATASOURCES: rendered.grafana_datasources,
                layout.GRAFANA_DASHBOARD_PROVIDERS: grafana.dashboard_providers(),
                **{f"{layout.GRAFANA_DASHBOARDS_DIR}/{name}": text
                   for name, text in rendered.grafana_dashboards.items()},
            }
            self.grafana = self._container(
                "grafana", s.images.grafana, s.limits, user=GRAFANA_USER,
                files=grafana_files, config_dir=layout.GRAFANA_DIR,
                data=(args.volume_names["grafana"], layout.GRAFANA_DATA),
                secrets=[
                    secret_file(layout.GRAFANA_ADMIN_PASSWORD_FILE, admin, owner="472"),
                    # The Alertmanager datasource's basic-auth password ($__file{} in datasources.yml).
                    *([secret_file(layout.ALERTMANAGER_PASSWORD_FILE, self.alertmanager_password.result,
                                   owner="472")] if self.alertmanager_password is not None else []),
                ],
                envs=[
                    f"GF_PATHS_PROVISIONING={layout.GRAFANA_PROVISIONING}",
                    f"GF_PATHS_DATA={layout.GRAFANA_DATA}",
                    "GF_SECURITY_ADMIN_USER=admin",
                    f"GF_SECURITY_ADMIN_PASSWORD__FILE={layout.GRAFANA_ADMIN_PASSWORD_FILE}",
                    "GF_SECURITY_DISABLE_GRAVATAR=true",
                    "GF_SECURITY_COOKIE_SAMESITE=strict",
                    "GF_USERS_ALLOW_SIGN_UP=false",
                    "GF_AUTH_ANONYMOUS_ENABLED=false",
                    "GF_ANALYTICS_REPORTING_ENABLED=false",
                    "GF_ANALYTICS_CHECK_FOR_UPDATES=false",
                    "GF_LOG_MODE=console",
                    *([f"GF_INSTALL_PLUGINS={','.join(rendered.grafana_plugins)}"]
                      if rendered.grafana_plugins else []),
                    f"GF_SERVER_ROOT_URL={_url(bind, mon.grafana.port)}/",
                ],
                ports=[_published(bind, layout.GRAFANA_PORT, mon.grafana.port)],
                check=_http_check(layout.GRAFANA_PORT, "/api/health"),
            )
        self.grafana_url: str | None = _url(bind, mon.grafana.port) if mon.grafana.enabled else None

        # --- Logs: Loki + promtail, or VictoriaLogs + vlagent (`monitoring.logs.backend`); the
        # collector reads json-file logs from the host and the audit trail, both read-only.
        self.loki: docker.Container | None = None
        self.victorialogs: docker.Container | None = None
        self.log_collector: docker.Container | None = None
        collector_volumes = [
            docker.ContainerVolumeArgs(host_path=layout.DOCKER_CONTAINERS_DIR,
                                       container_path=layout.DOCKER_CONTAINERS_DIR, read_only=True),
            # The operations audit trail (release/audit.py), read-only: shipped, never written.
            *([docker.ContainerVolumeArgs(volume_name=args.volume_names["audit"],
                                          container_path=AUDIT_DIR, read_only=True)]
              if "audit" in args.volume_names else []),
        ]
        if mon.logs.enabled and mon.logs.backend == "victorialogs":
            self.victorialogs = self._container(
                "victorialogs", s.images.victoria_logs, s.limits, user=NOBODY,
                data=(args.volume_names["logs"], layout.VICTORIALOGS_DATA),
                command=list(rendered.victorialogs_args),
                ports=[_published(bind, layout.VICTORIALOGS_PORT, mon.logs.port)],
                check=_http_check(layout.VICTORIALOGS_PORT, "/health"),
            )
            self.log_collector = self._container(
                "log-collector", s.images.vlagent, mon.exporter_limits, user=ROOT_USER,
                alias=layout.COLLECTOR_ALIASES["victorialogs"],
                extra_volumes=[docker.ContainerVolumeArgs(container_path=layout.VLAGENT_DATA),
                               *collector_volumes],
                command=victorialogs.collector_args(self._stack, audit="audit" in args.volume_names),
                check=_collector_check(layout.VLAGENT_PORT),
            )
        elif mon.logs.enabled:
            self.loki = self._container(
                "loki", s.images.loki, s.limits, user=LOKI_USER,
                files={layout.LOKI_CONFIG: rendered.loki}, config_dir=layout.LOKI_DIR,
                data=(args.volume_names["logs"], layout.LOKI_DATA),
                command=[f"-config.file={layout.LOKI_CONFIG}"],
                ports=[_published(bind, layout.LOKI_PORT, mon.logs.port)],
                check=_http_check(layout.LOKI_PORT, "/ready"),
            )
            self.log_collector = self._container(
                "log-collector", s.images.promtail, mon.exporter_limits, user=ROOT_USER,
                files={layout.PROMTAIL_CONFIG: rendered.promtail},
                config_dir=layout.PROMTAIL_DIR,
                extra_volumes=[
                    docker.ContainerVolumeArgs(container_path=layout.PROMTAIL_POSITIONS_DIR),
                    *collector_volumes,
                ],
                command=[f"-config.file={layout.PROMTAIL_CONFIG}"],
                # /ready: promtail tails at least one log file, so the check also fails when it
                # cannot read Docker's logs.
                check=_bash_http_check(layout.PROMTAIL_PORT, "/ready"),
            )

        # --- Exporters
        self.node_exporter = self._container(
            "node-exporter", s.images.node_exporter, mon.exporter_limits, user=NOBODY,
            extra_volumes=[
                docker.ContainerVolumeArgs(host_path="/proc", container_path="/host/proc", read_only=True),
                docker.ContainerVolumeArgs(host_path="/sys", container_path="/host/sys", read_only=True),
                *([docker.ContainerVolumeArgs(volume_name=args.textfile_volume,
                                              container_path=layout.TEXTFILE_DIR, read_only=True)]
                  if args.textfile_volume else []),
            ],
            command=[
                "--path.procfs=/host/proc", "--path.sysfs=/host/sys",
                *([f"--collector.textfile.directory={layout.TEXTFILE_DIR}"] if args.textfile_volume else []),
                f"--web.listen-address=:{layout.NODE_EXPORTER_PORT}",
            ],
            check=_http_check(layout.NODE_EXPORTER_PORT, "/"),
        )
        self.blackbox_exporter = self._container(
            "blackbox-exporter", mon.blackbox_image, mon.exporter_limits, user=NOBODY,
            files={layout.BLACKBOX_CONFIG: rendered.blackbox}, config_dir=layout.BLACKBOX_DIR,
            command=[f"--config.file={layout.BLACKBOX_CONFIG}",
                     f"--web.listen-address=:{layout.BLACKBOX_PORT}"],
            check=_http_check(layout.BLACKBOX_PORT, "/-/healthy"),
        )
        self.nginx_exporter = self._container(
            "nginx-exporter", s.images.nginx_exporter, mon.exporter_limits, user=NOBODY,
            command=[
                f"--nginx.scrape-uri=http://{layout.PROXY_STATUS_ADDRESS}{layout.PROXY_STUB_STATUS_PATH}",
                f"--web.listen-address=:{layout.NGINX_EXPORTER_PORT}",
            ],
        )
        ds = args.datastores
        self.postgres_exporter = self._container(
            "postgres-exporter", s.images.postgres_exporter, mon.exporter_limits, user=NOBODY, backend=True,
            secrets=[secret_file(layout.POSTGRES_PASSWORD_FILE, ds.postgres_password.result, owner="65534")],
            envs=[
                f"DATA_SOURCE_URI=postgres:5432/{ds.database_name}?sslmode=disable",
                f"DATA_SOURCE_USER={ds.database_user}",
                f"DATA_SOURCE_PASS_FILE={layout.POSTGRES_PASSWORD_FILE}",
            ],
            command=[f"--web.listen-address=:{layout.POSTGRES_EXPORTER_PORT}"],
            check=_http_check(layout.POSTGRES_EXPORTER_PORT, "/"),
        )
        redis_passwords = ds.redis_password.result.apply(
            lambda pw: json.dumps({"redis://redis:6379": pw}))
        self.redis_exporter = self._container(
            "redis-exporter", s.images.redis_exporter, mon.exporter_limits, user=NOBODY, backend=True,
            secrets=[secret_file(layout.REDIS_PASSWORD_FILE, redis_passwords, owner="65534")],
            command=[
                "--redis.addr=redis://redis:6379",
                f"--redis.password-file={layout.REDIS_PASSWORD_FILE}",
                f"--web.listen-address=:{layout.REDIS_EXPORTER_PORT}",
            ],
        )
        self.register_outputs({
            "prometheusUrl": self.prometheus_url,
            "grafanaUrl": self.grafana_url,
            "alertmanagerUrl": self.alertmanager_url,
        })

    # ------------------------------------------------------------------ helpers

    def _image(self, ref: str) -> docker.RemoteImage:
        if ref not in self.images:
            self.images[ref] = docker.RemoteImage(
                f"image-{ref.replace('/', '-').replace(':', '-').replace('@', '-')}",
                name=ref, keep_locally=True, opts=pulumi.ResourceOptions(parent=self))
        return self.images[ref]

    def _container(
        self,
        service: str,
        image: str,
        limits: Limits,
        *,
        user: str,
        files: dict[str, str] | None = None,
        uploads: list[docker.ContainerUploadArgs] | None = None,
        config_dir: str | None = None,
        data: tuple[str, str] | None = None,
        secrets: list[docker.ContainerUploadArgs] | None = None,
        extra_volumes: list[docker.ContainerVolumeArgs] | None = None,
        envs: list[str] | None = None,
        command: list[str] | None = None,
        ports: list[docker.ContainerPortArgs] | None = None,
        check: docker.ContainerHealthcheckArgs | None = None,
        backend: bool = False,
        alias: str | None = None,
    ) -> docker.Container:
        """One hardened container on its monitoring network(s) (and backend when it reads a datastore)."""
        if (check is None) != (service in NO_HEALTHCHECK):
            raise ValueError(f"{service}: a monitoring container has a healthcheck unless NO_HEALTHCHECK "
                             "names it with the reason (and then has none)")
        args = self._args
        prefix = args.props.name_prefix
        name = f"{prefix}-{service}"
        files = files or {}
        if files:
            self.files[name] = dict(files)
        all_uploads = list(uploads) if uploads is not None else [
            _config_upload(path, text) for path, text in files.items()]
        all_uploads += secrets or []
        volumes: list[docker.ContainerVolumeArgs] = []
        if config_dir:
            volumes.append(docker.ContainerVolumeArgs(container_path=config_dir))
        if secrets:
            volumes.append(docker.ContainerVolumeArgs(container_path=SECRETS_DIR))
        if data:
            volumes.append(docker.ContainerVolumeArgs(volume_name=data[0], container_path=data[1]))
        volumes += extra_volumes or []
        # The control plane on `monitoring` (nothing else joins it), what Prometheus scrapes on
        # `metrics`; Prometheus joins both (docs/monitoring.md, "Networks").
        aliases = [alias or layout.ALIASES[service]]
        networks: dict[str, list[str]] = {}
        if service in layout.CONTROL_PLANE:
            networks[args.networks.monitoring] = aliases
        if service in layout.SCRAPED:
            networks[args.networks.metrics] = aliases
        if not networks:
            raise ValueError(f"{service}: on no monitoring network (layout.CONTROL_PLANE / SCRAPED)")
        if backend:
            networks[args.networks.backend] = []
        image_resource = self._image(image)
        container = docker.Container(
            service,
            **hardened_container_args(
                image=image, name=name, service=service, stack_labels=args.stack_labels,
                networks=networks, limits=limits, user=user, envs=envs,
                tmpfs={"/tmp": "rw,noexec,nosuid,size=64m"}, volumes=volumes or None,
                uploads=all_uploads or None, ports=ports, command=command, healthcheck=check,
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[image_resource, *args.depends_on]),
        )
        self.containers[service] = container
        return container
