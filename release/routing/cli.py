"""The emergency CLI: `python -m release.routing switch|show ...` (same code as the resource)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, cast

import docker.errors
import requests

from contract import STACK_LABEL
from release.audit import (
    ACTOR_ENV,
    MAX_REASON,
    Auditor,
    AuditUnavailable,
    Checks,
    VolumeSink,
    default_actor,
    volume_name,
)
from release.handoff import DEFAULT_TIMEOUT_S, HandoffTarget
from release.routing.base import NONE, Endpoint, RoutingError
from release.routing.docker_side import LOCK_WAIT_S, current, docker_client, find_proxy
from release.routing.listener import post_promotion_checker
from release.routing.switching import switch
from settings import Color

# Why a Docker client call failed, as the first matching phrase of the client's (long) message.
_ENGINE_PROBLEMS = (
    ("Connection refused", "connection refused"),
    ("No such file or directory", "no socket at that path"),
    ("Permission denied", "permission denied (run as root or as a member of the docker group)"),
    ("timed out", "timed out"),
    ("Name or service not known", "host name not found"),
    ("Temporary failure in name resolution", "host name not found"),
    ("No route to host", "no route to host"),
)


def _engine_failure(exc: BaseException) -> str | None:
    """One line for an exception from the Docker client (None: not a Docker problem)."""


    if isinstance(exc, docker.errors.APIError):
        return f"the Docker Engine refused a request: {exc.explanation or exc}"
    if not isinstance(exc, docker.errors.DockerException | requests.exceptions.ConnectionError):
        return None
    text = str(exc)
    why = next((short for needle, short in _ENGINE_PROBLEMS if needle in text), None)
    if why is None:
        first = text.splitlines()[0] if text else type(exc).__name__
        why = first if len(first) <= 160 else first[:159] + "…"
    host = os.environ.get("DOCKER_HOST") or "unset, so the local socket unix:///var/run/docker.sock"
    return (
        f"cannot reach the Docker Engine (DOCKER_HOST={host}): {why}; start dockerd, or set DOCKER_HOST to "
        "the engine that runs the proxy"
    )


#: Exit status when the audit record cannot be written (EX_IOERR; the backup scripts use it too).
EXIT_AUDIT_UNAVAILABLE = 74


def reason_text(value: str) -> str:
    """`--reason`: one non-empty line, at most MAX_REASON characters."""
    text = value.strip()
    if not text:
        raise argparse.ArgumentTypeError("--reason must say why (it is recorded in the audit trail)")
    if "\n" in text or "\r" in text or len(text) > MAX_REASON:
        raise argparse.ArgumentTypeError(f"--reason must be one line of at most {MAX_REASON} characters")
    return text


def checks_done(args: argparse.Namespace) -> Checks:
    """What this emergency switch verifies: nothing, the listener only, or the post-promotion checks too."""
    if not args.url:
        return "none"
    return "confirm" if args.no_checks else "post-promotion"


def cli_auditor(args: argparse.Namespace, client: Any = None) -> Auditor:
    """The emergency CLI's audit writer: volume, image and stack found from the proxy's name.

    Always fail closed: no audit volume, or no writer image, refuses the switch before it
    acts (`AuditUnavailable`); `--audit-volume`/`--audit-image` point elsewhere. The record
    carries `--reason` and what the switch verified (`checks`).
    """


    client = client or docker_client()
    proxy = find_proxy(client, args.container)  # a wrong --container is the first thing to say
    prefix = args.container.removesuffix("-proxy")
    volume = args.audit_volume or volume_name(prefix)
    image = args.audit_image
    stack = proxy.labels.get(STACK_LABEL) or prefix
    try:
        client.volumes.get(volume)
    except docker.errors.NotFound:
        raise AuditUnavailable("emergency-switch", "started", f"volume {volume}",
                               "no such volume on this Docker Engine; pass --audit-volume") from None
    if not image:
        try:
            image = client.containers.get(f"{prefix}-backup").attrs["Config"]["Image"]
        except docker.errors.NotFound:
            raise AuditUnavailable("emergency-switch", "started", f"volume {volume}",
                                   f"no writer image: container {prefix}-backup not found; pass --audit-image"
                                   ) from None
    return Auditor(stack, VolumeSink(volume, str(image), client=client), args.actor or default_actor(),
                   fail_closed=True, reason=args.reason, checks=checks_done(args))


def cli_handoff(args: argparse.Namespace, client: Any = None) -> HandoffTarget:
    """Where the emergency switch hands the work over: containers named from the proxy's prefix.

    A missing container is a RoutingError before anything moves (the switch would fail
    half-way otherwise); `--no-handoff` is the way to move traffic alone.
    """

    client = client or docker_client()
    find_proxy(client, args.container)  # a wrong --container is the first thing to say
    prefix = args.container.removesuffix("-proxy")
    redis = args.redis_container or f"{prefix}-redis"
    rabbitmq = args.rabbitmq_container or f"{prefix}-rabbitmq"
    wanted = (("Redis", redis, "--redis-container"), ("RabbitMQ", rabbitmq, "--rabbitmq-container"))
    for role, name, option in wanted:
        try:
            client.containers.get(name)
        except docker.errors.NotFound:
            raise RoutingError(
                f"{role} container {name!r} not found, so the background work cannot be handed over; traffic "
                f"unchanged (pass {option}, or --no-handoff to move traffic only)"
            ) from None
    return HandoffTarget(redis, rabbitmq, args.handoff_timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m release.routing",
        description="Switch or show the live color directly on the proxy (same code as the resource).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("switch", help="make a color live: write, nginx -t, reload, confirm, check")
    go.add_argument("--to", required=True, choices=["blue", "green"])
    go.add_argument("--preview", choices=["blue", "green", "none"], help="default: the other color")
    go.add_argument("--container", required=True, help="the proxy container, e.g. paper-trading-proxy")
    go.add_argument("--url", help="public listener to confirm on, e.g. https://trading.example.com")
    go.add_argument("--ca-file")
    go.add_argument("--insecure", action="store_true", help="skip TLS verification when confirming")
    go.add_argument("--host-header")
    go.add_argument("--no-checks", action="store_true", help="skip the post-promotion checks")
    go.add_argument("--lock-wait", type=float, default=LOCK_WAIT_S, metavar="SECONDS",
                    help=f"wait this long for a switch in progress (default {LOCK_WAIT_S:g})")
    go.add_argument("--actor", help=f"who the audit record names (default: ${ACTOR_ENV}, else the OS user)")
    go.add_argument("--audit-volume", metavar="VOLUME",
                    help="audit volume (default: <prefix>-audit-data, the prefix from --container)")
    go.add_argument("--audit-image", metavar="IMAGE",
                    help="image of the one-shot audit writer (default: the <prefix>-backup container's)")
    go.add_argument("--reason", required=True, type=reason_text,
                    help="why (one line, recorded in the audit record with the actor); required")
    go.add_argument("--redis-container", metavar="NAME",
                    help="Redis holding the live color and the work lease (default: <prefix>-redis)")
    go.add_argument("--rabbitmq-container", metavar="NAME",
                    help="RabbitMQ whose consumers are checked (default: <prefix>-rabbitmq)")
    go.add_argument("--handoff-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                    help=f"how long the new color has to take the work (default {DEFAULT_TIMEOUT_S:g})")
    go.add_argument("--no-handoff", action="store_true",
                    help="move traffic only, not the background work (e.g. no Redis on this stack)")
    show = sub.add_parser("show", help="print the routing file the proxy serves from")
    show.add_argument("--container", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "show":
            print(current(args.container), end="")
            return 0
        live = cast(Color, args.to)
        preview_arg: str | None = args.preview or ("green" if live == "blue" else "blue")
        preview = None if preview_arg == NONE else cast(Color, preview_arg)
        endpoint = Endpoint(args.url, args.ca_file, args.insecure, args.host_header) if args.url else None
        handoff = None if args.no_handoff else cli_handoff(args)
        checker = None if args.no_checks or endpoint is None else post_promotion_checker(handoff is not None)
        auditor = cli_auditor(args)
        result = switch(args.container, live, preview, endpoint, checker=checker, lock_wait_s=args.lock_wait,
                        audit=auditor, operation="emergency-switch", handoff=handoff)
    except AuditUnavailable as exc:
        print(f"routing: {exc}", file=sys.stderr)
        return EXIT_AUDIT_UNAVAILABLE
    except RoutingError as exc:
        print(f"routing: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        problem = _engine_failure(exc)
        if problem is None:
            raise
        print(f"routing: {problem}", file=sys.stderr)
        return 1
    confirmed = "confirmed" if endpoint else "not confirmed (no --url)"
    work = (f"work handed over in {result.handoff_ms:.0f} ms (epoch {result.epoch})"
            if result.handoff_ms is not None else "background work not moved (--no-handoff)")
    print(f"routing: live {result.previous_live} -> {result.live} in {result.switch_ms:.0f} ms, {confirmed}; "
          f"{work}")
    print(f"routing: recorded as emergency-switch, checks={checks_done(args)}; security.audit_log fails "
          f"unless a passed gate verdict for {result.live} precedes or follows it")
    return 0
