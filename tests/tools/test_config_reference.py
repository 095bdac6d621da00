"""The config reference tells the truth about what a stack file must set (issue 13, items 10 and 11).

Every row of the generated table is checked against the models themselves: a key the table calls
required is refused, by name, when a stack file leaves it out; any other key may be left out and
then takes exactly the default the table shows. Nothing here lists keys by hand.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from settings import ConfigError, Settings, parse_settings
from tools.config_reference import ROOT, _shown, rows, table
from tools.render import stack_config

ROWS = list(rows(Settings))


def _plain(value: Any) -> Any:
    """A model dump as a stack file would hold it: secrets revealed, tuples as lists."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _full_tree(stack: str = "prod") -> dict[str, Any]:
    """A stack with every key spelt out (what its settings resolve to)."""
    config, secrets = stack_config(stack)
    raw = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("paper-trading:")}
    settings = parse_settings(raw, frozenset(k.split(":", 1)[1] for k in secrets))
    tree = _plain(settings.model_dump(by_alias=True))
    assert isinstance(tree, dict)
    return tree


FULL = _full_tree()
#: The `swarm` keys are exercised on the swarm lab stack (the prod stack has no `swarm` object).
FULL_SWARM = _full_tree("swarmlab")


def _base(key: str) -> dict[str, Any]:
    return FULL_SWARM if key.startswith("swarm.") else FULL


def _parse(tree: dict[str, Any]) -> Settings:
    raw = {key: json.dumps(value) for key, value in tree.items()}
    return parse_settings(raw, frozenset(raw))  # every key stored as a secret: only the schema speaks


def _without(path: list[str]) -> dict[str, Any]:
    tree = copy.deepcopy(_base(".".join(path)))
    node = tree
    for part in path[:-1]:
        node = node[part]
    assert isinstance(node, dict) and path[-1] in node, path
    del node[path[-1]]
    return tree


def _value(settings: BaseModel, path: list[str]) -> Any:
    node: Any = settings
    for part in path:
        field = next(name for name, f in type(node).model_fields.items() if (f.alias or name) == part)
        node = getattr(node, field)
    return node


def _get(tree: dict[str, Any], path: list[str]) -> Any:
    node: Any = tree
    for part in path:
        node = node[part]
    return node


def test_table_has_both_kinds_of_required() -> None:
    """The checks below are not vacuous: some keys are always required, some only with their object."""
    defaults = [default for _, _, default, _ in ROWS]
    assert "required" in defaults
    assert any(d.startswith("required with `") for d in defaults)
    assert sum(1 for d in defaults if not d.startswith("required")) > 50


@pytest.mark.parametrize(
    "key,default", [(key, default) for key, _, default, _ in ROWS if default.startswith("required")],
    ids=[key for key, _, default, _ in ROWS if default.startswith("required")],
)
def test_a_required_key_left_out_is_refused_by_name(key: str, default: str) -> None:
    if default != "required":
        # "required with `x`": the base stack sets x, so the key is required here.
        owner = default.split("`")[1]
        assert _get(_base(key), owner.split(".")) is not None, f"{owner} must be set to exercise {key}"
    with pytest.raises(ConfigError) as caught:
        _parse(_without(key.split(".")))
    assert any(p.startswith(f"paper-trading:{key}: ") for p in caught.value.problems), caught.value.problems


@pytest.mark.parametrize(
    "key,default", [(key, default) for key, _, default, _ in ROWS if not default.startswith("required")],
    ids=[key for key, _, default, _ in ROWS if not default.startswith("required")],
)
def test_an_optional_key_left_out_takes_the_default_shown(key: str, default: str) -> None:
    path = key.split(".")
    settings = _parse(_without(path))
    value = _value(settings, path)
    if isinstance(value, BaseModel):
        assert default == "", f"{key}: an object's row shows no default"
        return
    assert _shown(value) == default, f"{key}: left out it is {value!r}, the table says {default or 'unset'}"


def test_a_partly_set_object_keeps_its_other_defaults() -> None:
    """The issue's examples: `app.limits.memoryMb` and `proxy.apiRateLimit.*` are not required."""
    tree = copy.deepcopy(FULL)
    tree["app"] = {"limits": {"cpus": 2}}
    tree["proxy"] = {"apiRateLimit": {"burst": 80}}
    settings = _parse(tree)
    assert (settings.app.limits.memory_mb, settings.app.limits.cpus) == (512, 2.0)
    assert (settings.proxy.api_rate_limit.rate_per_second, settings.proxy.api_rate_limit.burst) == (20, 80)
    assert settings.proxy.auth_rate_limit.burst == 5


def test_a_set_value_still_wins_and_is_still_checked() -> None:
    tree = copy.deepcopy(FULL)
    tree["app"] = {"limits": {"memoryMb": 8}}
    with pytest.raises(ConfigError) as caught:
        _parse(tree)
    assert caught.value.problems == ["paper-trading:app.limits.memoryMb: must be at least 16"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.config_reference", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )


def test_cli_help_prints_usage_and_writes_nothing() -> None:
    before = (ROOT / "README.md").stat().st_mtime_ns
    result = _cli("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m tools.config_reference")
    assert "--write" in result.stdout
    assert (ROOT / "README.md").stat().st_mtime_ns == before


def test_cli_refuses_an_unknown_option_by_name() -> None:
    result = _cli("--wirte")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "unrecognized arguments: --wirte" in result.stderr.splitlines()[-1]


def test_cli_without_options_prints_the_table() -> None:
    result = _cli()
    assert result.returncode == 0
    assert result.stdout == table()
