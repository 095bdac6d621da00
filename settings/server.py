"""`server`: the app's listen port and the public name, with its TLS files."""

from __future__ import annotations

from pydantic import Field, field_validator

from .base import Hostname, Model


class SslConfig(Model):
    enabled: bool = True
    cert_path: str = "/etc/ssl/paper-trading/fullchain.pem"
    key_path: str = "/etc/ssl/paper-trading/privkey.pem"

    @field_validator("cert_path", "key_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path on the Docker host")
        return value


class ServerConfig(Model):
    """`port` is the app's listen port inside its container; `host` the public name."""

    port: int = Field(default=3000, ge=1024, le=65535)
    host: Hostname = Field(default="localhost", min_length=1)
    ssl: SslConfig = SslConfig()
