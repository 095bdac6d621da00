"""The whole `paper-trading:` namespace: `Settings`, its cross-section checks, and reading it.

Every key is validated before a single resource is registered: a typo or an unsafe
value stops the program with one message naming every offending key by its config
path. Paper-trading mode, real trades and exchange permissions are typed as literals,
so no value other than the safe one can even be represented.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pulumi
import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator

from .app import AppConfig
from .backup import BackupConfig
from .base import COLORS, PROJECT, ConfigError, Model
from .database import DatabaseConfig
from .deployment import DeploymentConfig
from .errors import config_path, problem
from .exchanges import ExchangesConfig
from .images import Images
from .limits import DatastoreLimits
from .monitoring import MonitoringConfig
from .proxy import ProxyConfig
from .security import SecurityConfig
from .server import ServerConfig
from .swarm import SWARM_NOT_YET, SwarmConfig
from .validation import SKIPPABLE_CHECKS, ValidationConfig
from .workers import WorkersConfig


class Settings(Model):
    """The whole `paper-trading:` namespace."""

    environment: Literal["production", "staging", "development"] = "production"
    paper_trading_mode: Literal[True]
    allow_real_trades: Literal[False]
    name_prefix: str = Field(default="paper-trading", pattern=r"^[a-z][a-z0-9-]{1,30}$")
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    exchanges: ExchangesConfig = ExchangesConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    deployment: DeploymentConfig
    app: AppConfig = AppConfig()
    proxy: ProxyConfig = ProxyConfig()
    images: Images = Images()
    limits: DatastoreLimits = DatastoreLimits()
    backup: BackupConfig = BackupConfig()
    validation: ValidationConfig = ValidationConfig()
    security: SecurityConfig = SecurityConfig()
    workers: WorkersConfig = WorkersConfig()
    #: `docker`: one Docker host (the engine the docker provider reaches). `swarm`: Docker Swarm
    #: services across `swarm.nodes` (docs/swarm.md).
    target: Literal["docker", "swarm"] = "docker"
    swarm: SwarmConfig | None = None

    @model_validator(mode="after")
    def _production_is_tls_only(self) -> Settings:
        if self.environment == "production" and not self.server.ssl.enabled:
            raise ValueError("server.ssl.enabled: production requires TLS")
        ports = [self.proxy.http_port, self.proxy.https_port, self.proxy.preview_port]
        if len(set(ports)) != len(ports):
            raise ValueError("proxy: httpPort, httpsPort and previewPort must differ")
        clash = _port_clash(self)
        if clash:
            raise ValueError(clash)
        for name in self.validation.skip:
            applies = SKIPPABLE_CHECKS[name](self)
            if applies is not None:
                raise ValueError(
                    f"validation.skip: {name!r} applies to this stack ({applies}); it cannot be skipped"
                )
        problem = _swarm_problem(self)
        if problem:
            raise ValueError(problem)
        return self


def _swarm_problem(settings: Settings) -> str | None:
    """Why the `target`/`swarm` pair cannot be deployed, named by key; None when it can."""
    if settings.target == "docker":
        return "swarm: set only with target: swarm" if settings.swarm is not None else None
    if settings.swarm is None:
        return "swarm: is required with target: swarm (the nodes, their endpoints and labels)"
    scale = settings.swarm.autoscale
    for color in COLORS:
        replicas = settings.deployment.color(color).replicas
        if replicas < 2:
            return (f"deployment.{color}.replicas: the swarm target runs each color on at least 2 nodes, "
                    "so at least 2 replicas")
        if scale.enabled and not scale.min_replicas <= replicas <= scale.max_replicas:
            return (f"deployment.{color}.replicas: {replicas} is outside swarm.autoscale's bounds "
                    f"({scale.min_replicas} to {scale.max_replicas})")
    dump = settings.model_dump(by_alias=True)
    for key, what in SWARM_NOT_YET:
        node: Any = dump
        for part in key.split("."):
            node = node[part]
        if node:
            return (f"{key}: the swarm target does not deploy {what} yet (docs/swarm.md); "
                    "set it false to deploy without it")
    return None


def _port_clash(settings: Settings) -> str | None:
    """Two published host ports that would collide on the Docker host, named by key."""
    proxy, mon = settings.proxy, settings.monitoring
    published = [
        ("proxy.httpPort", proxy.public_address, proxy.http_port, True),
        ("proxy.httpsPort", proxy.public_address, proxy.https_port, settings.server.ssl.enabled),
        ("proxy.previewPort", "127.0.0.1", proxy.preview_port, True),
        ("monitoring.prometheus.port", mon.bind_address, mon.prometheus.port, mon.prometheus.enabled),
        ("monitoring.alertmanager.port", mon.bind_address, mon.alertmanager.port, mon.alertmanager.enabled),
        ("monitoring.grafana.port", mon.bind_address, mon.grafana.port, mon.grafana.enabled),
        ("monitoring.logs.port", mon.bind_address, mon.logs.port, mon.logs.enabled),
    ]
    active = [(key, address, port) for key, address, port, on in published if on]
    for i, (key, address, port) in enumerate(active):
        for other, other_address, other_port in active[:i]:
            overlap = address == other_address or "0.0.0.0" in (address, other_address)
            if port == other_port and overlap:
                return f"{key}: host port {port} is already published by {other}"
    return None


def _holds_secret(annotation: Any) -> bool:
    return annotation is SecretStr or any(_holds_secret(a) for a in typing.get_args(annotation))


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _nested_models(a)]


def _secret_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        key = (*prefix, field.alias or name)
        if _holds_secret(field.annotation):
            found.append(key)
        for sub in _nested_models(field.annotation):
            found.extend(_secret_paths(sub, key))
    return found


#: Every key the models type as a secret (`SecretStr`), by config path. Pulumi marks secrecy per
#: top-level key: once any path under `exchanges` is set with `--secret`, the whole object arrives
#: secret, so the program also reads the stack file to see how each of these leaves is stored.
SECRET_PATHS: tuple[tuple[str, ...], ...] = tuple(_secret_paths(Settings))


def _is_secure(node: Any) -> bool:
    return isinstance(node, dict) and set(node) == {"secure"}


def plain_secret_leaves(stored: Mapping[str, Any], source: str) -> list[str]:
    """Problems for secret keys a stack file's `config:` holds in plain text (values never shown).

    `stored` is the file's `config:` mapping as written (`{secure: ...}` for an encrypted value).
    A leaf is fine when it, or an object above it, is stored `secure:`.
    """
    problems: list[str] = []
    for path in SECRET_PATHS:
        node: Any = stored.get(f"{PROJECT}:{path[0]}")
        for part in path[1:]:
            if _is_secure(node) or not isinstance(node, dict):
                break
            node = node.get(part)
        else:
            if node is not None and not _is_secure(node):
                problems.append(
                    f"{PROJECT}:{config_path(path)}: is a secret but {source} holds it in plain text; "
                    f"remove it and set it with `pulumi config set --secret --path {config_path(path)} ...`"
                )
    return problems


def stack_file_path(project_dir: Path, stack: str) -> Path:
    """Where the Pulumi CLI keeps `stack`'s config: `Pulumi.<stack>.yaml`, in `stackConfigDir` if set."""
    folder = project_dir
    project_file = project_dir / "Pulumi.yaml"
    if project_file.is_file():
        project = yaml.safe_load(project_file.read_text()) or {}
        if isinstance(project, dict) and isinstance(project.get("stackConfigDir"), str):
            folder = project_dir / project["stackConfigDir"]
    return folder / f"Pulumi.{stack.rsplit('/', 1)[-1]}.yaml"


def read_stack_file(path: Path) -> Mapping[str, Any]:
    """A stack file's `config:` mapping as written; a `ConfigError` naming the file if unreadable."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError([f"{path}: cannot read the stack file: {exc}"]) from None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(document, dict) or not isinstance(config or {}, dict):
        raise ConfigError([f"{path}: expected a mapping with a `config:` mapping"])
    return dict(config or {})


def _decode(raw: str) -> Any:
    """Pulumi hands scalars as strings and objects as JSON strings."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _dig(tree: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def parse_settings(
    raw: Mapping[str, str],
    secret_keys: frozenset[str] = frozenset(),
    stored: Mapping[str, Any] | None = None,
    source: str = "the stack file",
) -> Settings:
    """Validate `{key: raw string}` (keys without namespace) into `Settings`.

    Collects every problem (schema, unsafe values, secrets stored in plain text)
    and raises one `ConfigError` listing them all by config path. `stored` is the
    stack file's `config:` as written, when there is one: each secret leaf in it
    must be stored `secure:` (the engine only says which top-level keys are secret).
    """
    data = {key: _decode(value) for key, value in raw.items()}
    problems: list[str] = [] if stored is None else plain_secret_leaves(stored, source)
    for path in SECRET_PATHS:
        named = any(p.startswith(f"{PROJECT}:{config_path(path)}: ") for p in problems)
        if _dig(data, path) is not None and path[0] not in secret_keys and not named:
            problems.append(
                f"{PROJECT}:{config_path(path)}: is a secret; set it with "
                f"`pulumi config set --secret --path {config_path(path)} ...`"
            )
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems.extend(problem(error) for error in exc.errors(include_url=False))
    if problems or settings is None:
        raise ConfigError(sorted(set(problems)))
    return settings


def load_settings(project_dir: str | Path | None = None) -> Settings:
    """Read the `paper-trading:` namespace from the running Pulumi program.

    With `project_dir` (the folder of `Pulumi.yaml`), the stack's file there is read too
    when it exists, and a secret key it holds in plain text is refused.
    Without a stack file (config from elsewhere) that check is skipped: see README, Secrets.
    """
    from pulumi.runtime import config as runtime_config

    prefix = f"{PROJECT}:"
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    raw: dict[str, str] = {}
    secrets: set[str] = set()
    for full_key in sorted(k for k in keys if k.startswith(prefix)):
        value = runtime_config.get_config(full_key)
        if value is None:
            continue
        key = full_key[len(prefix):]
        raw[key] = value
        if runtime_config.is_config_secret(full_key) or full_key in set(
            runtime_config.get_config_secret_keys_env()
        ):
            secrets.add(key)
    stored: Mapping[str, Any] | None = None
    source = "the stack file"
    if project_dir is not None:
        path = stack_file_path(Path(project_dir), pulumi.get_stack())
        if path.is_file():
            stored, source = read_stack_file(path), path.name
    return parse_settings(raw, frozenset(secrets), stored, source)
