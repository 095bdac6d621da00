"""Benchmark: evaluating the prod program vs merely importing its libraries.

Each sample is a fresh Python process (wall time), so both sides pay interpreter
start-up alike. Prints the medians of N runs and their ratio; the foundation bar
is ratio <= 1.5. Optionally times the offline policy check on top (bar: < 0.2 s).

    python bench/evaluate.py [--runs 5] [--stack prod]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPORTS = "import pulumi, pulumi_docker, pulumi_random, pydantic, httpx"
EVALUATE = "from tools.render import evaluate; evaluate({stack!r})"
CHECK = (
    "from tools.render import evaluate; from policies.check import check_graph; "
    "check_graph(evaluate({stack!r}))"
)


# As a user runs it: bytecode caching on (some shells export PYTHONDONTWRITEBYTECODE,
# which would recompile the project's modules on every evaluation).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _time(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stack", default="prod")
    parser.add_argument("--with-policies", action="store_true",
                        help="also time evaluate + offline policy check")
    args = parser.parse_args()
    _time(IMPORTS)  # warm the file and bytecode caches once for both sides
    _time(EVALUATE.format(stack=args.stack))
    samples: dict[str, list[float]] = {"import": [], "evaluate": [], "evaluate+policies": []}
    for _ in range(args.runs):  # interleaved, so drift on a noisy machine hits both sides
        samples["import"].append(_time(IMPORTS))
        samples["evaluate"].append(_time(EVALUATE.format(stack=args.stack)))
        if args.with_policies:
            samples["evaluate+policies"].append(_time(CHECK.format(stack=args.stack)))
    med = {k: statistics.median(v) for k, v in samples.items() if v}
    for name, value in med.items():
        print(f"{name:>18}: median {value:.3f} s over {args.runs} runs")
    print(f"evaluate/import ratio: {med['evaluate'] / med['import']:.2f}")
    if "evaluate+policies" in med:
        print(f"offline policy check adds: {med['evaluate+policies'] - med['evaluate']:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
