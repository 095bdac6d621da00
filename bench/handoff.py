"""How long `release.handoff.hand_over` takes, against another revision of it, in one run.

Starts the work test stack (`tests/support/docker_env.py`'s `docker_env(work=True)`: blue and green from
the reference app image, Redis and RabbitMQ as the program renders them), promotes blue, then
moves the work back and forth, alternating the current `hand_over` and the one of `--baseline`
(a git revision: its release/handoff.py, loaded as a separate module) so that both see the
same machine at the same time. Each call's own `handoff_ms` (from before the publish until both
conditions held, exec round trips included) and its wall time are collected.

Last line: `handoff: runs=N current_ms=<median> baseline_ms=<median> (wall current/baseline ...)`.

    venv/bin/python bench/handoff.py --runs 9 --baseline 6bfeab9
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def baseline_module(revision: str) -> ModuleType:
    source = subprocess.run(["git", "show", f"{revision}:release/handoff.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("release._handoff_baseline", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "release"
    sys.modules[spec.name] = module
    exec(compile(source, f"{revision}:release/handoff.py", "exec"), module.__dict__)  # noqa: S102
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="handoffs per implementation")
    parser.add_argument("--baseline", default="HEAD", help="git revision of the handoff to compare with")
    args = parser.parse_args()

    from release import handoff as current
    from tests.support.docker_env import docker_env

    old = baseline_module(args.baseline)
    with docker_env(work=True) as env:
        target = env.handoff_target()
        old_target = old.HandoffTarget(target.redis_container, target.rabbitmq_container, target.timeout_s)
        current.hand_over(target, "blue", None, env.client)
        live = "blue"
        results: dict[str, list[tuple[float, float]]] = {"current": [], "baseline": []}
        for i in range(args.runs * 2):
            name = ("current", "baseline")[(i + i // 2) % 2]  # c b b c c b ...: each goes both ways
            nxt = "green" if live == "blue" else "blue"
            began = time.perf_counter()
            moved: Any = (current.hand_over(target, nxt, live, env.client) if name == "current"
                          else old.hand_over(old_target, nxt, live, env.client))
            wall = (time.perf_counter() - began) * 1000
            results[name].append((float(moved.handoff_ms), wall))
            print(f"{name:8} {live}->{nxt} handoff_ms={moved.handoff_ms:.0f} wall_ms={wall:.0f}",
                  file=sys.stderr)
            live = nxt
            time.sleep(0.5)  # let the new holder settle (first commits, scheduler) before the next move

    def median(name: str, k: int) -> float:
        return statistics.median(r[k] for r in results[name])

    print(f"handoff: runs={args.runs} current_ms={median('current', 0):.0f} "
          f"baseline_ms={median('baseline', 0):.0f} "
          f"(wall current/baseline {median('current', 1):.0f}/{median('baseline', 1):.0f} ms; "
          f"baseline {args.baseline})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
