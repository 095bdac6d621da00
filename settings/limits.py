"""Container resource limits: the `Limits` object every section uses, and `limits` (the datastores')."""

from __future__ import annotations

from pydantic import Field

from .base import Model


class Limits(Model):
    """Per-container resource limits; memory in MiB, CPUs as a fraction of cores."""

    memory_mb: int = Field(ge=16, le=65536)
    cpus: float = Field(gt=0, le=64)


class DatastoreLimits(Model):
    postgres: Limits = Limits(memory_mb=1024, cpus=1.0)
    redis: Limits = Limits(memory_mb=256, cpus=0.5)
    rabbitmq: Limits = Limits(memory_mb=512, cpus=0.5)
    monitoring: Limits = Limits(memory_mb=512, cpus=0.5)
