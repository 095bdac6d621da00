"""Stack files as the engine hands them to the program: `{key: JSON string}` and the secret keys.

`secure:` leaves become stand-ins (the offline render has no passphrase), and a secret the stack
would set with `pulumi config set --secret` gets one, so the program sees every secret it reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "paper-trading"


def _secure_to_standin(value: Any, path: str) -> tuple[Any, bool]:
    """Replace `{secure: ...}` leaves by stand-ins; say whether any was found."""
    if isinstance(value, dict) and set(value) == {"secure"}:
        return f"secret:{path}", True
    if isinstance(value, dict):
        out, found = {}, False
        for key, item in value.items():
            out[key], nested = _secure_to_standin(item, f"{path}.{key}")
            found = found or nested
        return out, found
    if isinstance(value, list):
        items = [_secure_to_standin(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return [v for v, _ in items], any(f for _, f in items)
    return value, False


def _with_standins(key: str, value: Any) -> tuple[Any, bool]:
    """Add stand-ins for the secrets a stack sets with `pulumi config set --secret`."""
    from settings import SECRET_PATHS

    added = False
    for path in SECRET_PATHS:
        if path[0] != key or len(path) < 3 or path[-1] not in ("apiKey",):
            continue
        parent = value
        for part in path[1:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path[-1] not in parent:
            parent[path[-1]] = f"secret:{'.'.join(path)}"
            added = True
    return value, added


def stack_config(stack: str, root: Path = ROOT) -> tuple[dict[str, str], list[str]]:
    """`Pulumi.<stack>.yaml` as the engine hands it to the program: JSON strings, secret keys."""
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no stack file {path.name} in {root}")
    return stack_config_file(path)


def stack_config_file(path: Path) -> tuple[dict[str, str], list[str]]:
    """A stack file's `config:` as the engine hands it to the program."""
    if not path.is_file():
        raise FileNotFoundError(f"no stack file {path}")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    document = yaml.load(path.read_text(), Loader=loader) or {}
    if not isinstance(document, dict) or not isinstance(document.get("config") or {}, dict):
        raise ValueError(f"{path}: expected a mapping with a `config:` mapping")
    values = document.get("config") or {}
    # Pulumi marks secrecy per top-level key, so a plain leaf next to a `secure:` one would arrive
    # as a secret: read as written, every secret key must be `secure:`.
    from settings import ConfigError, plain_secret_leaves

    problems = plain_secret_leaves(values, path.name)
    if problems:
        raise ConfigError(problems)
    config: dict[str, str] = {}
    secret_keys: list[str] = []
    for full_key, value in values.items():
        value, secret = _secure_to_standin(value, full_key.split(":", 1)[-1])
        if full_key.startswith(f"{PROJECT}:"):
            value, added = _with_standins(full_key.split(":", 1)[1], value)
            secret = secret or added
        config[full_key] = value if isinstance(value, str) else json.dumps(value)
        if secret:
            secret_keys.append(full_key)
    return config, secret_keys


def stack_names(root: Path = ROOT, target: str | None = "docker") -> list[str]:
    """The committed stacks deploying to `target` (`paper-trading:target`, `docker` when unset); None: all."""
    names = []
    for path in sorted(root.glob("Pulumi.*.yaml")):
        document = yaml.safe_load(path.read_text()) or {}
        config = document.get("config") if isinstance(document, dict) else None
        stack_target = (config or {}).get(f"{PROJECT}:target", "docker")
        if target is None or stack_target == target:
            names.append(path.name[len("Pulumi."):-len(".yaml")])
    return names


# --------------------------------------------------------------------------- evaluation
