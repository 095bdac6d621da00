"""The release guard's decision and the release record's diff, offline (the proxy read is scripted).

tests/docker/test_release_guard_docker.py reads a real proxy; here `served_color` is fixed so the
case the guard exists for is driven on purpose: traffic moved outside `pulumi up` (an
emergency switch), so the proxy serves a color the stack's outputs do not call live.
"""

from __future__ import annotations

from typing import Any

import pytest

from release import guard as release_guard
from release.guard import ReleaseRecordProvider, problems, served_color


@pytest.mark.parametrize("recorded", ["blue", None])
def test_the_color_the_proxy_serves_is_never_replaced_whatever_the_stack_recorded(
    monkeypatch: pytest.MonkeyPatch, recorded: str | None
) -> None:
    monkeypatch.setattr(release_guard, "served_color", lambda _name, _client=None: "green")
    props = {"proxyContainerName": "pt-proxy", "recordedLive": recorded, "changing": ["green"]}
    [(prop, reason)] = problems(props)
    assert prop == "changing" and "proxy 'pt-proxy' serves green" in reason
    assert "deployment.activeColor=green" in reason
    assert problems({**props, "changing": ["blue"]}) == []


def test_a_proxy_that_is_not_running_serves_nothing() -> None:
    class Stopped:
        status = "exited"

        def get_archive(self, _path: str) -> Any:
            raise AssertionError("a stopped proxy's markers serve no traffic")

    class Client:
        containers = None

        def __init__(self) -> None:
            self.containers = self

        def get(self, _name: str) -> Stopped:
            return Stopped()

    assert served_color("pt-proxy", Client()) is None


@pytest.mark.parametrize("key", ["color", "image", "replicas", "fingerprint"])
def test_a_release_record_changes_with_what_the_color_runs(key: str) -> None:
    olds = {"kind": "paper-trading:release-record", "color": "blue", "image": "a:1", "replicas": 1,
            "fingerprint": "f1"}
    news = {**olds, key: {"color": "green", "image": "a:2", "replicas": 2, "fingerprint": "f2"}[key]}
    assert ReleaseRecordProvider().diff("rec", olds, dict(olds)).changes is False
    assert ReleaseRecordProvider().diff("rec", olds, news).changes is True
