"""`proxy`: the nginx in front of both colors: listeners, rate limits, worker and ulimit sizing."""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from .base import IPv4, Model
from .limits import Limits


class RateLimit(Model):
    rate_per_second: int = Field(ge=1, le=100000)
    burst: int = Field(ge=0, le=100000)


class ProxyConfig(Model):
    public_address: IPv4 = "0.0.0.0"
    http_port: int = Field(default=80, ge=1, le=65535)
    https_port: int = Field(default=443, ge=1, le=65535)
    preview_port: int = Field(default=8443, ge=1, le=65535)
    api_rate_limit: RateLimit = RateLimit(rate_per_second=20, burst=40)
    auth_rate_limit: RateLimit = RateLimit(rate_per_second=1, burst=5)
    worker_shutdown_timeout: str = Field(default="30s", pattern=r"^[0-9]+[sm]$")
    limits: Limits = Limits(memory_mb=256, cpus=1.0)
    #: nginx `worker_connections`: client and upstream connections per worker.
    worker_connections: int = Field(default=4096, ge=512, le=65536)
    #: Open files per process: nginx's `worker_rlimit_nofile` and the container's `nofile` ulimit
    #: (soft = hard), one value for both. At least 2 x workerConnections: a proxied request
    #: holds a client and an upstream socket.
    open_files_limit: int = Field(default=16384, ge=1024, le=1048576)
    #: The container's `nproc` ulimit (soft = hard). The kernel counts every process of the
    #: proxy's uid (101) on the host, not only this container's (docs/proxy.md).
    max_processes: int = Field(default=128, ge=32, le=4096)

    @property
    def worker_processes(self) -> int:
        """nginx `worker_processes`: one per (started) CPU of the container's limit, 1 to 8."""
        return max(1, min(8, math.ceil(self.limits.cpus)))

    @model_validator(mode="after")
    def _limits_fit_nginx(self) -> ProxyConfig:
        if self.open_files_limit < 2 * self.worker_connections:
            raise ValueError(
                f"openFilesLimit: must be at least 2 x proxy.workerConnections "
                f"({2 * self.worker_connections}): each proxied connection holds two files"
            )
        # Old and new workers overlap during reloads; plus master, init, healthcheck, docker exec.
        needed = 4 * self.worker_processes + 16
        if self.max_processes < needed:
            raise ValueError(
                f"maxProcesses: must be at least {needed} (4 x {self.worker_processes} worker "
                "processes for overlapping reloads, plus 16 for master, init, healthchecks and exec)"
            )
        return self
