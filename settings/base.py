"""What every section shares: the project's names, the error, the base model and the checked types.

Each check a config value needs in more than one place is defined here once, as an `Annotated`
type (`Pinned`, `IPv4`, `Hostname`, `Networks`, `PromDuration`); a field that needs the check
is typed with it. The error texts are the ones `parse_settings` reports by config path.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

import pulumi
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

PROJECT = "paper-trading"
Color = Literal["blue", "green"]
COLORS: tuple[Color, Color] = ("blue", "green")


def other_color(color: str) -> Color:
    """The idle color when `color` is live: the one on the preview listener."""
    return "green" if color == "blue" else "blue"


class ConfigError(pulumi.RunError):
    """Raised for invalid stack config; `RunError` makes Pulumi print only the message."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "invalid stack configuration:\n  " + "\n  ".join(problems)
        )


class Model(BaseModel):
    """Base for every config object: camelCase keys, unknown keys rejected, immutable."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        strict=False,
    )

    @model_validator(mode="before")
    @classmethod
    def _keep_nested_defaults(cls, data: Any) -> Any:
        """A partly set object keeps the defaults of the keys it leaves out.

        `app: {limits: {cpus: 2}}` means "512 MiB (the default) and 2 CPUs", not "memoryMb is
        missing": an object's default (e.g. `Limits(memory_mb=512, cpus=1.0)`) is merged under
        what the stack sets, so a key that has a default never has to be set.
        """
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            key = field.alias if field.alias in merged else name
            given = merged.get(key)
            if not isinstance(given, dict):
                continue
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                merged[key] = _under(default.model_dump(by_alias=True), given)
        return merged


def _under(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`given` with `defaults` filled in where it says nothing, object by object."""
    out = dict(given)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _under(value, out[key])
    return out


def image_pin_problem(ref: str, *, latest_in_any_case: bool = False) -> str | None:
    """Why image reference `ref` is not pinned to a tag or digest (or uses `latest`); None if it is.

    The config refuses `latest` as written; the policy pack (policies/hardening.py) also in any case.
    """
    if "@sha256:" in ref:
        return None
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {ref!r} must be pinned to a tag or digest"
    tag = last.rsplit(":", 1)[1]
    if (tag.lower() if latest_in_any_case else tag) in ("", "latest"):
        return f"image {ref!r} must not use the 'latest' tag"
    return None


def _pinned(ref: str) -> str:
    """An image reference must carry an explicit tag or digest, never `latest`."""
    if not ref or any(c.isspace() for c in ref):
        raise ValueError("must be an image reference like repo/name:tag")
    problem = image_pin_problem(ref)
    if problem:
        raise ValueError(problem)
    return ref


def ipv4_address(value: str) -> str:
    """A bind address Docker accepts for a published port."""
    try:
        ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise ValueError("must be an IPv4 address such as 127.0.0.1") from exc
    return value


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")


def _hostname(value: str) -> str:
    if not _HOSTNAME.match(value):
        raise ValueError("must be a DNS name such as paper.example.com (no scheme, port or path)")
    return value


def ip_network(value: str) -> str:
    """An address or CIDR, normalised (`10.0.0.1/8` -> `10.0.0.0/8`, `203.0.113.7` -> `203.0.113.7/32`)."""
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP address or CIDR (e.g. 203.0.113.7 or 10.0.0.0/8)") from exc


def _networks(value: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(ip_network(item) for item in value)


_PROM_DURATION = re.compile(r"^(?:[0-9]+(?:ms|[smhdwy]))+$")
_DURATION_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
                      "w": 7 * 86_400_000, "y": 365 * 86_400_000}


def duration_ms(value: str) -> int:
    """A Prometheus duration (`2m`, `1h30m`, `500ms`) in milliseconds."""
    return sum(int(n) * _DURATION_UNITS_MS[u] for n, u in re.findall(r"([0-9]+)(ms|[smhdwy])", value))


def _prom_duration(value: str) -> str:
    if not _PROM_DURATION.match(value) or duration_ms(value) == 0:
        raise ValueError(f"{value!r} must be a Prometheus duration such as 2m or 1h30m")
    return value


#: An image reference pinned to a tag or digest, never `latest`.
Pinned = Annotated[str, AfterValidator(_pinned)]
#: An IPv4 address to publish ports on.
IPv4 = Annotated[str, AfterValidator(ipv4_address)]
#: A DNS name (no scheme, port or path).
Hostname = Annotated[str, AfterValidator(_hostname)]
#: Addresses or CIDRs, each normalised to a network (`ip_network`); the error names the whole list.
Networks = Annotated[tuple[str, ...], AfterValidator(_networks)]
#: A non-zero Prometheus duration (`2m`, `1h30m`, `500ms`).
PromDuration = Annotated[str, AfterValidator(_prom_duration)]
#: A Prometheus duration of one number and one unit, as Prometheus' scrape and evaluation intervals take.
PromInterval = Annotated[str, Field(pattern=r"^[0-9]+[smh]$")]
