"""Every word of the trading policies' vocabularies is load-bearing, one case per word.

tests/policies/test_policies.py has one mutant per way to break a rule; a word list there is covered
by one of its words. Here each entry of the lists that decide "more than read-only" (permission
values) and "an env file" (upload names) is exercised on its own, on the real app container
of the prod graph (tests.policies.test_policies' mutants and harness), so dropping any one entry from
policies/trading.py lets a case through.
"""

from __future__ import annotations

import pytest

from policies import trading
from tests.support.policy_mutants import KEYS, PTM, Mutant, add_env, add_label, app, append, violations_of

# Spelled out here, not read from policies/trading.py: a word dropped there must still be tested.
BAD_PERMISSION_VALUES = ("TRADE", "TRADING", "WITHDRAW", "TRANSFER", "WRITE", "FULL", "ADMIN")
CREDENTIAL_WORDS = ("KEY", "SECRET", "PASSPHRASE", "TOKEN", "CREDENTIAL", "PASSWORD")


def test_the_vocabularies_cover_at_least_these_words() -> None:
    assert set(BAD_PERMISSION_VALUES) <= set(trading._BAD_PERMISSION_VALUES)
    assert set(CREDENTIAL_WORDS) <= set(trading._CREDENTIAL_WORDS)


@pytest.mark.parametrize("value", BAD_PERMISSION_VALUES)
def test_each_more_than_read_only_permission_value_is_a_violation(value: str) -> None:
    """`API_KEY_SCOPE=<value>` (a permission-like name, no exchange prefix) announces a trading key."""
    mutant = Mutant(KEYS, f"scope-{value}", app, add_env(f"API_KEY_SCOPE={value.lower()}_access"))
    found = violations_of(mutant)
    ours = [v for v in found if v.policy == KEYS]
    assert any("API_KEY_SCOPE" in v.message and "more than read-only" in v.message for v in ours), \
        [v.line() for v in found]
    assert all(v.mandatory for v in ours)


def test_a_read_only_permission_value_is_not_a_violation() -> None:
    found = violations_of(Mutant(KEYS, "scope-read-only", app, add_env("API_KEY_SCOPE=read_only")))
    assert [v.line() for v in found if v.policy == KEYS] == []


@pytest.mark.parametrize("path", ["/app/.env", "/app/.env.local", "/app/prod.env", "/srv/config/trading.env"])
def test_every_env_file_upload_is_a_paper_trading_mode_violation(path: str) -> None:
    found = violations_of(Mutant(PTM, "env-file", app,
                                 append("uploads", {"file": path, "content": "PAPER_TRADING_MODE=false\n"})))
    ours = [v for v in found if v.policy == PTM]
    assert any(path in v.message and "env file" in v.message for v in ours), [v.line() for v in found]
    assert all(v.mandatory for v in ours)


def test_an_upload_that_is_not_an_env_file_is_no_paper_trading_mode_violation() -> None:
    found = violations_of(Mutant(PTM, "plain-file", app,
                                 append("uploads", {"file": "/app/environment.json", "content": "{}"})))
    assert [v.line() for v in found if v.policy == PTM] == []


@pytest.mark.parametrize("word", CREDENTIAL_WORDS)
def test_each_credential_word_makes_an_exchange_setting_a_credential(word: str) -> None:
    """`BYBIT_API_<word>` hands the app a Bybit credential: it must come with BYBIT_PERMISSIONS=READ_ONLY."""
    found = violations_of(Mutant(KEYS, f"bybit-{word}", app, add_env(f"BYBIT_API_{word}=x")))
    ours = [v for v in found if v.policy == KEYS]
    assert any(v.message.startswith("BYBIT credentials need BYBIT_PERMISSIONS=READ_ONLY") for v in ours), \
        [v.line() for v in found]


@pytest.mark.parametrize("word", CREDENTIAL_WORDS)
def test_each_credential_word_makes_an_exchange_file_a_credential(word: str) -> None:
    path = f"/run/secrets/bybit_api_{word.lower()}"
    found = violations_of(Mutant(KEYS, f"bybit-file-{word}", app,
                                 append("uploads", {"file": path, "content": "x"})))
    ours = [v for v in found if v.policy == KEYS]
    assert any(f"file {path}" in v.message and "BYBIT_PERMISSIONS=READ_ONLY" in v.message for v in ours), \
        [v.line() for v in found]


def test_a_non_credential_exchange_setting_needs_no_permissions() -> None:
    found = violations_of(Mutant(KEYS, "bybit-region", app, add_env("BYBIT_REGION=eu")))
    assert [v.line() for v in found if v.policy == KEYS] == []


def test_the_app_role_label_set_twice_is_a_paper_trading_mode_violation() -> None:
    found = violations_of(Mutant(PTM, "role-twice", app, add_label("paper-trading.role", "app")))
    ours = [v for v in found if v.policy == PTM]
    assert any("paper-trading.role is set 2 times" in v.message for v in ours), [v.line() for v in found]
