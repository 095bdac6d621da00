"""Benchmark: a healthy validation run of >= 15 checks must finish in under 3 s (median of 5).

Starts the reference app and, when nginx is installed, a real nginx TLS front with a
test CA (trustme) in front of it, then runs `python -m validation` N times against the
HTTPS front (fresh process each time: wall time includes interpreter start-up and
imports). Prints the median wall time, the median in-run duration from the JSON report
and the number of checks that passed.

    python bench/validation.py [--runs 5] [--plain]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.fakes.validation_servers import nginx_front, reference_app  # noqa: E402

BAR_SECONDS = 3.0
MIN_CHECKS = 15


def _run(args: list[str], report: Path, env: dict[str, str]) -> tuple[float, float, int, bool]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "validation", *args, "--report", str(report)],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    doc = json.loads(report.read_text())
    passed = sum(1 for c in doc["checks"] if c["status"] == "passed")
    if proc.returncode != 0:
        print(proc.stdout, file=sys.stderr)
    return wall, float(doc["durationSeconds"]), passed, proc.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--plain", action="store_true", help="plain HTTP against the app (no nginx/TLS)")
    opts = parser.parse_args()
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("VALIDATION_", "BINANCE_", "KUCOIN_"))}
    keep = os.environ.get("BENCH_KEEP")
    with tempfile.TemporaryDirectory() as tmp, reference_app(color="green") as app:
        work = Path(tmp)
        if opts.plain or not shutil.which("nginx"):
            mode, args = "plain HTTP, reference app", ["--base-url", app.url, "--color", "green"]
            samples = [_run(args, work / f"r{i}.json", env) for i in range(opts.runs)]
        else:
            import trustme

            ca = trustme.CA()
            leaf = ca.issue_cert("127.0.0.1", "localhost")
            with nginx_front(work / "nginx", app.port, leaf.cert_chain_pems[0].bytes(),
                             leaf.private_key_pem.bytes(), ca.cert_pem.bytes()) as front:
                mode = "HTTPS via nginx (TLS, headers, redirect, rate limit)"
                args = ["--base-url", front.https_url, "--color", "green", "--ca-file", front.ca_file]
                env["VALIDATION_HTTP_URL"] = front.http_url
                samples = [_run(args, work / f"r{i}.json", env) for i in range(opts.runs)]
        if keep:
            shutil.copy(work / "r0.json", keep)
    walls = [s[0] for s in samples]
    inner = [s[1] for s in samples]
    checks = min(s[2] for s in samples)
    ok = all(s[3] for s in samples)
    median = statistics.median(walls)
    print(f"mode: {mode}")
    print(f"runs: {opts.runs}; checks passed per run: {checks}; all exit 0: {ok}")
    print(f"wall per run (s): {', '.join(f'{w:.2f}' for w in walls)}")
    in_run = statistics.median(inner)
    print(f"median wall: {median:.2f} s (in-run median {in_run:.2f} s); bar < {BAR_SECONDS} s")
    good = ok and checks >= MIN_CHECKS and median < BAR_SECONDS
    print("PASS" if good else "FAIL")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
