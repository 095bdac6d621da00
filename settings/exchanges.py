"""`exchanges`: read-only exchange keys (secrets); `permissions` can only be READ_ONLY."""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr, field_validator, model_validator

from .base import Model


class ExchangeConfig(Model):
    api_key: SecretStr
    api_secret: SecretStr | None = None
    passphrase: SecretStr | None = None
    sandbox: bool = True
    permissions: Literal["READ_ONLY"]
    base_url: str | None = None

    @field_validator("base_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("must be an https:// URL")
        return value


SANDBOX_URLS = {
    "binance": "https://testnet.binance.vision",
    "kucoin": "https://openapi-sandbox.kucoin.com",
}
PRODUCTION_URLS = {
    "binance": "https://api.binance.com",
    "kucoin": "https://api.kucoin.com",
}


class ExchangesConfig(Model):
    binance: ExchangeConfig | None = None
    kucoin: ExchangeConfig | None = None

    @model_validator(mode="after")
    def _binance_has_no_passphrase(self) -> ExchangesConfig:
        if self.binance is not None and self.binance.passphrase is not None:
            raise ValueError("binance.passphrase: Binance keys have no passphrase")
        return self

    def configured(self) -> dict[str, ExchangeConfig]:
        """The exchanges that have a key, by name, in a stable order."""
        found = {"binance": self.binance, "kucoin": self.kucoin}
        return {name: ex for name, ex in found.items() if ex is not None}

    def base_url(self, name: str) -> str:
        exchange = self.configured()[name]
        if exchange.base_url:
            return exchange.base_url
        return (SANDBOX_URLS if exchange.sandbox else PRODUCTION_URLS)[name]
