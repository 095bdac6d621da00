"""Fail-closed readers for resource props as a policy receives them.

The engine hands a policy its props wrapped in pulumi_policy's unknown-checking proxy:
mappings and lists are `collections.abc` proxies (not `dict`/`list`), and reading a
value that is unknown at preview raises `UnknownValueError`. These readers keep that
contract even for plain dicts (they check the sentinels themselves), and turn a value of
the wrong shape into `Malformed`, so a rule never silently reads "absent" where a value
was really unreadable. `rules.fail_closed` turns both into violations.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
    UnknownValueError,
)

from contract import SERVICE_LABEL

SENTINELS = frozenset({
    UNKNOWN_BOOLEAN_VALUE, UNKNOWN_NUMBER_VALUE, UNKNOWN_STRING_VALUE, UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE, UNKNOWN_ARCHIVE_VALUE, UNKNOWN_OBJECT_VALUE,
})

CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
NETWORK = "docker:index/network:Network"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"

COLORS = ("blue", "green")


class Malformed(Exception):
    """A prop has a shape no valid resource can have (for example a string where a list belongs)."""


def is_unknown(value: Any) -> bool:
    return isinstance(value, str) and value in SENTINELS


def known(value: Any, path: str) -> Any:
    """`value`, or `UnknownValueError` naming `path` when it is an unknown sentinel."""
    if is_unknown(value):
        raise UnknownValueError(value, path.split("."))
    return value


def field(props: Any, key: str, path: str = "") -> Any:
    """`props[key]`, None when absent; unknown values raise (through the proxy or here)."""
    where = f"{path}.{key}" if path else key
    if not isinstance(props, Mapping):
        raise Malformed(f"{path or 'props'} is not an object")
    try:
        value = props[key]
    except KeyError:
        return None
    return known(value, where)


def as_list(value: Any, path: str) -> list[Any]:
    """A list prop (None -> []), each element checked for unknowns."""
    known(value, path)
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise Malformed(f"{path} must be a list")
    return [known(value[i], f"{path}.{i}") for i in range(len(value))]


def as_map(value: Any, path: str) -> Mapping[str, Any]:
    known(value, path)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise Malformed(f"{path} must be an object")
    return value


def as_str(value: Any, path: str, *, optional: bool = True) -> str | None:
    known(value, path)
    if value is None:
        if optional:
            return None
        raise Malformed(f"{path} is required")
    if not isinstance(value, str):
        raise Malformed(f"{path} must be a string")
    return value


def as_bool(value: Any, path: str) -> bool | None:
    known(value, path)
    if value is None or isinstance(value, bool):
        return value
    raise Malformed(f"{path} must be true or false, not {value!r}")


def as_number(value: Any, path: str) -> float | None:
    known(value, path)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Malformed(f"{path} must be a number, not {value!r}")
    return float(value)


@lru_cache(maxsize=8192)
def squash(key: str) -> str:
    """Spelling-insensitive form of a name: `paper-trading_Mode ` -> `PAPERTRADINGMODE`."""
    return re.sub(r"[^A-Z0-9]", "", key.upper())


def labels(props: Any) -> dict[str, list[str]]:
    """Container/volume labels as `{label: [values...]}` (a list, so duplicates show)."""
    found: dict[str, list[str]] = {}
    raw = field(props, "labels")
    if isinstance(raw, Mapping):  # tolerate the map form some providers use
        for key in raw:
            found.setdefault(str(key), []).append(str(known(raw[key], f"labels.{key}")))
        return found
    for i, entry in enumerate(as_list(raw, "labels")):
        label = as_str(field(entry, "label", f"labels.{i}"), f"labels.{i}.label", optional=False)
        value = as_str(field(entry, "value", f"labels.{i}"), f"labels.{i}.value", optional=False)
        assert label is not None and value is not None
        found.setdefault(label, []).append(value)
    return found


def single_label(found: Mapping[str, list[str]], key: str) -> str | None:
    values = found.get(key) or []
    return values[0] if len(values) == 1 else None


def envs(props: Any) -> list[tuple[str, str | None]]:
    """`envs` as (key, value) pairs in order; value None for an entry without `=`."""
    pairs: list[tuple[str, str | None]] = []
    for i, entry in enumerate(as_list(field(props, "envs"), "envs")):
        text = as_str(entry, f"envs.{i}", optional=False)
        assert text is not None
        key, sep, value = text.partition("=")
        pairs.append((key, value if sep else None))
    return pairs


def strings(props: Any, key: str) -> list[str]:
    out: list[str] = []
    for i, item in enumerate(as_list(field(props, key), key)):
        text = as_str(item, f"{key}.{i}", optional=False)
        assert text is not None
        out.append(text)
    return out


def service(props: Any) -> str | None:
    return single_label(labels(props), SERVICE_LABEL)


def image_repository(image: str) -> str:
    """`registry/name:tag@digest` -> normalized `registry/name` (Docker Hub prefixes dropped)."""
    ref = image.strip().lower().split("@", 1)[0]
    head, _, last = ref.rpartition("/")
    if ":" in last:
        last = last.rsplit(":", 1)[0]
    repo = f"{head}/{last}" if head else last
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if repo.startswith(prefix):
            repo = repo[len(prefix):]
    return repo.removeprefix("library/")


def is_image_id(image: str) -> bool:
    """A bare image ID (`sha256:<hex>` or 64 hex chars): pinned, but names no repository."""
    return re.fullmatch(r"(sha256:)?[0-9a-f]{12,64}", image.strip().lower()) is not None
