"""Offline policy check: run the pack over a stack's offline-rendered graph, no engine needed.

    python -m policies.check --stack prod
    python -m policies.check --all [--policy-pack-config policy-config.json]
    python -m policies.check --graph build/render/prod     # a written (or hand-mutated) render

Prints one line per violation (level, policy, resource, message); exits 1 on any mandatory
violation, 0 otherwise. The same `POLICIES` run as under `pulumi preview --policy-pack policies`,
through pulumi_policy's own analyzer (see `policies/harness.py`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .harness import Analyzer, Violation, load_pack_config
from .props import image_repository
from .settings import DEFAULTS


def stack_app_images(graph: Any) -> list[str]:
    """The graph's blue/green image repositories: app images whatever the pack config says.

    Read from the stack's `blueImage`/`greenImage` outputs, else its stack file. Only ever
    widens what counts as the app (stricter); nothing else is taken from the stack.
    """
    outputs = getattr(graph, "outputs", None) or {}
    images = [outputs.get(f"{color}Image") for color in ("blue", "green")]
    if not any(images):
        images = _stack_file_images(getattr(graph, "stack", None))
    return [image_repository(i) for i in images if isinstance(i, str) and i]


def _stack_file_images(stack: str | None) -> list[Any]:
    if not stack:
        return []
    from tools.render import stack_config

    try:
        config, _ = stack_config(stack)
        deployment = json.loads(config.get("paper-trading:deployment") or "{}")
    except (OSError, ValueError):
        return []
    if not isinstance(deployment, dict):
        return []
    return [(deployment.get(c) or {}).get("image") for c in ("blue", "green")]


def effective_config(graph: Any, pack_config: Mapping[str, Any]) -> dict[str, Any]:
    merged = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in pack_config.items()}
    name = "app-containers-labelled"
    entry = merged.get(name)
    entry = dict(entry) if isinstance(entry, Mapping) else ({"enforcementLevel": entry} if entry else {})
    images = list(entry.get("appImages") or DEFAULTS[name]["appImages"])
    entry["appImages"] = images + [i for i in stack_app_images(graph) if i not in images]
    merged[name] = entry
    return merged


def check_graph(graph: Any, pack_config: Mapping[str, Any] | None = None) -> list[Violation]:
    """Every violation of the pack in a `tools.render.Graph` (stack-derived app images added)."""
    config = effective_config(graph, pack_config or {})
    return Analyzer(pack_config=config).run(graph.resources)


def check_stack(stack: str, pack_config: Mapping[str, Any] | None = None) -> list[Violation]:
    from tools.render import evaluate

    return check_graph(evaluate(stack), pack_config)


def _absent_render(path: Path) -> str | None:
    """Why `path` is no written render (None: it holds one to read)."""
    if not path.exists():
        return f"the folder {path} does not exist"
    if path.is_dir() and not (path / "resources.json").is_file():
        return f"the folder {path} holds no resources.json"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m policies.check", description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--stack", default="prod", help="stack to render (Pulumi.<stack>.yaml)")
    which.add_argument("--all", action="store_true", help="every Pulumi.*.yaml stack in the repo")
    which.add_argument("--graph", type=Path, action="append",
                       help="a render written by `python -m tools.render` (its folder or resources.json); "
                            "repeatable")
    parser.add_argument("--policy-pack-config", type=Path, help="JSON config, as for pulumi preview")
    parser.add_argument("--json", action="store_true", help="print violations as JSON lines")
    args = parser.parse_args(argv)
    from tools.render import evaluate, load_graph, stack_names

    pack_config = load_pack_config(args.policy_pack_config)
    stacks = stack_names(target=None) if args.all else [args.stack]
    sources: list[str | Path] = [*args.graph] if args.graph else [*stacks]
    mandatory = 0
    for source in sources:
        stack = str(source)
        started = time.perf_counter()
        absent = _absent_render(source) if isinstance(source, Path) else None
        if absent is not None:
            print(f"{stack}: BLOCKED: no render to check: {absent} "
                  f"(write one with `python -m tools.render --stack <name> --out {source}`)", file=sys.stderr)
            mandatory += 1
            continue
        try:
            graph = load_graph(source) if isinstance(source, Path) else evaluate(source)
        except Exception as exc:  # noqa: BLE001 - a stack that cannot be evaluated is blocked, not passed
            what = f"the render in {source} cannot be read" if isinstance(source, Path) else \
                "the program cannot be evaluated"
            print(f"{stack}: BLOCKED: {what}: {exc}", file=sys.stderr)
            mandatory += 1
            continue
        rendered = time.perf_counter()
        violations = check_graph(graph, pack_config)
        checked = time.perf_counter()
        for v in sorted(violations, key=lambda v: (not v.mandatory, v.policy, v.urn)):
            if args.json:
                print(json.dumps({"stack": stack, **v.__dict__}))
            else:
                print(f"{stack}: {v.line()}")
        count = sum(v.mandatory for v in violations)
        mandatory += count
        print(f"{stack}: {len(graph.resources)} resources, {count} mandatory and "
              f"{len(violations) - count} advisory violations "
              f"(render {rendered - started:.2f}s, policies {checked - rendered:.3f}s)", file=sys.stderr)
    return 1 if mandatory else 0


if __name__ == "__main__":
    raise SystemExit(main())
