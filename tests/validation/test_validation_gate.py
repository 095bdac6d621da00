"""The promotion gate's dynamic provider against the real reference app on loopback."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import dill
import pytest
from pulumi.dynamic.dynamic import serialize_provider

from release.gate import PromotionGateArgs, PromotionGateProvider
from tests.support.fakes.exchanges import FakeExchange, fake_exchange
from tests.support.fakes.validation_servers import RefApp, free_port, reference_app
from tests.support.fidelity_report import APP_BLOCKING_CHECKS, assert_failed_checks
from validation.errors import DeploymentError

FAST = {"check_timeout": 3, "timeout": 10, "retries": 1}


@pytest.fixture(scope="module")
def app() -> Iterator[RefApp]:
    with reference_app(color="green") as running:
        yield running


def props(url: str, color: str = "green", **over: Any) -> dict[str, Any]:
    base = {
        "candidateColor": color,
        "previewUrl": url,
        "image": "paper-trading-app:1.0",
        "replicas": 1.0,
        "options": dict(FAST),
        "enabled": True,
        "exchanges": None,
    }
    base.update(over)
    return base


def test_create_approves_a_healthy_candidate(app: RefApp) -> None:
    app.set_faults()
    result = PromotionGateProvider().create(props(app.url))
    assert result.outs is not None
    assert result.outs["approvedColor"] == "green"
    assert result.outs["validated"] is True
    assert result.outs["report"]["passed"] >= 15


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        # paper mode off shows in /metrics too: safety.metrics is implied
        ("paper_mode_off", {"safety.paper_trading_mode", "safety.metrics"}),
        ("not_ready", {"health.ready"}),
        ("trading_key", {"safety.exchange_permissions"}),
        ("no_rate_limit", {"security.rate_limit"}),
    ],
    ids=["paper_mode_off", "not_ready", "trading_key", "no_rate_limit"],
)
def test_create_raises_with_the_summary_on_failure(app: RefApp, fault: str, expected: set[str]) -> None:
    app.set_faults(fault)
    try:
        with pytest.raises(DeploymentError) as caught:
            PromotionGateProvider().create(props(app.url))
    finally:
        app.set_faults()
    text = str(caught.value)
    assert "promotion gate: validation of green failed" in text
    assert "was not promoted" in text
    assert caught.value.phase == "validation" and caught.value.step == "promotion-gate"
    assert_failed_checks(caught.value, expected)


def test_wrong_candidate_color_is_refused(app: RefApp) -> None:
    app.set_faults()
    with pytest.raises(DeploymentError) as caught:
        PromotionGateProvider().create(props(app.url, color="blue"))
    assert_failed_checks(caught.value, {"safety.deployment_color"})


def test_unreachable_preview_listener_fails() -> None:
    with pytest.raises(DeploymentError) as caught:
        PromotionGateProvider().create(
            props(f"http://127.0.0.1:{free_port()}", options={**FAST, "retries": 0})
        )
    assert_failed_checks(caught.value, APP_BLOCKING_CHECKS)  # nothing answers: every app check fails


def test_update_reruns_the_checks(app: RefApp) -> None:
    provider = PromotionGateProvider()
    app.set_faults()
    olds = provider.create(props(app.url)).outs
    assert olds is not None
    news = props(app.url, image="paper-trading-app:1.1")
    app.set_faults("real_trades_allowed")
    try:
        with pytest.raises(DeploymentError) as caught:
            provider.update("id", olds, news)
    finally:
        app.set_faults()
    assert_failed_checks(caught.value, {"safety.real_trades_blocked"})
    assert provider.update("id", olds, news).outs["approvedColor"] == "green"  # type: ignore[index]


def test_diff_rewatches_candidate_image_replicas_and_secrets(
    app: RefApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    import release.gate as gate

    provider = PromotionGateProvider()
    app.set_faults()
    olds = provider.create(props(app.url)).outs
    assert olds is not None
    # The switch made the approval live (a real proxy: tests/docker/test_release_guard_docker.py).
    monkeypatch.setattr(gate, "spent", lambda _olds, _news, client=None: False)
    assert provider.diff("id", olds, props(app.url)).changes is False
    # A spent approval (its switch failed) is checked again, whatever else changed.
    monkeypatch.setattr(gate, "spent", lambda _olds, _news, client=None: True)
    assert provider.diff("id", olds, props(app.url)).changes is True
    monkeypatch.setattr(gate, "spent", lambda _olds, _news, client=None: False)
    for change in (
        {"candidateContainers": ["replaced-container-id"]},
        {"image": "x:2"},
        {"replicas": 2.0},
        {"candidateColor": "blue"},
        {"options": {**FAST, "latency_threshold_ms": 100}},
        {
            "exchanges": [
                {
                    "exchange": "binance",
                    "api_key": "k",
                    "api_secret": "s",
                    "base_url": "https://api.binance.com",
                }
            ]
        },
    ):
        assert provider.diff("id", olds, props(app.url, **change)).changes is True, change


def test_secrets_are_used_but_not_returned(app: RefApp) -> None:
    ex = FakeExchange()
    app.set_faults()
    with fake_exchange("binance", ex) as url:
        keys = [{"exchange": "binance", "api_key": ex.api_key, "api_secret": ex.api_secret, "base_url": url}]
        outs = PromotionGateProvider().create(props(app.url, exchanges=keys)).outs
        assert ex.accepted == 1
        ex.binance_flags["enableWithdrawals"] = True
        with pytest.raises(DeploymentError) as caught:
            PromotionGateProvider().create(props(app.url, exchanges=keys))
        assert_failed_checks(caught.value, {"safety.exchange_keys"})
    assert outs is not None and "exchanges" not in outs
    assert ex.api_secret not in json.dumps(outs)


@pytest.mark.parametrize("over", [
    {"enabled": False}, {"enabled": None}, {"enabled": "true"},
    {"options": {**FAST, "skip": ["safety.paper_trading_mode"]}},
    {"options": {**FAST, "skip": ["health.ready"]}},
    {"options": {**FAST, "skip": "safety.metrics"}},
    {"options": None},
], ids=["disabled", "enabled-missing", "enabled-string", "skip-safety", "skip-health", "skip-string",
        "no-options"])
def test_gate_built_to_skip_checks_refuses_without_running_any(over: dict[str, Any]) -> None:
    """Fail closed: whatever built it, a disabled gate or one skipping safety/health approves nothing."""
    with pytest.raises(DeploymentError) as caught:
        PromotionGateProvider().create(props(f"http://127.0.0.1:{free_port()}", **over))
    assert caught.value.step == "promotion-gate" and caught.value.recoverable is False
    assert caught.value.failed_checks == ()  # refused before any check ran


def test_provider_survives_dill_and_renders_offline(app: RefApp) -> None:
    """What the engine does: pickle the provider, load it elsewhere, call it."""
    from tools.render import _dynamic_outputs

    blob = serialize_provider(PromotionGateProvider())
    assert _dynamic_outputs(blob, {"candidateColor": "blue"}) == {"approvedColor": "blue"}
    loaded = dill.loads(base64.b64decode(blob))
    app.set_faults()
    assert loaded.create(props(app.url)).outs["approvedColor"] == "green"


def test_args_from_prod_settings() -> None:
    from settings import parse_settings
    from tools.render import stack_config

    config, secret_keys = stack_config("prod")
    raw = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("paper-trading:")}
    settings = parse_settings(raw, frozenset(k.split(":", 1)[1] for k in secret_keys))
    args = PromotionGateArgs.from_settings(settings)
    assert args.candidate_color == settings.deployment.active_color
    assert args.preview_url == f"https://127.0.0.1:{settings.proxy.preview_port}"
    assert args.options["server_name"] == settings.server.host
    assert args.options["rate_limit_burst"] == settings.proxy.auth_rate_limit.burst
    assert args.image == settings.deployment.color(settings.deployment.active_color).image


def test_gate_resource_under_the_mock_runtime() -> None:
    """The resource registers as a Python dynamic resource; offline its output is the candidate."""
    import pulumi
    from pulumi.runtime import mocks as pmocks

    from tools.render import _mock_state

    seen: list[pmocks.MockResourceArgs] = []

    class Mocks(pmocks.Mocks):
        def new_resource(self, args: pmocks.MockResourceArgs) -> tuple[str, dict[str, Any]]:
            seen.append(args)
            return f"{args.name}-id", _mock_state(args.typ, args.name, args.inputs)

        def call(self, args: pmocks.MockCallArgs) -> tuple[dict[str, Any], None]:
            return {}, None

    import asyncio

    asyncio.set_event_loop(asyncio.new_event_loop())  # earlier tests' asyncio.run left none
    pulumi.runtime.set_mocks(Mocks(), preview=False)
    from release.gate import PromotionGate

    @pulumi.runtime.test  # type: ignore[untyped-decorator]  # the SDK's decorator is untyped
    def check() -> pulumi.Output[Any]:
        gate = PromotionGate(
            "promotion-gate",
            PromotionGateArgs(
                candidate_color="blue", preview_url="https://127.0.0.1:8443", image="app:1", replicas=2
            ),
        )
        return gate.approved_color.apply(lambda color: color == "blue" or pytest.fail(repr(color)))

    check()
    (gate,) = [a for a in seen if a.name == "promotion-gate"]
    assert gate.typ == "pulumi-python:dynamic:Resource"
    assert gate.inputs["candidateColor"] == "blue" and gate.inputs["image"] == "app:1"
    assert isinstance(gate.inputs["__provider"], str)  # not a secret envelope: render can call the hook


def test_rendered_gate_gets_exchange_secrets_only_as_a_secret() -> None:
    """Through the real program: the gate's exchange credentials are a secret input."""
    from tests.support import render_with
    from tools.render import SECRET_SIG

    exchanges = {
        "binance": {
            "apiKey": "k-binance",
            "apiSecret": "s-binance",
            "sandbox": True,
            "permissions": "READ_ONLY",
        },
        "kucoin": {
            "apiKey": "k-kucoin",
            "apiSecret": "s-kucoin",
            "passphrase": "p-kucoin",
            "sandbox": True,
            "permissions": "READ_ONLY",
        },
    }
    graph = render_with("prod", exchanges=exchanges)
    gate = graph.by_name("promotion-gate")
    assert graph.outputs["activeColor"] == gate.inputs["candidateColor"]
    assert isinstance(gate.wire["exchanges"], dict) and SECRET_SIG in gate.wire["exchanges"]
    creds = {c["exchange"]: c for c in gate.inputs["exchanges"]}
    assert creds["binance"]["base_url"] == "https://testnet.binance.vision"
    assert creds["kucoin"]["passphrase"] == "p-kucoin"
    assert "s-binance" not in json.dumps(gate.to_json())


def test_rendered_gate_gets_the_alertmanager_password_only_as_a_secret() -> None:
    """Issue 13, item 1: with validation.alertmanagerUrl the gate authenticates; the password is a secret
    input, never in its options; without the URL it gets no password at all."""
    from tests.support import render_with
    from tools.render import SECRET_SIG

    graph = render_with("prod", validation={"alertmanagerUrl": "http://127.0.0.1:9093"})
    gate = graph.by_name("promotion-gate")
    assert gate.inputs["options"]["alertmanager_user"] == "prometheus"
    wired = gate.wire["alertmanagerPassword"]
    assert isinstance(wired, dict) and SECRET_SIG in wired
    assert gate.inputs["alertmanagerPassword"] == "mock-alertmanager-password-32"
    assert "mock-alertmanager-password" not in json.dumps(gate.to_json())
    plain = render_with("prod").by_name("promotion-gate")
    assert plain.inputs.get("alertmanagerPassword") is None
    assert "alertmanager_user" not in plain.inputs["options"]


@pytest.mark.tools
def test_gate_authenticates_to_the_rendered_alertmanager_and_keeps_no_password(
    app: RefApp, tmp_path: Any
) -> None:
    from tests.support.fidelity_prometheus import alertmanager, alertmanager_password

    app.set_faults()
    password = alertmanager_password()
    with alertmanager(tmp_path / "am") as am:
        options = {**FAST, "alertmanager_url": am, "alertmanager_user": "prometheus"}
        gate = PromotionGateProvider()
        outs = gate.create(props(app.url, options=options, alertmanagerPassword=password)).outs
        assert outs is not None and outs["approvedColor"] == "green"
        assert password not in json.dumps(outs) and "alertmanagerPassword" not in outs
        with pytest.raises(DeploymentError) as caught:  # without the password the check fails
            PromotionGateProvider().create(props(app.url, options=options))
        assert_failed_checks(caught.value, {"monitoring.alertmanager"})
