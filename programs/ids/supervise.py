"""The IDS container's main process: fail2ban-server, its heartbeat, metrics and expiry sweep.

Starts `fail2ban-server -f` with the generated configuration and, every `heartbeat_seconds`,
asks it `ping` over its socket; while it answers, the metrics (served on `metrics_listen`,
`/metrics`, scraped by Prometheus as job `ids`) carry a fresh
`paper_trading_ids_heartbeat_timestamp_seconds` (a stale one is `IdsDetectorDown`). They
also carry `paper_trading_ids_bans_total{jail}` (counted by decide.py) and
`paper_trading_ids_active_bans` (decision files not yet expired). Decision files whose time is
up are removed here too: fail2ban forgets its bans when it restarts (in-memory database), the
files must not outlive them. Exits with fail2ban's status when the server dies (Docker restarts
the container). Standard library only.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
PATHS = json.loads((HERE / "paths.json").read_text())
STOP = False
METRICS = {"text": ""}


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        body = METRICS["text"].encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return


def _stop(_signum: int, _frame: FrameType | None) -> None:
    global STOP
    STOP = True


def decisions(now: float) -> tuple[int, list[Path]]:
    """(active ban count, expired or unreadable files) of the decisions directory."""
    active, expired = 0, []
    for entry in Path(PATHS["decisions_dir"]).iterdir():
        if entry.name.startswith(".") or not entry.is_file():
            continue
        try:
            until = int(entry.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            expired.append(entry)
            continue
        if until <= now:
            expired.append(entry)
        else:
            active += 1
    return active, expired


def update_metrics(heartbeat: float | None) -> None:
    state = Path(PATHS["run_dir"]) / "state"
    now = time.time()
    active, expired = decisions(now)
    for entry in expired:
        entry.unlink(missing_ok=True)
    lines = [
        "# HELP paper_trading_ids_bans_total Bans decided by the IDS since it started, by jail.",
        "# TYPE paper_trading_ids_bans_total counter",
    ]
    for jail in PATHS["jails"]:
        counter = state / f"bans_total.{jail}"
        count = int(counter.read_text().strip() or 0) if counter.exists() else 0
        lines.append(f'paper_trading_ids_bans_total{{jail="{jail}"}} {count}')
    lines += [
        "# HELP paper_trading_ids_active_bans Addresses banned now (decision files not expired).",
        "# TYPE paper_trading_ids_active_bans gauge",
        f"paper_trading_ids_active_bans {active}",
    ]
    if heartbeat is not None:
        lines += [
            "# HELP paper_trading_ids_heartbeat_timestamp_seconds Last time fail2ban answered a ping.",
            "# TYPE paper_trading_ids_heartbeat_timestamp_seconds gauge",
            f"paper_trading_ids_heartbeat_timestamp_seconds {heartbeat:.0f}",
        ]
    METRICS["text"] = "\n".join(lines) + "\n"


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    (Path(PATHS["run_dir"]) / "state").mkdir(parents=True, exist_ok=True)
    conf = PATHS["conf_dir"]
    host, _, port = str(PATHS["metrics_listen"]).rpartition(":")
    update_metrics(None)
    exporter = ThreadingHTTPServer((host, int(port)), _Metrics)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    # fail2ban refuses a jail whose log file does not exist: wait for the proxy's first open
    # (no heartbeat meanwhile, so IdsDetectorDown fires if it never comes).
    access_log = Path(PATHS["access_log"])
    if not access_log.exists():
        print(f"supervise: waiting for {access_log}", file=sys.stderr)
    while not access_log.exists():
        if STOP:
            return 0
        time.sleep(1)
    server = subprocess.Popen([PATHS["fail2ban_server"], "-f", "-x", "-c", conf])
    last_beat: float | None = None
    while not STOP:
        code = server.poll()
        if code is not None:
            print(f"supervise: fail2ban-server exited with {code}", file=sys.stderr)
            return code or 1
        ping = subprocess.run([PATHS["fail2ban_client"], "-c", conf, "ping"],
                              capture_output=True, timeout=10, check=False)
        if ping.returncode == 0:
            last_beat = time.time()
        update_metrics(last_beat)
        deadline = time.monotonic() + float(PATHS["heartbeat_seconds"])
        while not STOP and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.2)
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
