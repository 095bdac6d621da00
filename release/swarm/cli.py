"""The Swarm emergency CLI: `python -m release.swarm show|switch --stack <stack>` (the resource's code).

Reads the nodes, the proxy's port and the public name from the stack file (no engine needed),
then shows what every edge proxy serves, or switches every edge node at once, all or nothing,
confirmed on each node's own listener (instant rollback is this: a marker rename per node), and
moves the background work with the traffic when the stack runs workers, as `up`'s switch does.
A switch is recorded in the stack's audit trail (the data node's volume, release/audit.py) as
`emergency-switch` with `--reason` and what it verified, and always fails closed: a trail that
cannot take the intent record refuses the switch before it acts (exit 74), as on one host.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import cast

from pydantic import ValidationError

from contract import swarm_app_service, swarm_data_service
from release.audit import Auditor, AuditTarget, AuditUnavailable, Checks, FileSink, volume_name
from release.routing.base import NONE, RoutingError
from release.routing.cli import EXIT_AUDIT_UNAVAILABLE, reason_text
from release.routing.docker_side import LOCK_WAIT_S
from release.routing.listener import post_promotion_checker
from release.swarm.autoscale import AutoscaleError, Autoscaler
from release.swarm.nodes import Node, served_on
from release.swarm.switch import EdgeListener, switch_edges
from release.swarm.work import SwarmHandoff
from settings import (
    COLORS,
    PROJECT,
    AuditConfig,
    Color,
    ConfigError,
    Images,
    ProxyConfig,
    ServerConfig,
    SwarmConfig,
    WorkersConfig,
    read_stack_file,
)


class Target:
    """What the CLI needs from a swarm stack file: the edge nodes, the proxy service, its listener."""

    def __init__(self, path: Path, stack: str) -> None:
        config = read_stack_file(path)

        def section(key: str) -> object:
            return config.get(f"{PROJECT}:{key}")

        if section("target") != "swarm" or section("swarm") is None:
            raise ConfigError([f"{path}: {PROJECT}:target is not swarm (use python -m release.routing)"])
        try:
            swarm = SwarmConfig.model_validate(section("swarm"))
            proxy = ProxyConfig.model_validate(section("proxy") or {})
            server = ServerConfig.model_validate(section("server") or {})
            workers = WorkersConfig.model_validate(section("workers") or {})
            security = section("security") or {}
            audit = AuditConfig.model_validate(security.get("audit") or {} if isinstance(security, dict)
                                               else security)
            images = Images.model_validate(section("images") or {})
        except ValidationError as exc:
            raise ConfigError([f"{path}: {error['loc']}: {error['msg']}" for error in exc.errors()]) from None
        prefix = str(section("namePrefix") or "paper-trading")
        self.swarm = swarm
        self.services: dict[str, str] = {color: swarm_app_service(prefix, color) for color in COLORS}
        self.proxy_service = f"{prefix}-proxy"
        self.edges = [Node(n.name, n.endpoint, n.address) for n in swarm.labelled("edge")]
        scheme = "https" if server.ssl.enabled else "http"
        port = proxy.https_port if server.ssl.enabled else proxy.http_port
        self.listener = EdgeListener(scheme=scheme, port=port, host_header=server.host)
        data = swarm.labelled("data")[0]
        self.handoff = SwarmHandoff(
            Node(data.name, data.endpoint, data.address), swarm_data_service(prefix, "redis"),
            swarm_data_service(prefix, "rabbitmq"),
            workers.handoff_timeout_seconds, workers.queues) if workers.enabled else None
        # The program's trail (release/audit.py `audit_target`), always fail closed here.
        self.audit = AuditTarget(stack, volume_name(prefix), images.postgres, actor=audit.actor,
                                 endpoint=data.endpoint) if audit.enabled else None


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
    scale = sub.add_parser("autoscale",
                           help="scale the live color by its requests in flight (swarm.autoscale)")
    scale.add_argument("--stack", required=True, help="the stack whose Pulumi.<stack>.yaml names the nodes")
    scale.add_argument("--project-dir", type=Path, default=Path("."))
    scale.add_argument("--audit-file", required=True, type=Path,
                       help="the trail this scaler appends its decisions to (hash-chained JSON lines)")
    scale.add_argument("--interval", type=float, default=5.0, metavar="SECONDS", help="between decisions")
    scale.add_argument("--once", action="store_true", help="one decision, then exit")
    go = sub.choices["switch"]
    go.add_argument("--to", required=True, choices=["blue", "green"])
    go.add_argument("--preview", choices=["blue", "green", "none"], help="default: the other color")
    go.add_argument("--no-checks", action="store_true", help="skip the post-promotion checks")
    go.add_argument("--lock-wait", type=float, default=LOCK_WAIT_S, metavar="SECONDS")
    go.add_argument("--reason", required=True, type=reason_text,
                    help="why (one line, recorded in the audit trail with the actor); required")
    go.add_argument("--actor",
                    help="who the audit record names (default: $PAPER_TRADING_ACTOR, else the OS user)")
    args = parser.parse_args(argv)
    try:
        target = Target(args.project_dir / f"Pulumi.{args.stack}.yaml", args.stack)
        if args.command == "autoscale":
            return autoscale(target, args.stack, args.audit_file, args.interval, args.once)
        if args.command == "show":
            served = served_on(target.edges, target.proxy_service)
            for node, color in served.items():
                print(f"{node} {color}")
            # Unreadable or split: the operator must look (a split edge serves two colors).
            return 0 if len(set(served.values())) == 1 and "unreadable" not in served.values() else 1
        live = cast(Color, args.to)
        preview_arg = args.preview or ("green" if live == "blue" else "blue")
        preview = None if preview_arg == NONE else cast(Color, preview_arg)
        checker = None if args.no_checks else post_promotion_checker(target.handoff is not None)
        checks: Checks = "confirm" if args.no_checks else "post-promotion"
        auditor = Auditor.for_target(target.audit, actor=args.actor, reason=args.reason, checks=checks)
        result = switch_edges(target.edges, target.proxy_service, live, preview, target.listener,
                              checker=checker, lock_wait_s=args.lock_wait, handoff=target.handoff,
                              audit=auditor, operation="emergency-switch")
    except AuditUnavailable as exc:
        print(f"swarm routing: {exc}", file=sys.stderr)
        return EXIT_AUDIT_UNAVAILABLE
    except (ConfigError, RoutingError) as exc:
        print(f"swarm routing: {exc}", file=sys.stderr)
        return 1
    before = ", ".join(f"{node} {color}" for node, color in result.previous_live.items())
    recorded = (f"recorded as emergency-switch, checks={checks}" if auditor is not None
                else f"NOT recorded: {PROJECT}:security.audit.enabled is false")
    print(f"swarm routing: live {result.live} on every edge node in {result.switch_ms:.0f} ms "
          f"(was: {before}); reason: {args.reason}; {recorded}")
    return 0


def autoscale(target: Target, stack: str, audit_file: Path, interval: float, once: bool) -> int:
    """Decide every `interval` seconds until interrupted (or once); each decision printed as a line.

    A decision that cannot be made or applied (signal, live color, audit, alert) is printed and
    leaves the replicas as they are; with `--once` it is the exit status.
    """
    rule = target.swarm.autoscale
    if not rule.enabled:
        print(f"swarm autoscale: {PROJECT}:swarm.autoscale.enabled is false for stack {stack}",
              file=sys.stderr)
        return 1
    manager = target.swarm.manager_node
    scaler = Autoscaler(stack, rule, manager.endpoint, target.edges, target.proxy_service, target.services,
                        f"http://{manager.address}:{rule.signal_port}", FileSink(str(audit_file)))
    status = 0
    while True:
        try:
            outcome = scaler.tick()
            decision = outcome.decision
            assert decision is not None and outcome.signal is not None
            at = f" (at {decision.bound})" if decision.bound else ""
            print(f"swarm autoscale: {outcome.color} {decision.action} {decision.current} -> "
                  f"{decision.target}{at}: {decision.why}", flush=True)
            status = 0
        except (AutoscaleError, AuditUnavailable, RoutingError) as exc:
            print(f"swarm autoscale: nothing scaled: {exc}", file=sys.stderr, flush=True)
            status = 1
        if once:
            return status
        time.sleep(interval)
