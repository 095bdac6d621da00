"""`app`: the app's health paths (the validation contract's), limits, user and log level."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from validation.options import HealthPaths

from .base import Model
from .limits import Limits


class AppConfig(Model):
    health: HealthPaths = HealthPaths()
    limits: Limits = Limits(memory_mb=512, cpus=1.0)
    user: str = Field(default="1000:1000", pattern=r"^[1-9][0-9]*(:[1-9][0-9]*)?$")
    log_level: Literal["debug", "info", "warn", "error"] = "info"
