"""Benchmark: evaluating the prod program vs merely importing its libraries.

Each sample is a fresh Python process (wall time), so both sides pay interpreter
start-up alike. Prints the medians of N runs and their ratio; the foundation bar
is ratio <= 1.5. Optionally times the offline policy check on top (bar: < 0.2 s).
Each figure that has a bar is printed with it and PASS or FAIL on its result line;
the exit status is 0 when every figure is within its bar, 1 when one is not
(`--bar`/`--policy-bar` set other bars).

`--floor` also times what no program of this shape can go below: a generated program
that registers the same resources (same types, same counts, same component parents)
with minimal inputs, no config model and no generated files; and that floor plus
the pydantic model machinery a typed config needs (BaseModel is lazily imported by
`import pydantic`, so the import side does not pay for it).

`--instructions` counts instructions under valgrind's callgrind instead (one run each,
about 25 s per program; repeatable to about 0.1 %): a check of the ratio that does not
depend on a noisy machine's clock.

    python bench/evaluate.py [--runs 5] [--stack prod] [--with-policies] [--floor] [--instructions]
                             [--bar 1.5] [--policy-bar 0.2]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPORTS = "import pulumi, pulumi_docker, pulumi_random, pydantic, httpx"
EVALUATE = "from tools.render import evaluate; evaluate({stack!r})"
CHECK = (
    "from tools.render import evaluate; from policies.check import check_graph; "
    "check_graph(evaluate({stack!r}))"
)
FLOOR = (
    "from pathlib import Path; from tools.render import evaluate; "
    "evaluate('floor', {{}}, [], Path({root!r}))"
)
PYDANTIC_NAMES = (
    "from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator\n"
)

# The floor program: one minimal resource per registered resource of the real graph.
FLOOR_PROGRAM = '''\
import json

import pulumi
import pulumi_docker as docker
import pulumi_random as random
from pulumi.dynamic import CreateResult, Resource, ResourceProvider

COUNTS = json.loads({counts!r})


class _Provider(ResourceProvider):
    def create(self, props):
        return CreateResult("id", props)


class _Dynamic(Resource):
    def __init__(self, name):
        super().__init__(_Provider(), name, {{"value": 1}})


class _Component(pulumi.ComponentResource):
    def __init__(self, type_, name):
        super().__init__(type_, name)


parents = [_Component(t, f"c{{i}}") for i, t in enumerate(COUNTS.pop("components"))]
image = None
n = 0
for type_, count in COUNTS.items():
    for _ in range(count):
        n += 1
        opts = pulumi.ResourceOptions(parent=parents[n % len(parents)])
        if type_ == "docker:index/container:Container":
            docker.Container(f"r{{n}}", name=f"r{{n}}", image=image.image_id, opts=opts)
        elif type_ == "docker:index/remoteImage:RemoteImage":
            image = docker.RemoteImage(f"r{{n}}", name=f"image:{{n}}", opts=opts)
        elif type_ == "docker:index/volume:Volume":
            docker.Volume(f"r{{n}}", name=f"r{{n}}", opts=opts)
        elif type_ == "docker:index/network:Network":
            docker.Network(f"r{{n}}", name=f"r{{n}}", opts=opts)
        elif type_ == "random:index/randomPassword:RandomPassword":
            random.RandomPassword(f"r{{n}}", length=32, opts=opts)
        elif type_ == "pulumi-python:dynamic:Resource":
            _Dynamic(f"r{{n}}")
        else:
            raise SystemExit(f"floor: no minimal stand-in for {{type_}}")
'''

# As a user runs it: bytecode caching on (some shells export PYTHONDONTWRITEBYTECODE,
# which would recompile the project's modules on every evaluation).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _time(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, check=True, capture_output=True)
    return time.perf_counter() - start


def _instructions(code: str) -> int:
    """Instructions executed by one run of `code` (callgrind's `Collected` count)."""
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c", code],
        cwd=ROOT, env=ENV, check=True, capture_output=True, text=True,
    )
    found = re.search(r"Collected\s*:\s*(\d+)", run.stderr)
    if found is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{run.stderr[-2000:]}")
    return int(found.group(1))


def _floor_programs(stack: str, folder: Path) -> dict[str, str]:
    """Write the floor programs for `stack`'s graph; return their timing code by label."""
    sys.path.insert(0, str(ROOT))
    from tools.render import evaluate

    graph = evaluate(stack)
    components = sorted(r.type for r in graph.resources if not r.custom)
    counts = collections.Counter(r.type for r in graph.resources if r.custom)
    # Images first, so every container has one to reference.
    ordered = dict(sorted(counts.items(), key=lambda kv: kv[0] != "docker:index/remoteImage:RemoteImage"))
    program = FLOOR_PROGRAM.format(counts=json.dumps({"components": components, **ordered}))
    codes = {}
    for label, prelude in (("floor", ""), ("floor+pydantic", PYDANTIC_NAMES)):
        root = folder / label
        root.mkdir()
        (root / "__main__.py").write_text(prelude + program)
        codes[label] = FLOOR.format(root=str(root))
    print(f"floor: {sum(counts.values())} custom resources {dict(counts)}, {len(components)} components")
    return codes


RATIO_BAR = 1.5  # evaluate/import, the foundation issue's bar
POLICY_BAR_S = 0.2  # what the offline policy check may add to an evaluation


def verdict(value: float, bar: float, strict: bool = False) -> bool:
    """Within the bar: at most `bar`, or below it when `strict`."""
    return value < bar if strict else value <= bar


def result_line(label: str, value: str, bar: str, ok: bool) -> str:
    return f"{label}: {value} (bar {bar}): {'PASS' if ok else 'FAIL'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stack", default="prod")
    parser.add_argument("--with-policies", action="store_true",
                        help="also time evaluate + offline policy check")
    parser.add_argument("--floor", action="store_true",
                        help="also time the same resources with minimal inputs and no program logic")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions with valgrind (callgrind) instead of timing")
    parser.add_argument("--bar", type=float, default=RATIO_BAR, metavar="RATIO",
                        help=f"evaluate/import ratio that passes (default {RATIO_BAR:g})")
    parser.add_argument("--policy-bar", type=float, default=POLICY_BAR_S, metavar="SECONDS",
                        help=f"time the offline policy check may add (default {POLICY_BAR_S:g} s)")
    args = parser.parse_args(argv)
    if args.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind on PATH")
    codes = {"import": IMPORTS, "evaluate": EVALUATE.format(stack=args.stack)}
    if args.with_policies:
        codes["evaluate+policies"] = CHECK.format(stack=args.stack)
    with tempfile.TemporaryDirectory(prefix="floor-") as tmp:
        if args.floor:
            codes.update(_floor_programs(args.stack, Path(tmp)))
        for code in codes.values():  # warm the file and bytecode caches once for every side
            _time(code)
        if args.instructions:
            return _report_instructions(codes, args.bar)
        samples: dict[str, list[float]] = {name: [] for name in codes}
        for _ in range(args.runs):  # interleaved, so drift on a noisy machine hits every side
            for name, code in codes.items():
                samples[name].append(_time(code))
    med = {k: statistics.median(v) for k, v in samples.items()}
    for name, value in med.items():
        print(f"{name:>18}: median {value:.3f} s over {args.runs} runs")
    passed = _ratio_lines(med, args.bar)
    if "evaluate+policies" in med:
        added = med["evaluate+policies"] - med["evaluate"]
        ok = verdict(added, args.policy_bar, strict=True)
        print(result_line("offline policy check adds", f"{added:.3f} s", f"< {args.policy_bar:g} s", ok))
        passed = passed and ok
    return 0 if passed else 1


def _ratio_lines(values: dict[str, float], bar: float) -> bool:
    """Print each side's ratio to the import; only evaluate/import has a bar. True when within it."""
    passed = True
    for name, value in values.items():
        if name == "import":
            continue
        ratio = value / values["import"]
        if name == "evaluate":
            ok = verdict(ratio, bar)
            print(result_line("evaluate/import ratio", f"{ratio:.2f}", f"<= {bar:g}", ok))
            passed = passed and ok
        else:
            print(f"{name}/import ratio: {ratio:.2f}")
    return passed


def _report_instructions(codes: dict[str, str], bar: float) -> int:
    counts = {name: _instructions(code) for name, code in codes.items()}
    for name, count in counts.items():
        print(f"{name:>18}: {count / 1e9:.3f} G instructions")
    return 0 if _ratio_lines({k: float(v) for k, v in counts.items()}, bar) else 1


if __name__ == "__main__":
    raise SystemExit(main())
