"""The Swarm emergency CLI: `python -m release.swarm show|switch --stack <stack>` (the resource's code).

Reads the nodes, the proxy's port and the public name from the stack file (no engine needed),
then shows what every edge proxy serves, or switches every edge node at once, all or nothing,
confirmed on each node's own listener (instant rollback is this: a marker rename per node).
The stack's audit trail is not deployed on Swarm yet (settings refuse `security.audit.enabled`),
so the reason is printed, not recorded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import cast

from pydantic import ValidationError

from release.routing.base import NONE, RoutingError
from release.routing.cli import reason_text
from release.routing.docker_side import LOCK_WAIT_S
from release.routing.listener import post_promotion_checker
from release.swarm.nodes import Node, served_on
from release.swarm.switch import EdgeListener, switch_edges
from settings import PROJECT, Color, ConfigError, ProxyConfig, ServerConfig, SwarmConfig, read_stack_file


class Target:
    """What the CLI needs from a swarm stack file: the edge nodes, the proxy service, its listener."""

    def __init__(self, path: Path) -> None:
        config = read_stack_file(path)

        def section(key: str) -> object:
            return config.get(f"{PROJECT}:{key}")

        if section("target") != "swarm" or section("swarm") is None:
            raise ConfigError([f"{path}: {PROJECT}:target is not swarm (use python -m release.routing)"])
        try:
            swarm = SwarmConfig.model_validate(section("swarm"))
            proxy = ProxyConfig.model_validate(section("proxy") or {})
            server = ServerConfig.model_validate(section("server") or {})
        except ValidationError as exc:
            raise ConfigError([f"{path}: {error['loc']}: {error['msg']}" for error in exc.errors()]) from None
        prefix = section("namePrefix") or "paper-trading"
        self.proxy_service = f"{prefix}-proxy"
        self.edges = [Node(n.name, n.endpoint, n.address) for n in swarm.labelled("edge")]
        scheme = "https" if server.ssl.enabled else "http"
        port = proxy.https_port if server.ssl.enabled else proxy.http_port
        self.listener = EdgeListener(scheme=scheme, port=port, host_header=server.host)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m release.swarm",
        description="Show or switch the live color on every edge proxy of a swarm stack.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("show", "print what each edge proxy serves"),
                       ("switch", "make a color live on every edge node, or on none")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--stack", required=True,
                             help="the stack whose Pulumi.<stack>.yaml names the nodes")
        command.add_argument("--project-dir", type=Path, default=Path("."))
    go = sub.choices["switch"]
    go.add_argument("--to", required=True, choices=["blue", "green"])
    go.add_argument("--preview", choices=["blue", "green", "none"], help="default: the other color")
    go.add_argument("--no-checks", action="store_true", help="skip the post-promotion checks")
    go.add_argument("--lock-wait", type=float, default=LOCK_WAIT_S, metavar="SECONDS")
    go.add_argument("--reason", required=True, type=reason_text, help="why (one line); required")
    args = parser.parse_args(argv)
    try:
        target = Target(args.project_dir / f"Pulumi.{args.stack}.yaml")
        if args.command == "show":
            served = served_on(target.edges, target.proxy_service)
            for node, color in served.items():
                print(f"{node} {color}")
            # Unreadable or split: the operator must look (a split edge serves two colors).
            return 0 if len(set(served.values())) == 1 and "unreadable" not in served.values() else 1
        live = cast(Color, args.to)
        preview_arg = args.preview or ("green" if live == "blue" else "blue")
        preview = None if preview_arg == NONE else cast(Color, preview_arg)
        checker = None if args.no_checks else post_promotion_checker(False)
        result = switch_edges(target.edges, target.proxy_service, live, preview, target.listener,
                              checker=checker, lock_wait_s=args.lock_wait)
    except (ConfigError, RoutingError) as exc:
        print(f"swarm routing: {exc}", file=sys.stderr)
        return 1
    before = ", ".join(f"{node} {color}" for node, color in result.previous_live.items())
    print(f"swarm routing: live {result.live} on every edge node in {result.switch_ms:.0f} ms "
          f"(was: {before}); reason: {args.reason}")
    return 0
