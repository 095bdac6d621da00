"""The SDKs the program runs with are the ones the engine is built for and CI tests."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, spec = re.match(r"^([A-Za-z0-9_.-]+)(.*)$", line).groups()  # type: ignore[union-attr]
            pins[name.lower()] = spec.strip()
    return pins


def _versions_env() -> dict[str, str]:
    text = (ROOT / "tools" / "engine" / "versions.env").read_text()
    return dict(re.findall(r"^([A-Z_]+)=(\S+)$", text, re.M))


def test_each_provider_sdk_asks_for_the_provider_the_engine_builds() -> None:
    pins, engine = _pins(), _versions_env()
    assert pins["pulumi-docker"] == f"=={engine['DOCKER_PROVIDER_VERSION']}"
    assert pins["pulumi-random"] == f"=={engine['RANDOM_PROVIDER_VERSION']}"


def test_the_installed_sdks_are_inside_the_pinned_ranges() -> None:
    """What CI installed is what the ranges allow (the offline render and policy check use SDK internals)."""
    pins = _pins()
    for name in ("pulumi", "pulumi-policy"):
        low, high = re.match(r"^>=([0-9.]+),<([0-9.]+)$", pins[name]).groups()  # type: ignore[union-attr]
        installed = tuple(int(p) for p in version(name).split(".")[:3])
        floor, ceiling = (tuple(int(p) for p in bound.split(".")) for bound in (low, high))
        assert floor <= installed < ceiling, (name, installed)
    assert version("pulumi_docker") == pins["pulumi-docker"].removeprefix("==")
