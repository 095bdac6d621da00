"""`backup`: scheduled logical backups, their retention and an optional second target."""

from __future__ import annotations

from pydantic import Field, field_validator

from .base import Model
from .limits import Limits


class BackupRetention(Model):
    """Backups are removed when beyond `keepCount` OR older than `maxAgeDays`; the newest good one never."""

    keep_count: int = Field(default=14, ge=1, le=1000)
    max_age_days: int = Field(default=30, ge=1, le=3650)


class BackupConfig(Model):
    """Scheduled logical backups (docs/backup.md). `secondTarget` is an absolute host path bind-mounted."""

    enabled: bool = True
    interval_minutes: int = Field(default=360, ge=5, le=10080)
    retention: BackupRetention = BackupRetention()
    second_target: str | None = None
    rabbitmq_definitions: bool = True
    redis_snapshot: bool = True
    restore_check_days: int = Field(default=7, ge=0, le=365)
    limits: Limits = Limits(memory_mb=256, cpus=0.5)

    @field_validator("second_target")
    @classmethod
    def _host_path(cls, value: str | None) -> str | None:
        if value is None:
            return value
        forbidden = ("", "/var/lib/docker")
        if not value.startswith("/") or value.rstrip("/") in forbidden or ".." in value.split("/"):
            raise ValueError("must be an absolute host path (not /, not containing '..')")
        if any(c.isspace() or c in ":,\\" for c in value):
            raise ValueError("must not contain whitespace, ':' , ',' or backslashes")
        return value.rstrip("/")
