"""A secret key stored in plain text is refused even when a sibling is `secure:` (issue 13, item 12).

Pulumi marks secrecy per top-level key: once any path under `paper-trading:exchanges` is set with
`--secret`, the whole object reaches the program as a secret, plain leaves included. So the program
(`__main__.py` through `load_settings`) and the offline render also read `Pulumi.<stack>.yaml` as
written and refuse every key the models type as a secret that is not stored `secure:`.

The program is run for real (the repository's `__main__.py` under the SDK's mock runtime) from a
scratch project folder that holds the stack file under test; nothing is registered when it refuses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from settings import (
    SECRET_PATHS,
    ConfigError,
    Settings,
    plain_secret_leaves,
    read_stack_file,
    stack_file_path,
)
from tools import render, stack_files
from tools.config_reference import rows
from tools.render import ROOT, Resource, evaluate, stack_names

PLAIN = "PLAINTEXT-do-not-print-7f3a"
SECURE = {"secure": "v1:AAAAencrypted"}
BASE = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]


def _stack(tmp_path: Path, name: str, **objects: Any) -> Path:
    """A project folder holding the real program and `Pulumi.<name>.yaml` = prod + `objects`."""
    for entry in ("__main__.py", "Pulumi.yaml", "stack", "release", "validation"):
        (tmp_path / entry).symlink_to(ROOT / entry)
    config = {**BASE, **{f"paper-trading:{key}": value for key, value in objects.items()}}
    path = tmp_path / f"Pulumi.{name}.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return path


def _as_engine_gives(path: Path) -> tuple[dict[str, str], list[str]]:
    """What the engine hands the program: decrypted JSON per top-level key, secret per top-level key."""
    values = yaml.safe_load(path.read_text())["config"]
    config: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in values.items():
        value, secret = stack_files._secure_to_standin(value, key.split(":", 1)[1])
        config[key] = value if isinstance(value, str) else json.dumps(value)
        if secret:
            secret_keys.append(key)
    return config, secret_keys


def _run_program(path: Path) -> tuple[ConfigError | None, list[Resource]]:
    stack = path.name[len("Pulumi."):-len(".yaml")]
    config, secret_keys = _as_engine_gives(path)
    records: list[Resource] = []
    try:
        evaluate(stack, config=config, secret_keys=secret_keys, root=path.parent, records=records)
    except ConfigError as exc:
        return exc, records
    return None, records


def _exchange(api_key: Any, api_secret: Any = None) -> dict[str, Any]:
    entry = {"apiKey": api_key, "sandbox": True, "permissions": "READ_ONLY"}
    if api_secret is not None:
        entry["apiSecret"] = api_secret
    return entry


# (case, objects set in the stack file, the key the refusal must name)
CASES = [
    ("kucoin-plain-after-binance-secure",
     {"exchanges": {"binance": _exchange(SECURE), "kucoin": _exchange(PLAIN)}}, "exchanges.kucoin.apiKey"),
    ("binance-plain-before-kucoin-secure",
     {"exchanges": {"binance": _exchange(PLAIN), "kucoin": _exchange(SECURE)}}, "exchanges.binance.apiKey"),
    ("secret-plain-after-key-secure",
     {"exchanges": {"binance": _exchange(SECURE, PLAIN)}}, "exchanges.binance.apiSecret"),
    ("key-plain-before-secret-secure",
     {"exchanges": {"binance": _exchange(PLAIN, SECURE)}}, "exchanges.binance.apiKey"),
    ("kucoin-passphrase-plain",
     {"exchanges": {"kucoin": {**_exchange(SECURE, SECURE), "passphrase": PLAIN}}},
     "exchanges.kucoin.passphrase"),
    ("grafana-password-plain-webhook-secure",
     {"monitoring": {"grafana": {"adminPassword": PLAIN}, "alertmanager": {"webhookUrl": SECURE}}},
     "monitoring.grafana.adminPassword"),
    ("webhook-plain-grafana-secure",
     {"monitoring": {"grafana": {"adminPassword": SECURE},
                     "alertmanager": {"webhookUrl": "https://" + PLAIN}}},
     "monitoring.alertmanager.webhookUrl"),
    ("database-url-plain-exchange-secure",
     {"database": {"url": "postgres://u:" + PLAIN + "@db/x"},
      "exchanges": {"binance": _exchange(SECURE)}}, "database.url"),
]


@pytest.mark.parametrize("case,objects,key", CASES, ids=[c[0] for c in CASES])
def test_program_refuses_a_plain_secret_leaf(
    tmp_path: Path, case: str, objects: dict[str, Any], key: str,
) -> None:
    error, records = _run_program(_stack(tmp_path, "t", **objects))
    assert error is not None, f"{case}: a plain {key} was accepted"
    named = [p for p in error.problems if p.startswith(f"paper-trading:{key}: ")]
    assert len(named) == 1, error.problems
    assert "Pulumi.t.yaml holds it in plain text" in named[0]
    assert f"`pulumi config set --secret --path {key} ...`" in named[0]
    assert PLAIN not in str(error)
    assert records == [], f"{len(records)} resources registered before the refusal"


@pytest.mark.parametrize("case,objects,key", CASES, ids=[c[0] for c in CASES])
def test_render_refuses_a_plain_secret_leaf(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, objects: dict[str, Any], key: str,
) -> None:
    path = _stack(tmp_path, "t", **objects)
    out = tmp_path / "render"
    assert render.main(["--stack-file", str(path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"paper-trading:{key}: is a secret but Pulumi.t.yaml holds it in plain text" in err
    assert PLAIN not in err and "Traceback" not in err
    assert not out.exists(), "nothing is written for a refused stack file"


def test_every_secret_stored_secure_is_accepted(tmp_path: Path) -> None:
    objects = {
        "exchanges": {"binance": _exchange(SECURE, SECURE), "kucoin": {**_exchange(SECURE, SECURE),
                                                                      "passphrase": SECURE}},
        "monitoring": {**BASE["paper-trading:monitoring"], "grafana": {"adminPassword": SECURE},
                       "alertmanager": {"webhookUrl": SECURE}},
    }
    error, records = _run_program(_stack(tmp_path, "t", **objects))
    assert error is None, error
    assert len(records) > 20


def test_a_whole_object_stored_secure_is_accepted() -> None:
    """`pulumi config set --secret exchanges '{...}'` encrypts the object: every leaf inside is secret."""
    assert plain_secret_leaves({"paper-trading:exchanges": SECURE}, "Pulumi.t.yaml") == []


def test_without_a_stack_file_the_check_is_skipped(tmp_path: Path) -> None:
    """Config from elsewhere (no `Pulumi.<stack>.yaml`): only the engine's per-key secrecy is known."""
    path = _stack(tmp_path, "t", exchanges={"binance": _exchange(SECURE), "kucoin": _exchange(PLAIN)})
    moved = tmp_path / "elsewhere.yaml"
    path.rename(moved)
    config, secret_keys = _as_engine_gives(moved)
    records: list[Resource] = []
    evaluate("t", config=config, secret_keys=secret_keys, root=tmp_path, records=records)
    assert len(records) > 20, "without a stack file the program runs as before"


def test_the_checked_paths_are_the_models_secrets() -> None:
    """Derived from the models: exactly the keys the config reference marks secret."""
    table = {tuple(key.split(".")) for key, _, _, secret in rows(Settings) if secret == "yes"}
    assert set(SECRET_PATHS) == table
    assert ("exchanges", "kucoin", "apiKey") in SECRET_PATHS


@pytest.mark.parametrize("stack", stack_names())
def test_committed_stacks_pass(stack: str) -> None:
    path = stack_file_path(ROOT, stack)
    assert path == ROOT / f"Pulumi.{stack}.yaml"
    assert plain_secret_leaves(read_stack_file(path), path.name) == []


def test_stack_config_dir_is_honoured(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: x\nruntime: python\nstackConfigDir: stacks\n")
    assert stack_file_path(tmp_path, "org/x/prod") == tmp_path / "stacks" / "Pulumi.prod.yaml"


def test_an_unreadable_stack_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "Pulumi.t.yaml"
    bad.write_text("config: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        read_stack_file(bad)
    assert caught.value.problems[0].startswith(f"{bad}: cannot read the stack file")
