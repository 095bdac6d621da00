"""Scheduled logical backups of the datastores, and the restore command.

The service runs the shell scripts in `programs/backup/` inside the same Postgres
image as the datastore, so `pg_dump`/`pg_restore` always match the server
version. The scripts are uploaded as they are in the repository; the tests run
the very same files with the same environment against a real Postgres.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

import programs
from contract import AUDIT_DIR, AUDIT_FILE, AUDIT_OWNERSHIP_DONOR, SECRETS_DIR, SERVICE_LABEL, STACK_LABEL
from settings import AuditConfig, BackupConfig, Images, Settings
from stack.common import NetworkNames, hardened_container_args, healthcheck, secret_file
from stack.datastores import RABBITMQ_USER, Datastores
from stack.volumes import Volumes

#: The scripts uploaded into BIN_DIR, as they are in the repository.
SCRIPTS_DIR = programs.ROOT / "backup"
SCRIPTS = ("backup", "restore", "lib.sh")
BIN_DIR = "/opt/backup/bin"
BACKUP_DIR = "/backups"
SECOND_DIR = "/backups-second"
METRICS_DIR = "/metrics"
REDIS_SOURCE_DIR = "/sources/redis"
RABBITMQ_API_URL = "http://rabbitmq:15672"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Not root: the image's own `postgres` user (uid 70 in postgres:*-alpine,
# 999 in the Debian images), named so Docker resolves it in the image. It must own the
# backups and metrics volumes, and nothing can chown without root; so each volume is also
# mounted at a directory the image ships owned by `postgres` (both official variants):
# Docker copies that directory's owner and mode onto an EMPTY volume at its first mount
# ("copy-up", measured: tests/docker/test_backup_docker.py). The service then narrows the inherited
# 1777/3777 modes. An existing root-owned volume needs a one-time chown (docs/backup.md).
BACKUP_USER = "postgres"
OWNERSHIP_DONORS = {"backups": "/var/lib/postgresql/data", "metrics": "/var/run/postgresql"}


@dataclass(frozen=True)
class BackupProps:
    """What the backup service reads: its section, its image (postgres's), the audit trail's."""

    name_prefix: str
    images: Images
    backup: BackupConfig
    audit: AuditConfig

    @classmethod
    def of(cls, settings: Settings) -> BackupProps:
        return cls(settings.name_prefix, settings.images, settings.backup, settings.security.audit)


@dataclass(frozen=True)
class BackupArgs:
    props: BackupProps
    networks: NetworkNames
    volumes: Volumes
    datastores: Datastores
    stack_labels: Mapping[str, str]


def script_files() -> dict[str, str]:
    """`{container path: content}` of the scripts, exactly as uploaded."""
    return {f"{BIN_DIR}/{name}": programs.text(f"backup/{name}") for name in SCRIPTS}


def service_command() -> list[str]:
    """`backup loop`, after narrowing the volumes' modes (copy-up gives them the donors' 1777/3777).

    programs/backup/service.sh by `sh -c` (not uploaded); fails with one line naming the fix
    when the user does not own them (an old root-owned volume).
    """
    return ["/bin/sh", "-c", programs.text("backup/service.sh")]


def backup_envs(props: BackupProps, database_name: str, database_user: str, stack: str = "") -> list[str]:
    """The scripts' settings; all of them come from `backup` (no secrets here)."""
    cfg = props.backup
    interval = cfg.interval_minutes * 60
    envs = {
        "PATH": f"{BIN_DIR}:{IMAGE_PATH}",
        "TZ": "UTC",
        "BACKUP_DIR": BACKUP_DIR,
        "BACKUP_METRICS_DIR": METRICS_DIR,
        "BACKUP_INTERVAL_SECONDS": str(interval),
        "BACKUP_RETRY_SECONDS": str(min(600, interval)),
        "BACKUP_KEEP_COUNT": str(cfg.retention.keep_count),
        "BACKUP_MAX_AGE_DAYS": str(cfg.retention.max_age_days),
        "BACKUP_RESTORE_CHECK_SECONDS": str(cfg.restore_check_days * 86400),
        "PGHOST": "postgres",
        "PGPORT": "5432",
        "PGUSER": database_user,
        "PGDATABASE": database_name,
        "PGPASSWORD_FILE": f"{SECRETS_DIR}/postgres_password",
        "PGCONNECT_TIMEOUT": "10",
        # Audit records of backup/restore (lib.sh `audit`); empty: not recorded.
        "AUDIT_LOG": f"{AUDIT_DIR}/{AUDIT_FILE}" if props.audit.enabled else "",
        "AUDIT_STACK": stack or props.name_prefix,
        # security.audit.failClosed: a run whose record cannot be appended is refused (lib.sh, exit 74).
        "AUDIT_FAIL_CLOSED": "1" if props.audit.fail_closed else "0",
    }
    if props.audit.actor:
        envs["AUDIT_ACTOR_DEFAULT"] = props.audit.actor
    if cfg.second_target:
        envs["BACKUP_SECOND_DIR"] = SECOND_DIR
    if cfg.rabbitmq_definitions:
        envs.update(
            RABBITMQ_API_URL=RABBITMQ_API_URL,
            RABBITMQ_USER=RABBITMQ_USER,
            RABBITMQ_PASSWORD_FILE=f"{SECRETS_DIR}/rabbitmq_password",
        )
    if cfg.redis_snapshot:
        envs["REDIS_DATA_DIR"] = REDIS_SOURCE_DIR
    return [f"{key}={value}" for key, value in sorted(envs.items())]


class Backup(pulumi.ComponentResource):
    """The backup container and its metrics volume (read by node-exporter's textfile collector)."""

    def __init__(self, name: str, args: BackupArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("paper-trading:backup:Backup", name, None, opts)
        s = args.props
        prefix = s.name_prefix
        stack = args.stack_labels.get(STACK_LABEL, pulumi.get_stack())
        self.container_name = f"{prefix}-backup"
        self.metrics_volume_name = f"{prefix}-backup-metrics"
        # Metrics are derived data: a plain volume, recreated freely.
        self.metrics_volume = docker.Volume(
            "backup-metrics",
            name=self.metrics_volume_name,
            labels=[
                docker.VolumeLabelArgs(label=STACK_LABEL, value=stack),
                docker.VolumeLabelArgs(label=SERVICE_LABEL, value="backup"),
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.restore_command = f"docker exec -i {self.container_name} restore"
        self.envs = backup_envs(s, args.datastores.database_name, args.datastores.database_user, stack)
        self.container: docker.Container | None = None
        if s.backup.enabled:
            self.container = docker.Container(
                "backup",
                **hardened_container_args(
                    image=s.images.postgres,
                    name=self.container_name,
                    service="backup",
                    stack_labels=args.stack_labels,
                    networks={args.networks.backend: []},
                    limits=s.backup.limits,
                    envs=self.envs,
                    tmpfs={"/tmp": "rw,noexec,nosuid,size=16m"},
                    volumes=self._volumes(args),
                    uploads=self._uploads(args),
                    # The image entrypoint runs anything that is not `postgres` as is.
                    user=BACKUP_USER,
                    command=service_command(),
                    healthcheck=healthcheck(
                        ["CMD", f"{BIN_DIR}/backup", "status"], interval="60s", timeout="10s",
                        retries=3, start_period="15m",
                    ),
                ),
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=[args.datastores.postgres, self.metrics_volume],
                    delete_before_replace=True,
                ),
            )
        self.register_outputs({"metricsVolumeName": self.metrics_volume_name})

    def _volumes(self, args: BackupArgs) -> list[docker.ContainerVolumeArgs]:
        cfg = args.props.backup
        volumes = [
            args.volumes.mount("backups", BACKUP_DIR),
            args.volumes.mount("backups", OWNERSHIP_DONORS["backups"]),  # owner for a new volume
            docker.ContainerVolumeArgs(volume_name=self.metrics_volume_name, container_path=METRICS_DIR),
            docker.ContainerVolumeArgs(volume_name=self.metrics_volume_name,
                                       container_path=OWNERSHIP_DONORS["metrics"]),
            # Upload targets in a read-only container must be volumes.
            docker.ContainerVolumeArgs(container_path=BIN_DIR),
            docker.ContainerVolumeArgs(container_path=SECRETS_DIR),
        ]
        # The audit trail (release/audit.py): backup/restore append their records; also at the
        # image's postgres-owned directory, so a new audit volume gets this user (copy-up).
        volumes += [args.volumes.mount("audit", AUDIT_DIR),
                    args.volumes.mount("audit", AUDIT_OWNERSHIP_DONOR)]
        if cfg.redis_snapshot:
            volumes.append(args.volumes.mount("redis", REDIS_SOURCE_DIR, read_only=True))
        if cfg.second_target:
            volumes.append(docker.ContainerVolumeArgs(host_path=cfg.second_target, container_path=SECOND_DIR))
        return volumes

    def _uploads(self, args: BackupArgs) -> list[docker.ContainerUploadArgs]:
        uploads = [
            docker.ContainerUploadArgs(file=path, content=content, permissions="0555")
            for path, content in script_files().items()
        ]
        uploads.append(
            secret_file(f"{SECRETS_DIR}/postgres_password", args.datastores.postgres_password.result,
                        owner=BACKUP_USER)
        )
        if args.props.backup.rabbitmq_definitions:
            uploads.append(
                secret_file(f"{SECRETS_DIR}/rabbitmq_password", args.datastores.rabbitmq_password.result,
                            owner=BACKUP_USER)
            )
        return uploads
