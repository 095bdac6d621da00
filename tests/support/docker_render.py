"""What the Docker tests run, from the program: the rendered stack, its containers' inputs, the images."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TEST_LABEL = "paper-trading.test"
APP_IMAGE = "paper-trading-reference-app:test"
APP_PORT = 3000
#: The ci stand-ins the work stack runs instead of the rendered Redis/RabbitMQ images.
CI_IMAGES = {"redis": "paper-trading-ci/redis:7.0", "rabbitmq": "paper-trading-ci/rabbitmq:3.10"}
#: The test config's `workers` section (work=True): short lease and tick, so the tests run quickly.
WORK_CONFIG = {"leaseTtlMs": 1500, "tickMs": 200, "handoffTimeoutSeconds": 10}
#: How long Redis and RabbitMQ get to become healthy (the rendered RabbitMQ waitTimeout is 180 s).
DATASTORE_TIMEOUT_S = 180.0

#: The stack name the test stack is rendered as (its `paper-trading.stack` label).
STACK = "docker-test"


def build_images(ci: bool = False) -> tuple[str, str]:
    """(base image, app image): build or reuse them with the project's script (`--ci`: also the ci images)."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "build-test-images"), *(["--ci"] if ci else [])],
        capture_output=True, text=True, timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"build-test-images failed:\n{proc.stdout}\n{proc.stderr}")
    found = dict(re.findall(r"^(PAPER_TRADING_\w+_IMAGE)=(\S+)$", proc.stdout, re.M))
    # No stand-in app: without the reference app the Docker tests cannot run, so they fail.
    if found.get("PAPER_TRADING_APP_IMAGE") != APP_IMAGE or "skipping" in proc.stderr:
        raise RuntimeError(f"build-test-images did not build {APP_IMAGE}:\n{proc.stdout}\n{proc.stderr}")
    if ci:
        built = set(re.findall(r"^PAPER_TRADING_CI_IMAGE=(\S+)$", proc.stdout, re.M))
        if not set(CI_IMAGES.values()) <= built:
            raise RuntimeError(f"build-test-images --ci did not build {sorted(CI_IMAGES.values())}:\n"
                               f"{proc.stdout}\n{proc.stderr}")
    return found["PAPER_TRADING_BASE_IMAGE"], APP_IMAGE


def test_config(prefix: str, work: bool = False) -> dict[str, Any]:
    """Dev-stack-like `paper-trading:*` config: plain HTTP, one replica per color."""
    config = _base_config(prefix)
    # Without Redis and RabbitMQ the stack runs no background work: the apps report `disabled`.
    config["workers"] = dict(WORK_CONFIG) if work else {"enabled": False}
    return config


def _base_config(prefix: str) -> dict[str, Any]:
    return {
        "environment": "development",
        "paperTradingMode": True,
        "allowRealTrades": False,
        "namePrefix": prefix,
        "server": {"port": APP_PORT, "host": "localhost", "ssl": {"enabled": False}},
        "deployment": {
            "activeColor": "blue",
            "blue": {"image": APP_IMAGE, "replicas": 1},
            "green": {"image": APP_IMAGE, "replicas": 1},
        },
        "proxy": {"publicAddress": "127.0.0.1", "httpPort": 18080, "httpsPort": 18443, "previewPort": 18081},
    }


def test_settings(prefix: str, work: bool = False) -> Any:
    """The program's Settings for the test config."""
    from settings import Settings

    return Settings.model_validate(test_config(prefix, work))


def render_stack(prefix: str, work: bool = False) -> Any:
    """The program's resource graph (`tools.render.Graph`) for the test config, as the engine hands it."""
    from tools.render import evaluate

    config = {f"paper-trading:{key}": value if isinstance(value, str) else json.dumps(value)
              for key, value in test_config(prefix, work).items()}
    return evaluate(STACK, config=config, secret_keys=[])


def rendered_container(graph: Any, name: str) -> Any:
    """The one container the program renders under the Docker name `name`; anything else fails."""
    found = [r for r in graph.containers if r.inputs.get("name") == name]
    if len(found) != 1:
        names = sorted(str(r.inputs.get("name")) for r in graph.containers)
        raise RuntimeError(f"the program renders {len(found)} containers named {name!r} (it renders {names})")
    return found[0]


def rendered_env(resource: Any) -> dict[str, str]:
    """The container's `envs` as a mapping; missing, empty or duplicated entries fail."""
    envs = resource.inputs.get("envs")
    if not envs:
        raise RuntimeError(f"the program renders no environment for {resource.inputs.get('name')}")
    env = dict(str(e).split("=", 1) for e in envs)
    if len(env) != len(envs):
        raise RuntimeError(f"duplicate environment entries for {resource.inputs.get('name')}: {envs}")
    return env


def hardening(resource: Any) -> dict[str, Any]:
    """docker-py `containers.create` keywords for the rendered user, rootfs, tmpfs, caps and limits."""
    i = resource.inputs
    caps = i["capabilities"]
    return dict(
        user=i.get("user"), read_only=i["readOnly"], privileged=i["privileged"], tmpfs=i.get("tmpfs"),
        cap_drop=caps.get("drops"), cap_add=caps.get("adds"), security_opt=i["securityOpts"],
        init=i.get("init"), mem_limit=f"{i['memory']}m", memswap_limit=f"{i['memorySwap']}m",
        nano_cpus=int(float(i["cpus"]) * 1e9), sysctls=i.get("sysctls") or None,
    )


def _duration_ns(value: str) -> int:
    """A Go duration as the program renders it (`20s`, `1m0s`) in nanoseconds."""
    units = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
    parts = re.findall(r"([0-9]+)(ms|s|m|h)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise RuntimeError(f"the program renders a duration this helper cannot read: {value!r}")
    return sum(int(n) * units[u] for n, u in parts)


def _tar(files: dict[str, str], under: str, modes: dict[str, int] | None = None) -> bytes:
    """Files below `under` as a tar relative to it (with directory entries); 0444 unless `modes` says."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        dirs: set[str] = set()
        for path in files:
            rel = os.path.relpath(path, under)
            parent = os.path.dirname(rel)
            while parent and parent not in dirs:
                dirs.add(parent)
                parent = os.path.dirname(parent)
        for directory in sorted(dirs):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
            archive.addfile(info)
        for path, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(os.path.relpath(path, under))
            info.size, info.mtime = len(data), int(time.time())
            info.mode = (modes or {}).get(path, 0o444)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _provider_tar(files: dict[str, str], modes: dict[str, int]) -> bytes:
    """pulumi-docker's upload archive: each file by its path relative to `/`, its mode, no owner."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mtime, info.mode = len(data), int(time.time()), modes[path]
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
