"""The rules that keep the app on paper: trading mode, read-only exchange keys, app labels.

Each `check_*` reads only the props it needs (so an unrelated unknown, such as an uploaded
secret's content at preview, never trips it) and reports every problem it finds.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import urlsplit

from pulumi_policy import ReportViolation, ResourceValidationArgs

from contract import COLOR_LABEL, ROLE_LABEL, SERVICE_LABEL

from . import settings
from .props import (
    COLORS,
    CONTAINER,
    as_list,
    as_str,
    envs,
    field,
    image_repository,
    is_image_id,
    labels,
    squash,
    strings,
)

REQUIRED_ENVS = {"PAPER_TRADING_MODE": "true", "ALLOW_REAL_TRADES": "false"}
COLOR_ENV = "DEPLOYMENT_COLOR"
# Squashed fragments of names that would switch trading mode under another spelling: either
# one of these alone, or TRAD(E|ING) next to a word that turns something on.
_MODE_WORDS = ("PAPERTRAD", "REALTRAD", "LIVETRAD", "PAPERMODE", "LIVEMODE", "REALMONEY", "DRYRUN",
               "SIMULAT", "SANDBOXMODE")
_SWITCH_WORDS = ("MODE", "ENABLE", "ALLOW", "PERMIT", "LIVE", "REAL", "PAPER", "CAN")
_CANONICAL = {squash(k) for k in (*REQUIRED_ENVS, COLOR_ENV)}
_CREDENTIAL_WORDS = ("KEY", "SECRET", "PASSPHRASE", "TOKEN", "CREDENTIAL", "PASSWORD")
_CAPABILITY_WORDS = ("WITHDRAW", "TRANSFER")
_PERMISSION_WORDS = ("PERMISSION", "SCOPE")
_ENDPOINT_WORDS = ("URL", "HOST", "ENDPOINT", "DOMAIN")
_BAD_PERMISSION_VALUES = ("TRADE", "TRADING", "WITHDRAW", "TRANSFER", "WRITE", "FULL", "ADMIN")
_NON_ALNUM = re.compile(r"[^A-Z0-9]+")
# The scheme is bounded: an unbounded run made findall quadratic on long base64-like env values,
# and a longer "scheme" still matches from its last 32 characters, so no URL is missed.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s,;'\"]+")


def _say(report: ReportViolation, message: str) -> None:
    report(message, None)


# --------------------------------------------------------------------------- paper-trading-mode


def _mode_like(key: str) -> bool:
    s = squash(key)
    if s in _CANONICAL:
        return False
    return any(word in s for word in _MODE_WORDS) or ("TRAD" in s and any(w in s for w in _SWITCH_WORDS))


def check_paper_trading_mode(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """App containers: PAPER_TRADING_MODE=true and ALLOW_REAL_TRADES=false, once, unshadowed."""
    if args.resource_type != CONTAINER:
        return
    found = labels(args.props)
    roles = found.get(ROLE_LABEL) or []
    if "app" not in roles:
        return
    if len(roles) != 1:
        _say(report, f"label {ROLE_LABEL} is set {len(roles)} times; it must be set once")
    pairs = envs(args.props)
    for name, wanted in REQUIRED_ENVS.items():
        values = [value for key, value in pairs if key == name]
        if len(values) != 1:
            _say(report, f"{name}={wanted} must be set exactly once (found {len(values)} entries)")
        elif values[0] != wanted:
            _say(report, f"{name} is {values[0]!r}; it must be {wanted!r}")
        for key, value in pairs:
            if key != name and squash(key) == squash(name):
                _say(report, f"env {key!r}={value!r} is another spelling of {name} and could override it")
    for key, value in pairs:
        if _mode_like(key):
            _say(report, f"env {key}={value!r} could switch the trading mode; only "
                         "PAPER_TRADING_MODE and ALLOW_REAL_TRADES may say it")
    colors = found.get(COLOR_LABEL) or []
    color = colors[0] if len(colors) == 1 else None
    if color not in COLORS:
        _say(report, f"label {COLOR_LABEL} must be set once to blue or green (found {colors})")
    declared = [value for key, value in pairs if key == COLOR_ENV]
    if len(declared) != 1 or declared[0] != color:
        _say(report, f"{COLOR_ENV} must be set exactly once to the {COLOR_LABEL} label "
                     f"{color!r} (found {declared})")
    for key, value in pairs:
        if key != COLOR_ENV and squash(key) == squash(COLOR_ENV):
            _say(report, f"env {key!r}={value!r} is another spelling of {COLOR_ENV}")
    for part in strings(args.props, "command") + strings(args.props, "entrypoints"):
        if any(word in squash(part) for word in _MODE_WORDS):
            _say(report, f"command/entrypoint {part!r} mentions the trading mode; it could override the env")
    for path in _upload_files(args):
        base = posixpath.basename(path)
        if base.startswith(".env") or base.endswith(".env"):
            _say(report, f"upload {path}: an env file can override PAPER_TRADING_MODE; use envs")


def _upload_files(args: ResourceValidationArgs) -> list[str]:
    files: list[str] = []
    for i, upload in enumerate(as_list(field(args.props, "uploads"), "uploads")):
        path = as_str(field(upload, "file", f"uploads.{i}"), f"uploads.{i}.file", optional=False)
        assert path is not None
        files.append(path)
    return files


def _paths(args: ResourceValidationArgs) -> list[str]:
    """Every container-side and host-side path a container gets: uploads, volumes, mounts."""
    paths = _upload_files(args)
    for i, volume in enumerate(as_list(field(args.props, "volumes"), "volumes")):
        for key in ("containerPath", "hostPath"):
            value = as_str(field(volume, key, f"volumes.{i}"), f"volumes.{i}.{key}")
            if value:
                paths.append(value)
    for i, mount in enumerate(as_list(field(args.props, "mounts"), "mounts")):
        for key in ("target", "source"):
            value = as_str(field(mount, key, f"mounts.{i}"), f"mounts.{i}.{key}")
            if value:
                paths.append(value)
    return paths


# --------------------------------------------------------------------------- read-only-exchange-keys


def _exchange_of(key: str, exchanges: Iterable[str]) -> str | None:
    """`BINANCE` for `BINANCE_API_KEY_FILE` (or `binance-api-key`): the exchange an env belongs to."""
    return _exchange_of_cached(key, tuple(exchanges))


@lru_cache(maxsize=8192)
def _exchange_of_cached(key: str, exchanges: tuple[str, ...]) -> str | None:
    normalized = _NON_ALNUM.sub("_", key.strip().upper())
    for name in exchanges:
        if normalized.startswith(squash(name) + "_"):
            return squash(name)
    return None


def _file_exchange(path: str, exchanges: Iterable[str]) -> str | None:
    """`BINANCE` for `/run/secrets/binance_api_key`: a word of the file name is an exchange."""
    base = posixpath.basename(path.rstrip("/")).lower()
    words = set(re.split(r"[^a-z0-9]+", base))
    for name in exchanges:
        if name.lower() in words or base.startswith(name.lower()):
            return squash(name)
    return None


def _is_credential_name(name: str) -> bool:
    return any(word in squash(name) for word in _CREDENTIAL_WORDS)


def _host_allowed(url: str, allowed: Iterable[str]) -> tuple[bool, str]:
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
    except ValueError:
        return False, url
    ok = parts.scheme.lower() in ("https", "wss") and host in {a.lower() for a in allowed}
    return ok, host


def check_read_only_exchange_keys(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Exchange credentials: READ_ONLY, sandbox, allow-listed endpoints, no trade-capable names."""
    if args.resource_type != CONTAINER:
        return
    cfg = settings.config(args, "read-only-exchange-keys")
    exchanges = [str(e) for e in cfg["exchanges"]]
    allowed = [str(h) for h in cfg["allowedEndpoints"]]
    require_sandbox = bool(cfg["requireSandbox"])
    pairs = envs(args.props)
    with_credentials: dict[str, str] = {}  # squashed exchange -> what revealed the credential
    settings_of: dict[str, list[tuple[str, str | None]]] = {}
    for key, value in pairs:
        exchange = _exchange_of(key, exchanges)
        if exchange is None:
            continue
        settings_of.setdefault(exchange, []).append((key, value))
        if _is_credential_name(squash(key)[len(exchange):]):
            with_credentials.setdefault(exchange, f"env {key}")
    for path in _paths(args):
        base = posixpath.basename(path.rstrip("/"))
        # The project's own name ("paper-trading") announces nothing.
        low = re.sub(r"paper[-_.]?trad(e|ing)", "", base.lower())
        exchange = _file_exchange(path, exchanges)
        if exchange is not None and _is_credential_name(base):
            with_credentials.setdefault(exchange, f"file {path}")
        if any(word.lower() in low for word in _CAPABILITY_WORDS) or (
            re.search(r"trad(e|ing)", low) and (exchange is not None or _is_credential_name(low))
        ):
            _say(report, f"file {path}: its name announces trade/withdraw/transfer capability")

    # Names and values that announce a trading-capable key.
    for key, value in pairs:
        s = squash(key)
        exchange = _exchange_of(key, exchanges)
        named_capability = any(word in s for word in _CAPABILITY_WORDS) or (
            "TRAD" in s and s not in _CANONICAL
            and (exchange is not None or _is_credential_name(key) or any(w in s for w in _PERMISSION_WORDS)
                 or any(w in s for w in _SWITCH_WORDS))
        )
        if named_capability:
            _say(report, f"env {key}: its name announces trade/withdraw/transfer capability")
        if value is None:
            continue
        if (exchange is not None or any(w in s for w in _PERMISSION_WORDS)) and "://" not in value:
            upper = squash(value)
            if upper != "READONLY" and any(squash(w) in upper for w in _BAD_PERMISSION_VALUES):
                _say(report, f"env {key}={value!r} announces more than read-only access")
        if (exchange is not None and "://" not in value and any(w in s for w in _ENDPOINT_WORDS)
                and value.strip().lower() not in {a.lower() for a in allowed}):
                _say(report, f"env {key}={value!r} is not an allowed exchange endpoint {sorted(allowed)}")
        for url in _URL.findall(value):
            ok, host = _host_allowed(url, allowed)
            mentions_exchange = any(squash(name) in squash(host) for name in exchanges)
            if not ok and (exchange is not None or mentions_exchange):
                _say(report, f"env {key}: endpoint {url!r} is not an allowed exchange endpoint "
                             f"(https/wss to one of {sorted(allowed)})")

    for exchange, entries in sorted(settings_of.items()):
        _check_exchange(report, exchange, entries, exchange in with_credentials, require_sandbox)
    for exchange, source in sorted(with_credentials.items()):
        if exchange not in settings_of:
            _check_exchange(report, exchange, [], True, require_sandbox, source)


def _check_exchange(
    report: ReportViolation, exchange: str, entries: list[tuple[str, str | None]],
    has_credentials: bool, require_sandbox: bool, source: str = "",
) -> None:
    wanted = {"PERMISSIONS": "READ_ONLY"}
    if require_sandbox:
        wanted["SANDBOX"] = "true"
    for suffix, value in wanted.items():
        name = f"{exchange}_{suffix}"
        exact = [v for k, v in entries if k == name]
        variants = [k for k, _ in entries if k != name and squash(k) == squash(name)]
        for key in variants:
            _say(report, f"env {key!r} is another spelling of {name}; set {name}={value} once")
        if exact and any(v != value for v in exact):
            _say(report, f"{name} must be {value!r} (found {exact})")
        elif has_credentials and len(exact) != 1:
            why = f" ({source})" if source else ""
            _say(report, f"{exchange} credentials{why} need {name}={value} exactly once (found {len(exact)})")
    if has_credentials:
        urls = [v for k, v in entries if squash(k) == squash(f"{exchange}_BASE_URL")]
        if len(urls) != 1:
            _say(report, f"{exchange} credentials need {exchange}_BASE_URL set exactly once to an "
                         f"allowed endpoint (found {len(urls)})")
        elif urls[0] is None or "://" not in urls[0]:
            _say(report, f"{exchange}_BASE_URL must be an https URL (found {urls[0]!r})")


# --------------------------------------------------------------------------- app-containers-labelled


def check_app_containers_labelled(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """A container that looks like the app (image, envs, exchange keys, labels) carries the app labels."""
    if args.resource_type != CONTAINER:
        return
    cfg = settings.config(args, "app-containers-labelled")
    app_images = {image_repository(str(i)) for i in cfg["appImages"]}
    exchanges = [str(e) for e in cfg["exchanges"]]
    image = as_str(field(args.props, "image"), "image", optional=False)
    assert image is not None
    reasons: list[str] = []
    if is_image_id(image):
        _say(report, f"image {image!r} is a bare ID: no policy can tell whether it is the app; "
                     "use the repository reference")
        reasons.append("image by ID")
    elif image_repository(image) in app_images:
        reasons.append(f"runs the app image {image}")
    for key, _ in envs(args.props):
        s = squash(key)
        if s in _CANONICAL or _mode_like(key):
            reasons.append(f"sets {key}")
        elif _exchange_of(key, exchanges) is not None:
            reasons.append(f"receives exchange setting {key}")
    for path in _paths(args):
        if _file_exchange(path, exchanges) is not None:
            reasons.append(f"receives exchange file {path}")
    found = labels(args.props)
    if COLOR_LABEL in found:
        reasons.append(f"has label {COLOR_LABEL}")
    for svc in found.get(SERVICE_LABEL) or []:
        if squash(svc).startswith("APP"):
            reasons.append(f"has {SERVICE_LABEL}={svc}")
    if not reasons:
        return
    why = "; ".join(dict.fromkeys(reasons))
    if (found.get(ROLE_LABEL) or []) != ["app"]:
        _say(report, f"this container {why}, so it must carry {ROLE_LABEL}=app exactly once "
                     f"(found {found.get(ROLE_LABEL)})")
    colors = found.get(COLOR_LABEL) or []
    if len(colors) != 1 or colors[0] not in COLORS:
        _say(report, f"this container {why}, so it must carry {COLOR_LABEL}=blue|green exactly once "
                     f"(found {colors})")
