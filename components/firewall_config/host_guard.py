"""The host guard's supervisor: load the ruleset, keep it loaded, mirror the IDS's bans.

Runs as PID 2 (under Docker's init) in the `host-guard` container (host network, NET_ADMIN +
NET_RAW only, read-only root). Plain standard library, no project imports: the component
hands this file to `python3 -c` and the ruleset through the environment (nothing to upload,
nothing writable). Also run directly by the tests inside network namespaces.

- start: `nft -f -` of the ruleset (atomic: the file deletes and redeclares its own table);
- every `--interval` seconds: if the table is gone (somebody flushed the ruleset, or a
  restarted dockerd took it along), load it again;
- every `--sync` seconds: the decisions directory -> sets `banned_v4`/`banned_v6`. One file per
  banned address, named after it (IPv6 with ':' as '_'), content `<unix-seconds-until> <reason>`.
  Every name and line is checked (the IDS parses attacker input) and a bad one is logged and
  skipped, never handed to nft. An element gets `timeout` = until - now; a file that is gone
  removes its element; an expired one is left to the kernel's timeout;
- SIGTERM/SIGINT: delete the table (removing the component leaves nothing behind) and exit 0.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable

TABLE = "inet paper_trading_guard"
SETS = {4: "banned_v4", 6: "banned_v6"}
REASON = re.compile(r"^[A-Za-z0-9_.:@/-]{1,64}$")
MAX_TIMEOUT = 30 * 86400
MAX_FILE_BYTES = 512


def log(message: str) -> None:
    print(f"host-guard: {message}", file=sys.stderr, flush=True)


def parse_decision(name: str, content: str, now: float) -> tuple[str, int, int] | str:
    """(address, ip version, seconds left) for a valid decision file, else why it is not."""
    if not re.fullmatch(r"[0-9A-Fa-f.:_]{2,45}", name):
        return "file name is not an address"
    try:
        address = ipaddress.ip_address(name.replace("_", ":"))
    except ValueError:
        return "file name is not an address"
    if str(address) != name.replace("_", ":").lower() and address.version == 4:
        return "file name is not a canonical address"
    if address.is_loopback or address.is_unspecified or address.is_multicast:
        return f"{address} may not be banned"
    lines = content.splitlines()
    if len(lines) != 1:
        return "content must be one line"
    parts = lines[0].split(" ")
    if len(parts) != 2 or not re.fullmatch(r"[0-9]{1,12}", parts[0]) or not REASON.fullmatch(parts[1]):
        return "content is not '<unix-seconds-until> <reason>'"
    left = int(parts[0]) - int(now)
    if left <= 0:
        return "expired"
    return str(address), address.version, min(left, MAX_TIMEOUT)


def read_decisions(directory: str, now: float) -> dict[tuple[int, str], int]:
    """{(version, address): seconds left} of every valid, current decision file."""
    wanted: dict[tuple[int, str], int] = {}
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return wanted
    for name in names:
        if name.startswith("."):
            continue  # the IDS's temp files before rename
        path = os.path.join(directory, name)
        try:
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            with open(path, "rb") as handle:
                raw = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            log(f"ignored {name!r}: {exc}")
            continue
        if len(raw) > MAX_FILE_BYTES:
            log(f"ignored {name!r}: larger than {MAX_FILE_BYTES} bytes")
            continue
        found = parse_decision(name, raw.decode("ascii", "replace"), now)
        if isinstance(found, str):
            if found != "expired":
                log(f"ignored {name!r}: {found}")
            continue
        address, version, left = found
        wanted[(version, address)] = left
    return wanted


class Guard:
    def __init__(self, ruleset: str, decisions: str, nft: str = "nft",
                 clock: Callable[[], float] = time.time) -> None:
        self.ruleset = ruleset
        self.decisions = decisions
        self.nft = nft
        self.clock = clock
        #: What this process put in the sets: (version, address) -> the decision's until.
        self.applied: dict[tuple[int, str], int] = {}

    def run_nft(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        done = subprocess.run([self.nft, *args], input=stdin, capture_output=True, text=True, timeout=30)
        if check and done.returncode != 0:
            raise RuntimeError(f"nft {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def table_loaded(self) -> bool:
        done = subprocess.run([self.nft, "list", "table", *TABLE.split()], capture_output=True,
                              text=True, timeout=30)
        return done.returncode == 0

    def load(self) -> None:
        self.run_nft("-f", "-", stdin=self.ruleset)
        self.applied.clear()  # the sets are new and empty
        log(f"ruleset loaded ({TABLE})")

    def elements(self, version: int) -> set[str]:
        out = json.loads(self.run_nft("-j", "list", "set", *TABLE.split(), SETS[version]))
        found: set[str] = set()
        for item in out.get("nftables", []):
            for element in (item.get("set") or {}).get("elem", []) or []:
                value = element.get("elem", {}).get("val") if isinstance(element, dict) else element
                if isinstance(value, str):
                    found.add(value)
        return found

    def sync(self) -> tuple[int, int]:
        """Make the sets match the decisions; (added, removed)."""
        now = self.clock()
        wanted = read_decisions(self.decisions, now)
        until = {key: int(now) + left for key, left in wanted.items()}
        commands: list[str] = []
        added = removed = 0
        for version in (4, 6):
            present = self.elements(version)
            for address in sorted(present):
                key = (version, address)
                if key not in wanted:
                    commands.append(f"delete element {TABLE} {SETS[version]} {{ {address} }}")
                    removed += 1
                    self.applied.pop(key, None)
            for key, left in sorted(wanted.items()):
                if key[0] != version:
                    continue
                address = key[1]
                if address in present and abs(self.applied.get(key, 0) - until[key]) <= 1:
                    continue
                if address in present:
                    commands.append(f"delete element {TABLE} {SETS[version]} {{ {address} }}")
                commands.append(f"add element {TABLE} {SETS[version]} {{ {address} timeout {left}s }}")
                self.applied[key] = until[key]
                added += 1
        if commands:
            self.run_nft("-f", "-", stdin="\n".join(commands) + "\n")
            log(f"bans: {added} added, {removed} removed")
        return added, removed

    def remove(self) -> None:
        if self.table_loaded():
            self.run_nft("delete", "table", *TABLE.split(), check=False)
            log(f"table {TABLE} deleted")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="host-guard")
    parser.add_argument("--decisions", default=os.environ.get("HOST_GUARD_DECISIONS_DIR",
                                                              "/var/lib/paper-trading/decisions"))
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between table checks")
    parser.add_argument("--sync", type=float, default=1.0, help="seconds between decision syncs")
    parser.add_argument("--nft", default="nft")
    parser.add_argument("--ruleset-file", help="read the ruleset here instead of HOST_GUARD_RULESET")
    parser.add_argument("--once", action="store_true", help="load and sync once, then exit")
    parser.add_argument("--remove", action="store_true", help="delete the table and exit")
    args = parser.parse_args(argv)
    if args.ruleset_file:
        with open(args.ruleset_file, encoding="utf-8") as handle:
            ruleset = handle.read()
    else:
        ruleset = os.environ.get("HOST_GUARD_RULESET", "")
    guard = Guard(ruleset, args.decisions, args.nft)
    if args.remove:
        guard.remove()
        return 0
    if not ruleset.strip():
        log("no ruleset given (HOST_GUARD_RULESET or --ruleset-file)")
        return 2
    stop: dict[str, bool | int] = {"now": False, "signal": 0}

    def on_signal(signum: int, _frame: object) -> None:
        stop["now"] = True
        stop["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    guard.load()
    guard.sync()
    if args.once:
        return 0
    last_check = time.monotonic()
    while not stop["now"]:
        time.sleep(max(0.05, min(args.sync, 1.0)))
        if stop["now"]:
            break
        try:
            if time.monotonic() - last_check >= args.interval:
                last_check = time.monotonic()
                if not guard.table_loaded():
                    log("table missing: loading it again")
                    guard.load()
            guard.sync()
        except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
            log(f"error: {exc}; retrying")
    guard.remove()
    # Non-zero (128 + SIGTERM, as a shell would): Docker's on-failure policy then restarts the
    # guard when dockerd comes back after stopping it; `docker stop` (a manual stop) does not.
    return 128 + int(stop["signal"])


if __name__ == "__main__":
    sys.exit(main())
