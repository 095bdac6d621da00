"""Mutants of the real rendered graphs, one per way to break one policy, and the pack that runs them."""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from pulumi_policy import EnforcementLevel, ResourceValidationPolicy
from pulumi_policy.deserialize import deserialize_properties

from policies.check import effective_config
from policies.harness import Analyzer, Violation
from policies.rules import BY_NAME, POLICIES
from tests.support import rendered
from tools.render import UNKNOWN, Graph, Resource

Wire = dict[str, Any]
Options = dict[str, Any]

# --------------------------------------------------------------------------- selecting and mutating


def _labels(res: Resource) -> dict[str, str]:
    return {e["label"]: e["value"] for e in res.inputs.get("labels") or []}


def app(graph: Graph) -> Resource:
    """The first app container that runs (not a carrier)."""
    return next(r for r in graph.containers if _labels(r).get("paper-trading.role") == "app"
                and "paper-trading.carrier-for" not in _labels(r))


def app_carrier(graph: Graph) -> Resource:
    """The never-started carrier that holds the first app container's secret files."""
    consumer = app(graph).inputs["name"]
    return next(r for r in graph.containers if _labels(r).get("paper-trading.carrier-for") == consumer)


def svc(name: str) -> Callable[[Graph], Resource]:
    def pick(graph: Graph) -> Resource:
        return next(r for r in graph.containers if _labels(r).get("paper-trading.service") == name)
    return pick


def of_type(type_: str, name: str | None = None) -> Callable[[Graph], Resource]:
    def pick(graph: Graph) -> Resource:
        return next(r for r in graph.resources if r.type == type_ and (name is None or r.name == name))
    return pick


def backend(graph: Graph) -> Resource:
    return next(r for r in graph.of_type("docker:index/network:Network")
                if str(r.inputs.get("name", "")).endswith("-backend"))


def set_env(key: str, value: str | None) -> Callable[[Wire, Options], None]:
    """Replace `key`'s entry (value None: remove it)."""
    def mutate(wire: Wire, _: Options) -> None:
        envs = [e for e in wire.get("envs") or [] if e.partition("=")[0] != key]
        found = [e for e in wire.get("envs") or [] if e.partition("=")[0] == key]
        assert found or value is not None, f"mutant expects env {key} in the real graph"
        if value is not None:
            envs.insert(wire["envs"].index(found[0]) if found else len(envs), f"{key}={value}")
        wire["envs"] = envs
    return mutate


def add_env(entry: str) -> Callable[[Wire, Options], None]:
    def mutate(wire: Wire, _: Options) -> None:
        wire["envs"] = [*(wire.get("envs") or []), entry]
    return mutate


def set_label(key: str, value: str | None) -> Callable[[Wire, Options], None]:
    def mutate(wire: Wire, _: Options) -> None:
        labels = [e for e in wire.get("labels") or [] if e["label"] != key]
        if value is not None:
            labels.append({"label": key, "value": value})
        wire["labels"] = labels
    return mutate


def add_label(key: str, value: str) -> Callable[[Wire, Options], None]:
    def mutate(wire: Wire, _: Options) -> None:
        wire["labels"] = [*(wire.get("labels") or []), {"label": key, "value": value}]
    return mutate


def put(path: str, value: Any) -> Callable[[Wire, Options], None]:
    """Set (value is not DROP) or delete a dotted path such as `capabilities.adds` or `ports.0.ip`."""
    def mutate(wire: Wire, _: Options) -> None:
        *parents, last = path.split(".")
        node: Any = wire
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            if value is DROP:
                del node[int(last)]
            else:
                node[int(last)] = value
        elif value is DROP:
            assert last in node, f"mutant expects {path} in the real graph"
            del node[last]
        else:
            node[last] = value
    return mutate


def append(path: str, item: Any) -> Callable[[Wire, Options], None]:
    def mutate(wire: Wire, _: Options) -> None:
        wire[path] = [*(wire.get(path) or []), item]
    return mutate


def rename_upload(old: str, new: str) -> Callable[[Wire, Options], None]:
    def mutate(wire: Wire, _: Options) -> None:
        hits = [u for u in wire.get("uploads") or [] if u["file"] == old]
        assert hits, f"mutant expects upload {old} in the real graph"
        for upload in hits:
            upload["file"] = new
    return mutate


def option(key: str, value: Any) -> Callable[[Wire, Options], None]:
    def mutate(_: Wire, options: Options) -> None:
        options[key] = value
    return mutate


def both(*steps: Callable[[Wire, Options], None]) -> Callable[[Wire, Options], None]:
    def mutate(wire: Wire, options: Options) -> None:
        for step in steps:
            step(wire, options)
    return mutate


DROP = object()


def mutated(res: Resource, change: Callable[[Wire, Options], None]) -> Resource:
    wire, options = deepcopy(res.wire), deepcopy(res.options)
    change(wire, options)
    return replace(res, wire=wire, inputs=deserialize_properties(wire), options=options)


@dataclass(frozen=True)
class Mutant:
    policy: str
    id: str
    select: Callable[[Graph], Resource]
    change: Callable[[Wire, Options], None]
    stack: str = "prod"

    def __str__(self) -> str:
        return f"{self.policy}/{self.id}"


KEY = "/run/secrets/binance_api_key"
SOCKET = "/var/run/docker.sock"
SERVICE = "docker:index/service:Service"
APP_IMAGE = "ghcr.io/example/paper-trading-app"

PTM = "paper-trading-mode"
KEYS = "read-only-exchange-keys"
LBL = "app-containers-labelled"
PRIV = "container-not-privileged"
CAPS = "container-capabilities-dropped"
NS = "container-no-host-namespaces"
MNT = "container-no-sensitive-mounts"
NNP = "container-no-new-privileges"
MEM = "container-memory-limit"
PORTS = "container-ports-bound"
IMG = "container-image-pinned"
NET = "container-user-networks-only"
VOL = "data-volumes-protected"
BACK = "backend-network-internal"
SEG = "monitoring-segmented"
HG = "host-guard-confined"
RO = "container-read-only-rootfs"
M = Mutant

MUTANTS: list[Mutant] = [
    # paper-trading-mode
    M(PTM, "mode-false", app, set_env("PAPER_TRADING_MODE", "false")),
    M(PTM, "mode-missing", app, set_env("PAPER_TRADING_MODE", None)),
    M(PTM, "mode-duplicate-conflicting", app, add_env("PAPER_TRADING_MODE=false")),
    M(PTM, "mode-duplicate-same", app, add_env("PAPER_TRADING_MODE=true")),
    M(PTM, "mode-capitalised-value", app, set_env("PAPER_TRADING_MODE", "True")),
    M(PTM, "mode-without-value", app,
           both(set_env("PAPER_TRADING_MODE", None), add_env("PAPER_TRADING_MODE"))),
    M(PTM, "mode-lowercase-spelling", app, add_env("paper_trading_mode=false")),
    M(PTM, "mode-dashed-spelling", app, add_env("PAPER-TRADING-MODE=false")),
    M(PTM, "mode-padded-key", app, add_env("PAPER_TRADING_MODE =false")),
    M(PTM, "real-trades-true", app, set_env("ALLOW_REAL_TRADES", "true")),
    M(PTM, "real-trades-missing", app, set_env("ALLOW_REAL_TRADES", None)),
    M(PTM, "real-trades-duplicate", app, add_env("ALLOW_REAL_TRADES=true")),
    M(PTM, "real-trades-lowercase", app, add_env("allow_real_trades=true")),
    M(PTM, "live-trading-env", app, add_env("LIVE_TRADING=true")),
    M(PTM, "trading-mode-env", app, add_env("TRADING_MODE=live")),
    M(PTM, "enable-trading-env", app, add_env("ENABLE_TRADING=true")),
    M(PTM, "dry-run-off", app, add_env("DRY_RUN=false")),
    M(PTM, "color-env-mismatch", app, set_env("DEPLOYMENT_COLOR", "green")),
    M(PTM, "color-env-missing", app, set_env("DEPLOYMENT_COLOR", None)),
    M(PTM, "color-env-duplicate", app, add_env("DEPLOYMENT_COLOR=green")),
    M(PTM, "color-label-flipped", app, set_label("paper-trading.color", "green")),
    M(PTM, "color-label-invalid", app, set_label("paper-trading.color", "purple")),
    M(PTM, "command-override", app,
           put("command", ["sh", "-c", "PAPER_TRADING_MODE=false exec node server.js"])),
    M(PTM, "env-file-upload", app,
           append("uploads", {"file": "/app/.env", "content": "PAPER_TRADING_MODE=false\n"})),
    M(PTM, "dev-mode-false", app, set_env("PAPER_TRADING_MODE", "false"), stack="dev"),
    # read-only-exchange-keys
    M(KEYS, "permissions-read-write", app, set_env("BINANCE_PERMISSIONS", "READ_WRITE")),
    M(KEYS, "permissions-trade", app, set_env("KUCOIN_PERMISSIONS", "TRADE")),
    M(KEYS, "permissions-missing", app, set_env("BINANCE_PERMISSIONS", None)),
    M(KEYS, "permissions-duplicate", app, add_env("BINANCE_PERMISSIONS=TRADE")),
    M(KEYS, "permissions-lowercase", app, add_env("binance_permissions=READ_WRITE")),
    M(KEYS, "sandbox-false", app, set_env("BINANCE_SANDBOX", "false")),
    M(KEYS, "sandbox-missing", app, set_env("KUCOIN_SANDBOX", None)),
    M(KEYS, "base-url-production", app,
           set_env("BINANCE_BASE_URL", "https://api.binance.com")),
    M(KEYS, "base-url-kucoin-production", app,
           set_env("KUCOIN_BASE_URL", "https://api.kucoin.com")),
    M(KEYS, "base-url-userinfo-trick", app,
           set_env("BINANCE_BASE_URL", "https://testnet.binance.vision@api.binance.com")),
    M(KEYS, "base-url-plain-http", app,
           set_env("BINANCE_BASE_URL", "http://testnet.binance.vision")),
    M(KEYS, "base-url-lookalike", app,
           set_env("BINANCE_BASE_URL", "https://testnet.binance.vision.evil.example")),
    M(KEYS, "base-url-missing", app, set_env("BINANCE_BASE_URL", None)),
    M(KEYS, "base-url-host-only", app, set_env("KUCOIN_BASE_URL", "api.kucoin.com")),
    M(KEYS, "extra-stream-url", app,
           add_env("BINANCE_WS_URL=wss://stream.binance.com:9443/ws")),
    M(KEYS, "unprefixed-exchange-url", app,
           add_env("MARKET_DATA_URL=https://api.binance.com/api/v3")),
    M(KEYS, "trading-enabled-env", app, add_env("BINANCE_TRADING_ENABLED=true")),
    M(KEYS, "withdrawals-env", app, add_env("WITHDRAWALS_ENABLED=true")),
    M(KEYS, "trade-key-env", app,
           add_env("BINANCE_TRADE_API_KEY_FILE=/run/secrets/binance_trade_key")),
    M(KEYS, "withdraw-key-env", app,
           add_env("KUCOIN_WITHDRAW_KEY_FILE=/run/secrets/kucoin_withdraw")),
    M(KEYS, "transfer-file", app_carrier, rename_upload(KEY, "/run/secrets/binance_transfer_key")),
    M(KEYS, "trading-key-file", app_carrier,
           rename_upload(KEY, "/run/secrets/binance_trading_api_key")),
    M(KEYS, "new-exchange-without-permissions", app,
           add_env("KRAKEN_API_KEY_FILE=/run/secrets/kraken_api_key")),
    M(KEYS, "key-file-without-declaration", svc("redis"),
           append("uploads", {"file": "/run/secrets/bybit_api_key", "content": "k"})),
    M(KEYS, "dev-key-with-production-url", app,
           both(add_env(f"BINANCE_API_KEY_FILE={KEY}"), add_env("BINANCE_PERMISSIONS=READ_ONLY"),
                add_env("BINANCE_SANDBOX=true"), add_env("BINANCE_BASE_URL=https://api.binance.com")),
           stack="dev"),
    # app-containers-labelled
    M(LBL, "role-label-removed", app, set_label("paper-trading.role", None)),
    M(LBL, "role-label-renamed", app, set_label("paper-trading.role", "worker")),
    M(LBL, "role-label-duplicated", app, add_label("paper-trading.role", "worker")),
    M(LBL, "all-labels-removed", app, put("labels", DROP)),
    M(LBL, "app-image-unlabelled", svc("postgres"), put("image", f"{APP_IMAGE}:1.4.2")),
    M(LBL, "app-image-other-tag", svc("redis"), put("image", f"{APP_IMAGE}:9.9.9")),
    M(LBL, "app-image-digest", svc("redis"),
           put("image", f"{APP_IMAGE}@sha256:{'a' * 64}")),
    M(LBL, "dev-app-image-docker-io", svc("postgres"),
           put("image", "docker.io/library/paper-trading-reference-app:dev"), stack="dev"),
    M(LBL, "mode-env-unlabelled", svc("postgres"), add_env("PAPER_TRADING_MODE=true")),
    M(LBL, "exchange-env-unlabelled", svc("redis"),
           add_env("KUCOIN_API_KEY_FILE=/run/secrets/kucoin_api_key")),
    M(LBL, "image-by-id", app, put("image", f"sha256:{'b' * 64}")),
    M(LBL, "unlabelled-copy-of-app", app,
           both(set_label("paper-trading.role", None), set_label("paper-trading.color", None))),
    # container-not-privileged
    M(PRIV, "privileged", svc("proxy"), put("privileged", True)),
    M(PRIV, "privileged-app", app, put("privileged", True)),
    M(PRIV, "host-device", svc("redis"),
           put("devices", [{"hostPath": "/dev/mem", "containerPath": "/dev/mem"}])),
    M(PRIV, "gpus", svc("postgres"), put("gpus", "all")),
    # container-capabilities-dropped
    M(CAPS, "capabilities-removed", svc("proxy"), put("capabilities", DROP)),
    M(CAPS, "drops-empty", app, put("capabilities.drops", [])),
    M(CAPS, "drops-partial", svc("postgres"), put("capabilities.drops", ["NET_RAW"])),
    M(CAPS, "add-sys-admin", svc("postgres"),
           put("capabilities.adds", ["CHOWN", "SYS_ADMIN"])),
    M(CAPS, "add-cap-prefixed", svc("redis"), put("capabilities.adds", ["CAP_SYS_PTRACE"])),
    M(CAPS, "add-all", svc("rabbitmq"), put("capabilities.adds", ["ALL"])),
    M(CAPS, "add-net-admin-app", app, put("capabilities.adds", ["NET_ADMIN"])),
    M(CAPS, "add-chown-app", app, put("capabilities.adds", ["CHOWN"])),
    M(CAPS, "add-bind-proxy", svc("proxy"), put("capabilities.adds", ["NET_BIND_SERVICE"])),
    # container-no-host-namespaces
    M(NS, "host-network", app, put("networkMode", "host")),
    # The host guard's exemption is for it alone (issue 14, part 1; policies/host_guard.py).
    M(NS, "host-network-proxy", svc("proxy"), put("networkMode", "host")),
    M(NS, "host-network-spoofed-role", app,
           both(put("networkMode", "host"), set_label("paper-trading.role", "host-guard"))),
    M(NS, "host-guard-host-pid", svc("host-guard"), put("pidMode", "host")),
    M(CAPS, "add-net-raw-proxy", svc("proxy"), put("capabilities.adds", ["NET_RAW"])),
    M(CAPS, "host-guard-adds-sys-admin", svc("host-guard"),
             put("capabilities.adds", ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_ADMIN"])),
    M(HG, "adds-sys-module", svc("host-guard"),
           put("capabilities.adds", ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_MODULE"])),
    M(HG, "drops-not-all", svc("host-guard"), put("capabilities.drops", ["SYS_ADMIN"])),
    M(HG, "writable-root", svc("host-guard"), put("readOnly", False)),
    M(HG, "decisions-writable", svc("host-guard"), put("volumes.0.readOnly", False)),
    M(HG, "volume-mount-writable", svc("host-guard"),
           append("mounts", {"type": "volume", "source": "scratch", "target": "/x", "readOnly": False})),
    M(HG, "publishes-port", svc("host-guard"),
           append("ports", {"internal": 9999, "external": 9999, "ip": "127.0.0.1", "protocol": "tcp"})),
    M(HG, "receives-upload", svc("host-guard"),
           append("uploads", {"file": "/etc/ruleset.nft", "content": "x", "permissions": "0644"})),
    M(HG, "joins-user-network", svc("host-guard"),
      append("networksAdvanced", {"name": "paper-trading-frontend"})),
    M(HG, "half-labelled", svc("host-guard"), set_label("paper-trading.role", None)),
    M(HG, "not-host-network", svc("host-guard"), put("networkMode", "bridge")),
    M(NS, "host-pid", svc("postgres"), put("pidMode", "host")),
    M(NS, "host-ipc", svc("redis"), put("ipcMode", "host")),
    M(NS, "host-userns", svc("proxy"), put("usernsMode", "host")),
    M(NS, "host-cgroupns", app, put("cgroupnsMode", "host")),
    # container-no-sensitive-mounts
    M(MNT, "docker-socket-volume", app,
           append("volumes", {"hostPath": SOCKET, "containerPath": SOCKET, "readOnly": True})),
    M(MNT, "docker-socket-bind", svc("proxy"),
           append("mounts", {"type": "bind", "source": SOCKET, "target": SOCKET, "readOnly": True})),
    M(MNT, "run-dir", svc("redis"),
           append("volumes", {"hostPath": "/run", "containerPath": "/host/run", "readOnly": True})),
    M(MNT, "etc", svc("postgres"),
           append("volumes", {"hostPath": "/etc", "containerPath": "/host/etc", "readOnly": True})),
    M(MNT, "root", app,
           append("volumes", {"hostPath": "/", "containerPath": "/host", "readOnly": True})),
    M(MNT, "proc-on-app", app,
           append("volumes", {"hostPath": "/proc", "containerPath": "/host/proc", "readOnly": True})),
    M(MNT, "unlisted-path", app,
           append("volumes", {"hostPath": "/srv/data", "containerPath": "/data", "readOnly": True})),
    M(MNT, "cert-writable", svc("proxy"), put("mounts.0.readOnly", False)),
    M(MNT, "cert-readonly-unset", svc("proxy"), put("mounts.1.readOnly", DROP)),
    M(MNT, "proxy-mounts-etc", svc("proxy"), put("mounts.0.source", "/etc")),
    M(MNT, "proxy-mounts-shadow", svc("proxy"), put("mounts.1.source", "/etc/shadow")),
    M(MNT, "proxy-path-escape", svc("proxy"),
           put("mounts.1.source", "/etc/ssl/paper-trading/../../shadow")),
    # container-no-new-privileges
    M(NNP, "security-opts-removed", app, put("securityOpts", DROP)),
    M(NNP, "nnp-false", svc("postgres"), put("securityOpts", ["no-new-privileges:false"])),
    M(NNP, "nnp-contradicted", svc("redis"),
           put("securityOpts", ["no-new-privileges:true", "no-new-privileges=false"])),
    M(NNP, "seccomp-unconfined", svc("proxy"),
           put("securityOpts", ["no-new-privileges:true", "seccomp=unconfined"])),
    M(NNP, "apparmor-unconfined", app,
           put("securityOpts", ["no-new-privileges:true", "apparmor:unconfined"])),
    # container-memory-limit
    M(MEM, "memory-removed", app, put("memory", DROP)),
    M(MEM, "memory-zero", svc("postgres"), put("memory", 0.0)),
    M(MEM, "swap-unlimited", svc("redis"), put("memorySwap", -1.0)),
    # container-ports-bound
    M(PORTS, "proxy-ip-removed", svc("proxy"), put("ports.0.ip", DROP)),
    M(PORTS, "proxy-ip-empty", svc("proxy"), put("ports.1.ip", "")),
    M(PORTS, "preview-public", svc("proxy"), put("ports.2.ip", "0.0.0.0")),
    M(PORTS, "proxy-extra-public-port", svc("proxy"),
           append("ports", {"internal": 8081.0, "external": 8081.0, "ip": "0.0.0.0", "protocol": "tcp"})),
    M(PORTS, "app-published-public", app,
           append("ports", {"internal": 3000.0, "external": 3000.0, "ip": "0.0.0.0", "protocol": "tcp"})),
    M(PORTS, "postgres-published-ipv6", svc("postgres"),
           append("ports", {"internal": 5432.0, "external": 5432.0, "ip": "::", "protocol": "tcp"})),
    M(PORTS, "redis-published-no-ip", svc("redis"),
           append("ports", {"internal": 6379.0, "external": 6379.0, "protocol": "tcp"})),
    M(PORTS, "publish-all", svc("rabbitmq"), put("publishAllPorts", True)),
    M(PORTS, "dev-proxy-public", svc("proxy"), put("ports.0.ip", "0.0.0.0"), stack="dev"),
    # container-image-pinned
    M(IMG, "latest", svc("postgres"), put("image", "postgres:latest")),
    M(IMG, "no-tag", svc("redis"), put("image", "redis")),
    M(IMG, "registry-port-no-tag", svc("proxy"), put("image", "localhost:5000/nginx")),
    M(IMG, "app-latest", app, put("image", f"{APP_IMAGE}:latest")),
    M(IMG, "remote-image-latest", of_type("docker:index/remoteImage:RemoteImage"),
           put("name", "nginx:latest")),
    # proxy-image-current (floor in contract/versions.py; more cases in tests/policies/test_proxy_version.py)
    M("proxy-image-current", "proxy-old-release", svc("proxy"), put("image", "nginx:1.27.3-alpine")),
    M("proxy-image-current", "proxy-moving-tag", svc("proxy"), put("image", "nginx:alpine")),
    # container-user-networks-only
    # bridge/unset is what pulumi-docker detaches before start when user networks are listed;
    # without them the container would run on Docker's default bridge.
    M(NET, "default-bridge", app, both(put("networkMode", "bridge"), put("networksAdvanced", DROP))),
    M(NET, "no-network-at-all", svc("postgres"), put("networksAdvanced", DROP)),
    M(NET, "network-mode-default", svc("redis"),
           both(put("networkMode", "default"), put("networksAdvanced", []))),
    M(NET, "host-network-mode", svc("backup"), put("networkMode", "host")),
    M(NET, "shares-container-net", svc("proxy"), put("networkMode", "container:other")),
    M(NET, "bridge-attached", svc("rabbitmq"),
           append("networksAdvanced", {"name": "bridge"})),
    # data-volumes-protected
    M(VOL, "unprotected", of_type("docker:index/volume:Volume", "grafana-data"), option("protect", False)),
    M(VOL, "postgres-unprotected", of_type("docker:index/volume:Volume", "postgres-data"),
           option("protect", False)),
    M(VOL, "relabelled-disposable", of_type("docker:index/volume:Volume", "redis-data"),
           both(set_label("paper-trading.data", "false"), option("protect", False))),
    M(VOL, "not-retained", of_type("docker:index/volume:Volume", "prometheus-data"),
           option("retainOnDelete", False)),
    # monitoring-segmented (issue 13, item 1; more cases in tests/policies/test_segmentation_policy.py)
    M(SEG, "app-on-monitoring", app, append("networksAdvanced", {"name": "paper-trading-monitoring"})),
    M(SEG, "app-on-metrics", app, append("networksAdvanced", {"name": "paper-trading-metrics"})),
    M(SEG, "app-network-computed", app, append("networksAdvanced", {"name": UNKNOWN})),
    M(SEG, "alertmanager-on-frontend", svc("alertmanager"),
           append("networksAdvanced", {"name": "paper-trading-frontend"})),
    # backend-network-internal
    M(BACK, "not-internal", backend, put("internal", False)),
    M(BACK, "internal-removed", backend, put("internal", DROP)),
    M(BACK, "dev-not-internal", backend, put("internal", False), stack="dev"),
    # container-read-only-rootfs (mandatory again, issue 21 item 7: files arrive through carriers)
    M(RO, "writable-rootfs", app, put("readOnly", False)),
    M(RO, "writable-rootfs-proxy", svc("proxy"), put("readOnly", False)),
    M(RO, "writable-rootfs-unlisted-service", svc("ids"), put("readOnly", False)),
    M(RO, "carrier-started", app_carrier, put("start", True)),
    M(RO, "carrier-must-run", app_carrier, put("mustRun", True)),
    M(RO, "carrier-label-on-a-running-app", app, both(put("readOnly", False),
                                                        add_label("paper-trading.carrier-for", "x"))),
    # service-ports-host-mode (the swarm stack: services, not containers)
    M("service-ports-host-mode", "ingress-mesh", of_type(SERVICE, "proxy"),
      put("endpointSpec.ports.0.publishMode", "ingress"), stack="swarmlab"),
    M("service-ports-host-mode", "mode-dropped", of_type(SERVICE, "proxy"),
      put("endpointSpec.ports.1.publishMode", DROP), stack="swarmlab"),
    M("service-ports-host-mode", "app-publishes", of_type(SERVICE, "blue"),
      put("endpointSpec.ports", [{"targetPort": 3000.0, "publishedPort": 3000.0, "publishMode": "host"}]),
      stack="swarmlab"),
    # advisory
    M("container-healthcheck", "no-healthcheck", svc("postgres"), put("healthcheck", DROP)),
    M("container-restart-bounded", "restart-always", svc("redis"), put("restart", "always")),
    M("container-restart-bounded", "unbounded-retries", svc("redis"), put("maxRetryCount", 0.0)),
]


# --------------------------------------------------------------------------- running


@cache
def analyzer(stack: str, disabled: str | None = None) -> Analyzer:
    """The pack for `stack` (its app images added, as the offline check does); `disabled`'s check a no-op."""
    policies = [noop(p) if p.name == disabled else p for p in POLICIES]
    return Analyzer(policies, effective_config(rendered(stack), {}))


def noop(policy: ResourceValidationPolicy) -> ResourceValidationPolicy:
    """The same policy (name, level, config) with its check deleted."""
    return ResourceValidationPolicy(
        name=policy.name, description=policy.description, validate=lambda args, report: None,
        enforcement_level=policy.enforcement_level, config_schema=policy.config_schema,
    )


def violations_of(mutant: Mutant, disabled: str | None = None) -> list[Violation]:
    resource = mutated(mutant.select(rendered(mutant.stack)), mutant.change)
    return analyzer(mutant.stack, disabled).analyze(resource)


def failures(disabled: str | None = None) -> list[str]:
    """Mutants the pack lets through: not caught by their policy at its level, or by no mandatory policy."""
    missed = []
    for mutant in MUTANTS:
        found = violations_of(mutant, disabled)
        level = BY_NAME[mutant.policy].enforcement_level
        assert level is not None
        if not any(v.policy == mutant.policy and v.level == level.value for v in found):
            missed.append(f"{mutant}: not caught by {mutant.policy}")
        elif level == EnforcementLevel.MANDATORY and not any(v.mandatory for v in found):
            missed.append(f"{mutant}: no mandatory violation")
    return missed
