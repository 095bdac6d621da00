"""Bad stack config fails before any resource is registered, naming every bad key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from settings import ConfigError, parse_settings
from tools.render import Resource, evaluate, stack_config

BASE_DEPLOYMENT = {
    "activeColor": "blue",
    "blue": {"image": "ghcr.io/example/app:1.0.0", "replicas": 2},
    "green": {"image": "ghcr.io/example/app:1.0.0", "replicas": 2},
}


def _with(key: str, value: Any) -> tuple[dict[str, str], list[str]]:
    config, secrets = stack_config("prod")
    full = f"paper-trading:{key}"
    if value is None:
        config.pop(full, None)
    else:
        config[full] = value if isinstance(value, str) else json.dumps(value)
    return config, secrets


def _nested(key: str, path: list[str], value: Any) -> tuple[dict[str, str], list[str]]:
    config, secrets = stack_config("prod")
    tree = json.loads(config[f"paper-trading:{key}"])
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    config[f"paper-trading:{key}"] = json.dumps(tree)
    return config, secrets


# (case id, config builder, the key path the message must name)
BAD_CONFIGS = [
    ("paper-mode-off", lambda: _with("paperTradingMode", "false"), "paperTradingMode"),
    ("paper-mode-missing", lambda: _with("paperTradingMode", None), "paperTradingMode"),
    ("paper-mode-string", lambda: _with("paperTradingMode", "yes"), "paperTradingMode"),
    ("real-trades-on", lambda: _with("allowRealTrades", "true"), "allowRealTrades"),
    ("real-trades-missing", lambda: _with("allowRealTrades", None), "allowRealTrades"),
    ("trade-permission", lambda: _nested("exchanges", ["binance", "permissions"], "TRADE"),
     "exchanges.binance.permissions"),
    ("withdraw-permission", lambda: _nested("exchanges", ["kucoin", "permissions"], "READ_WRITE"),
     "exchanges.kucoin.permissions"),
    ("unknown-exchange", lambda: _nested("exchanges", ["kraken"], {"permissions": "READ_ONLY"}),
     "exchanges.kraken"),
    ("replicas-zero", lambda: _nested("deployment", ["blue", "replicas"], 0), "deployment.blue.replicas"),
    ("replicas-text", lambda: _nested("deployment", ["green", "replicas"], "two"),
     "deployment.green.replicas"),
    ("bad-color", lambda: _nested("deployment", ["activeColor"], "red"), "deployment.activeColor"),
    ("latest-image", lambda: _nested("deployment", ["blue", "image"], "app:latest"), "deployment.blue.image"),
    ("untagged-image", lambda: _nested("deployment", ["green", "image"], "ghcr.io/x/app"),
     "deployment.green.image"),
    ("missing-green", lambda: _with("deployment", {"blue": BASE_DEPLOYMENT["blue"]}), "deployment.green"),
    ("typo-top-level", lambda: _with("paperTradingMod", "true"), "paperTradingMod"),
    ("typo-nested", lambda: _nested("server", ["sssl"], {}), "server.sssl"),
    ("port-range", lambda: _nested("server", ["port"], 70000), "server.port"),
    ("pool-negative", lambda: _nested("database", ["poolSize"], -1), "database.poolSize"),
    ("bad-environment", lambda: _with("environment", "prod"), "environment"),
    ("relative-cert", lambda: _nested("server", ["ssl", "certPath"], "certs/x.pem"), "server.ssl.certPath"),
    ("plaintext-key", lambda: (_nested("exchanges", ["binance", "apiKey"], "abc")[0], []),
     "exchanges.binance.apiKey"),
    ("tls-off-in-prod", lambda: _nested("server", ["ssl", "enabled"], False), "server.ssl.enabled"),
    ("infra-image-latest", lambda: _with("images", {"postgres": "postgres:latest"}), "images.postgres"),
    ("grafana-port", lambda: _nested("monitoring", ["grafana", "port"], 0), "monitoring.grafana.port"),
    ("not-json-object", lambda: _with("deployment", "blue"), "deployment"),
    ("host-with-scheme", lambda: _nested("server", ["host"], "https://paper.example.com"), "server.host"),
    ("public-address-bad", lambda: _nested("proxy", ["publicAddress"], "everywhere"), "proxy.publicAddress"),
    ("port-clash", lambda: _nested("monitoring", ["grafana", "port"], 8443), "monitoring.grafana.port"),
    ("preview-equals-https", lambda: _nested("proxy", ["previewPort"], 443), "proxy"),
    ("database-url-scheme", lambda: (
        _with("database", {"url": "mysql://u:p@db/x"})[0],
        ["paper-trading:database", "paper-trading:exchanges"]),
     "database.url"),
    ("unknown-app-key", lambda: _with("app", {"logLevel": "info", "debugMode": True}), "app.debugMode"),
    ("root-app-user", lambda: _with("app", {"user": "0:0"}), "app.user"),
    ("flat-key-without-path", lambda: _with("deployment.blue.replicas", "3"), "deployment.blue.replicas"),
    # issue 15, part C: the background-work section.
    ("workers-unknown-key", lambda: _with("workers", {"enabeld": True}), "workers.enabeld"),
    ("workers-no-queue", lambda: _with("workers", {"queues": []}), "workers.queues"),
    ("workers-queue-comma", lambda: _with("workers", {"queues": ["a,b"]}), "workers.queues"),
    ("workers-queue-empty-name", lambda: _with("workers", {"queues": [""]}), "workers.queues"),
    ("workers-queue-reserved", lambda: _with("workers", {"queues": ["amq.orders"]}), "workers.queues"),
    ("workers-queue-twice", lambda: _with("workers", {"queues": ["q", "q"]}), "workers.queues"),
    ("workers-lease-too-short", lambda: _with("workers", {"leaseTtlMs": 10}), "workers.leaseTtlMs"),
    ("workers-prefetch-unlimited", lambda: _with("workers", {"prefetch": 0}), "workers.prefetch"),
    ("workers-tick-text", lambda: _with("workers", {"tickMs": "fast"}), "workers.tickMs"),
    ("workers-handoff-not-a-number", lambda: _with("workers", {"handoffTimeoutSeconds": "soon"}),
     "workers.handoffTimeoutSeconds"),
    ("workers-handoff-inside-lease", lambda: _with("workers", {"leaseTtlMs": 10000}),
     "workers.handoffTimeoutSeconds"),
    ("workers-duration-bad", lambda: _with("workers", {"noActiveWorkersFor": "2 minutes"}),
     "workers.noActiveWorkersFor"),
    ("workers-duration-inside-handoff", lambda: _with("workers", {"noActiveWorkersFor": "10s"}),
     "workers.noActiveWorkersFor"),
]


@pytest.mark.parametrize("case,build,key", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_names_key_and_registers_nothing(case: str, build: Any, key: str) -> None:
    config, secrets = build()
    records: list[Resource] = []
    with pytest.raises(ConfigError) as caught:
        evaluate("prod", config=config, secret_keys=secrets, records=records)
    message = str(caught.value)
    assert f"paper-trading:{key}" in message, message
    assert "Traceback" not in message and "pydantic" not in message.lower()
    assert records == [], f"{case}: {len(records)} resources registered before the error"


def test_every_problem_listed_in_one_message() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings({
            "paperTradingMode": "false",
            "allowRealTrades": "true",
            "deployment": json.dumps({"blue": {"image": "a:1", "replicas": 0},
                                      "green": {"image": "a:latest"}}),
        })
    assert caught.value.problems == [
        "paper-trading:allowRealTrades: must be false",
        "paper-trading:deployment.blue.replicas: must be at least 1",
        "paper-trading:deployment.green.image: image 'a:latest' must not use the 'latest' tag",
        "paper-trading:paperTradingMode: must be true",
    ]


def test_secret_values_are_secret_types() -> None:
    config, secrets = stack_config("prod")
    raw = {k.split(":", 1)[1]: v for k, v in config.items()}
    settings = parse_settings(raw, frozenset(k.split(":", 1)[1] for k in secrets))
    binance = settings.exchanges.binance
    assert binance is not None
    assert "secret:" not in repr(binance), "a SecretStr must not print its value"
    assert binance.api_key.get_secret_value() == "secret:exchanges.binance.apiKey"


def test_valid_stacks_parse_with_safe_values() -> None:
    for stack in ("prod", "dev"):
        config, secrets = stack_config(stack)
        raw = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("paper-trading:")}
        settings = parse_settings(raw, frozenset(k.split(":", 1)[1] for k in secrets))
        assert settings.paper_trading_mode is True
        assert settings.allow_real_trades is False
        for exchange in settings.exchanges.configured().values():
            assert exchange.permissions == "READ_ONLY"


def test_error_for_a_secret_never_repeats_its_value() -> None:
    config, secrets = _with("database", {"url": "mysql://admin:hunter2@db/x"})
    with pytest.raises(ConfigError) as caught:
        evaluate("prod", config=config, secret_keys=[*secrets, "paper-trading:database"])
    assert "paper-trading:database.url" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_flat_dotted_key_hints_at_path() -> None:
    """`pulumi config set deployment.blue.replicas 3` (no --path) makes a flat key: say how to nest it."""
    config, secrets = _with("deployment.blue.replicas", "3")
    with pytest.raises(ConfigError) as caught:
        evaluate("prod", config=config, secret_keys=secrets)
    assert caught.value.problems == [
        "paper-trading:deployment.blue.replicas: unknown key; to set a nested key use "
        "`pulumi config set --path deployment.blue.replicas ...`"
    ]


def _settings(**workers: Any) -> Any:
    config, secrets = stack_config("prod")
    raw = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("paper-trading:")}
    if workers:
        raw["workers"] = json.dumps(workers)
    return parse_settings(raw, frozenset(k.split(":", 1)[1] for k in secrets))


def test_workers_defaults() -> None:
    w = _settings().workers
    assert (w.enabled, w.queues, w.lease_ttl_ms, w.prefetch, w.tick_ms, w.handoff_timeout_seconds,
            w.no_active_workers_for) == (True, ("paper-trading.orders",), 3000, 10, 1000, 15.0, "2m")
    # A partly set object keeps the other defaults.
    assert _settings(prefetch=50).workers.queues == ("paper-trading.orders",)


def test_handoff_timeout_error_names_both_keys_and_the_bound() -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(leaseTtlMs=9000, handoffTimeoutSeconds=17.5)
    [problem] = caught.value.problems
    assert problem.startswith("paper-trading:workers.handoffTimeoutSeconds: must be at least 18 ")
    assert "workers.leaseTtlMs" in problem
    # Exactly at the bound is accepted (and the alert window must then outlast it).
    assert _settings(leaseTtlMs=9000, handoffTimeoutSeconds=18).workers.handoff_timeout_seconds == 18


@pytest.mark.parametrize("value,ms", [("2m", 120_000), ("1h30m", 5_400_000), ("500ms", 500), ("90s", 90_000)])
def test_no_active_workers_for_accepts_prometheus_durations(value: str, ms: int) -> None:
    from settings import duration_ms

    assert duration_ms(value) == ms
    if ms > 15_000:
        assert _settings(noActiveWorkersFor=value).workers.no_active_workers_for == value
