"""What scripts/dev-up tells its user: the parts a stack runs without, the result, what to try next.

    python -m tools.devinfo --stack dev notices     # before `pulumi up`: parts off, the host firewall
    python -m tools.devinfo --stack dev summary     # after it: the app answers with the live color?
    ... | python -m tools.devinfo tracebacks        # fold a Python traceback into one line
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, cast

import httpx

from render.firewall import table_name_for
from settings import PROJECT, Settings, parse_settings

#: Why a part is off where no registry answers (one line each, printed before `pulumi up`).
WHY_OFF = {
    "Grafana": "no Debian package, and its Go modules are not served here: "
               "turn on monitoring.grafana.enabled with images.grafana from a registry",
    "log aggregation": "turn on monitoring.logs.enabled with backend victorialogs: VictoriaLogs and vlagent "
                       "are built here from Go modules (Loki and promtail only come from a registry)",
}


def stack_settings(stack: str) -> Settings:
    from tools.render import stack_config

    config, secret_keys = stack_config(stack)
    prefix = f"{PROJECT}:"
    raw = {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)}
    return parse_settings(raw, frozenset(k[len(prefix):] for k in secret_keys if k.startswith(prefix)))


def notices(settings: Settings) -> list[str]:
    """One line per part the stack runs without, and the host firewall's effect on this host."""
    lines = []
    mon = settings.monitoring
    if not mon.grafana.enabled:
        lines.append(f"runs without Grafana ({WHY_OFF['Grafana']})")
    if not mon.logs.enabled:
        lines.append(f"runs without log aggregation ({WHY_OFF['log aggregation']})")
    firewall = settings.security.firewall
    if firewall.enabled:
        table = table_name_for(settings.name_prefix)
        ports = f"{settings.proxy.http_port}/{settings.proxy.https_port}"
        lines.append(
            f"the host firewall is ON for this stack: `pulumi up` starts {settings.name_prefix}-host-guard, "
            f"which loads the nftables table `inet {table}` into THIS host: from outside, only ports "
            f"{ports} reach this stack's containers (security.firewall.enabled: false turns it off)")
    else:
        lines.append("the host firewall is off on this stack: this host's nftables are left alone "
                     "(security.firewall.enabled; prod has it on)")
    return lines


def _outputs(pulumi: str, stack: str) -> dict[str, Any]:
    proc = subprocess.run([pulumi, "stack", "output", "--json", "--stack", stack, "--non-interactive"],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"pulumi stack output failed: {proc.stderr.strip().splitlines()[-1:]}")
    document: dict[str, Any] = json.loads(proc.stdout)
    return document


def served_color(app_url: str) -> tuple[int, str | None]:
    """The status and X-Deployment-Color of the app's /health through the public listener."""
    response = httpx.get(f"{app_url.rstrip('/')}/health", timeout=10, verify=False)
    return response.status_code, response.headers.get("x-deployment-color")


def summary(outputs: dict[str, Any], stack: str, prefix: str, status: int, color: str | None,
            elapsed: int | None) -> list[str]:
    live, idle = outputs.get("activeColor"), outputs.get("previewColor")
    took = f" in {elapsed} s" if elapsed is not None else ""
    lines = [
        f"the {stack} stack is up{took}: {live} is live (gated), {idle} is warm on the preview listener",
        f"  app          {outputs.get('appUrl')}   (GET /health: {status}, X-Deployment-Color: {color})",
        f"  preview      {outputs.get('previewUrl')}   (the idle color, for checks before a flip)",
    ]
    urls = (("prometheus", "prometheusUrl"), ("alertmanager", "alertmanagerUrl"), ("grafana", "grafanaUrl"))
    for label, key in urls:
        if outputs.get(key):
            lines.append(f"  {label:<12} {outputs[key]}")
    if "alertmanagerPassword" in outputs:
        lines.append(f"  (Alertmanager's basic-auth password: pulumi stack output alertmanagerPassword "
                     f"--show-secrets --stack {stack})")
    dev_up = f"--stack {stack} && scripts/dev-up"
    lines += [
        f"  outputs      pulumi stack output --stack {stack}",
        "try next (README, Operations runbook):",
        f"  release      pulumi config set --path deployment.{idle}.image <image> {dev_up}",
        f"  flip         pulumi config set --path deployment.activeColor {idle} {dev_up}",
        f"  rollback     pulumi config set --path deployment.activeColor {live} {dev_up}",
        f"  emergency    venv/bin/python -m release.routing show --container {prefix}-proxy",
        f"  backup       docker exec {prefix}-backup backup once   (then: restore --list, docs/backup.md)",
        "  tear down    scripts/dev-down    (data volumes kept; scripts/dev-down --delete-data removes them)",
    ]
    return lines


def fold_tracebacks(lines: Iterable[str], keep: TextIO | None = None) -> Iterator[str]:
    """The lines as they come, each Python traceback replaced by one line (the exception's last line).

    A traceback starts at `Traceback (most recent call last):` and ends at the first line indented no
    deeper than that header (the exception line)."""
    block: list[str] = []
    indent = ""
    for line in lines:
        if not block:
            match = re.match(r"^(\s*(?:\S+:\s+)?)Traceback \(most recent call last\):", line)
            if match:
                block, indent = [line], re.match(r"^\s*", line).group(0)  # type: ignore[union-attr]
                continue
            yield line
            continue
        block.append(line)
        stripped = line.rstrip("\n")
        current = re.match(r"^\s*", stripped).group(0)  # type: ignore[union-attr]
        if stripped.strip() and len(current) <= len(indent) and not stripped.lstrip().startswith(
                ("File ", "During handling", "The above exception", "Traceback")):
            if keep is not None:
                keep.writelines(block)
            name = getattr(keep, "name", None)
            where = f", kept in {name}" if name else ""
            yield f"{indent}(the program stopped: {stripped.strip()}; its traceback is folded{where})\n"
            block = []
    if block:  # the stream ended inside a traceback
        if keep is not None:
            keep.writelines(block)
        yield f"{indent}(a Python traceback of {len(block)} lines was folded)\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.devinfo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--pulumi", default="pulumi")
    parser.add_argument("what", choices=("notices", "summary", "tracebacks"))
    parser.add_argument("--elapsed", type=int)
    args = parser.parse_args(argv)
    if args.what == "tracebacks":
        with tempfile.NamedTemporaryFile("w", prefix="dev-up-traceback.", suffix=".txt", delete=False) as fh:
            keep = cast(TextIO, fh)
            for line in fold_tracebacks(sys.stdin, keep):
                sys.stdout.write(line)
                sys.stdout.flush()
        if os.path.getsize(keep.name) == 0:
            os.unlink(keep.name)
        return 0
    try:
        settings = stack_settings(args.stack)
    except Exception as exc:  # noqa: BLE001 - one message, no traceback
        print(f"dev-up: error: {exc}", file=sys.stderr)
        return 1
    if args.what == "notices":
        for line in notices(settings):
            print(f"dev-up: {line}", file=sys.stderr)
        return 0
    try:
        outputs = _outputs(args.pulumi, args.stack)
        status, color = served_color(str(outputs.get("appUrl")))
    except (RuntimeError, httpx.HTTPError, ValueError) as exc:
        print(f"dev-up: the stack deployed, but the app did not answer: {exc}", file=sys.stderr)
        return 1
    for line in summary(outputs, args.stack, settings.name_prefix, status, color, args.elapsed):
        print(f"dev-up: {line}", file=sys.stderr)
    if status != 200 or color != outputs.get("activeColor"):
        print(f"dev-up: error: the app answered {status} with X-Deployment-Color {color!r}, "
              f"but activeColor is {outputs.get('activeColor')!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
