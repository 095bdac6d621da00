"""`database`: the app's Postgres URL (a secret) and pool."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from .base import Model


class DatabaseConfig(Model):
    url: SecretStr | None = None
    ssl: bool = False
    pool_size: int = Field(default=10, ge=1, le=200)

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        # The message never repeats the value: it is a secret.
        if value is not None and not value.get_secret_value().startswith(("postgres://", "postgresql://")):
            raise ValueError("must be a postgres:// or postgresql:// URL")
        return value
