"""The host guard's supervisor: load the ruleset, keep it loaded, mirror the IDS's bans.

Runs as PID 2 (under Docker's init) in the `host-guard` container (host network, NET_ADMIN +
NET_RAW only, read-only root). Plain standard library, no project imports: the component
hands this file to `python3 -c` and the ruleset through the environment (nothing to upload,
nothing writable). Also run directly by the tests inside network namespaces.

- start: refuse (exit 2) when an interface named as one of this stack's Docker bridges
  (`HOST_GUARD_BRIDGES`) exists but is no bridge, or bridges a physical device (an uplink);
  then `nft -f -` of the ruleset plus the current bans, one transaction (the file deletes and
  redeclares the stack's own table, named in its first line);
- every `--interval` seconds: if the table is gone or differs from what was loaded (its
  `ruleset:<sha256>` comment, its chains, rules and sets), load it again;
- every `--sync` seconds: the decisions directory -> sets `banned_v4`/`banned_v6`. One file per
  banned address, named after it (IPv6 with ':' as '_'), content `<unix-seconds-until> <reason>`.
  Every name and line is checked (the IDS parses attacker input) and a bad one is logged and
  skipped, never handed to nft; an address in a never-banned network (`HOST_GUARD_NEVER_BAN`:
  admin and allow-listed sources) is refused. An IPv6 ban covers the address's /64. An element
  gets `timeout` = until - now; a file that is gone removes its element; an expired one is
  left to the kernel's timeout;
- SIGTERM/SIGINT (`docker stop`, a restart, dockerd stopping): exit 143 and leave the table
  loaded (fail closed: the rules and the bans stay; bans still expire by their timeout);
- SIGUSR1 (the decommission: `pulumi destroy` or `docker kill -s USR1 <guard>`) or `--remove`:
  delete the table and exit 0;
- `--check` (the container's health check): exit 0 only when the loaded table carries the
  wanted ruleset's digest and its rules are those loaded (the snapshot in `--state-dir`).
"""

from __future__ import annotations

import argparse
import hashlib
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
V6_PREFIX = 64
SETS = {4: "banned_v4", 6: "banned_v6"}
REASON = re.compile(r"^[A-Za-z0-9_.:@/-]{1,64}$")
MAX_TIMEOUT = 30 * 86400
MAX_FILE_BYTES = 512


def log(message: str) -> None:
    print(f"host-guard: {message}", file=sys.stderr, flush=True)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_decision(name: str, content: str, now: float,
                   never: tuple[Network, ...] = ()) -> tuple[str, int, int] | str:
    """(set element, ip version, seconds left) for a valid decision file, else why it is not.

    The element is the address for IPv4 and the address's /64 network address for IPv6.
    """
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
    banned: Network = ipaddress.ip_network(f"{address}/{32 if address.version == 4 else V6_PREFIX}",
                                           strict=False)
    for network in never:
        if network.version == banned.version and banned.overlaps(network):
            return f"{address} is an admin or allow-listed source ({network}): never banned"
    lines = content.splitlines()
    if len(lines) != 1:
        return "content must be one line"
    parts = lines[0].split(" ")
    if len(parts) != 2 or not re.fullmatch(r"[0-9]{1,12}", parts[0]) or not REASON.fullmatch(parts[1]):
        return "content is not '<unix-seconds-until> <reason>'"
    left = int(parts[0]) - int(now)
    if left <= 0:
        return "expired"
    return str(banned.network_address), address.version, min(left, MAX_TIMEOUT)


def read_decisions(directory: str, now: float,
                   never: tuple[Network, ...] = ()) -> dict[tuple[int, str], int]:
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
        found = parse_decision(name, raw.decode("ascii", "replace"), now, never)
        if isinstance(found, str):
            if found != "expired":
                log(f"ignored {name!r}: {found}")
            continue
        address, version, left = found
        wanted[(version, address)] = max(left, wanted.get((version, address), 0))
    return wanted


def table_of(ruleset: str) -> str:
    """The table a ruleset declares in its first `table <family> <name>` line."""
    found = re.search(r"^table (inet [A-Za-z][A-Za-z0-9_]{0,63})$", ruleset, re.MULTILINE)
    if not found:
        raise ValueError("the ruleset declares no `table inet <name>`")
    return found.group(1)


def digest_of(ruleset: str) -> str:
    found = re.search(r'comment "(ruleset:[0-9a-f]{64})"', ruleset)
    return found.group(1) if found else ""


def bridge_problems(names: list[str], sys_net: str = "/sys/class/net") -> list[str]:
    """Why an interface named as a Docker bridge of this stack is not one (empty: all fine).

    A name that does not exist yet is fine (nft matches names, not indexes); one that exists
    must be a bridge, and none of its ports may be a physical device (that is an uplink).
    """
    found: list[str] = []
    for name in names:
        path = os.path.join(sys_net, name)
        if not os.path.exists(path):
            continue
        if not os.path.isdir(os.path.join(path, "bridge")):
            found.append(f"{name} is not a bridge")
            continue
        brif = os.path.join(path, "brif")
        for port in sorted(os.listdir(brif)) if os.path.isdir(brif) else []:
            if os.path.exists(os.path.join(sys_net, port, "device")):
                found.append(f"{name} bridges the physical device {port} (a host uplink, not Docker's)")
    return found


def _strip(value: object) -> object:
    """A listing without what changes at run time: handles, counters, set elements."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in sorted(value.items())
                if k not in ("handle", "elem", "metainfo", "expires")
                and not (k == "counter" and isinstance(v, dict))}
    if isinstance(value, list):
        return [_strip(v) for v in value if not (isinstance(v, dict) and "metainfo" in v)]
    return value


class Guard:
    def __init__(self, ruleset: str, decisions: str, nft: str = "nft",
                 clock: Callable[[], float] = time.time, never: tuple[Network, ...] = (),
                 table: str | None = None, state_dir: str | None = None) -> None:
        self.ruleset = ruleset
        self.decisions = decisions
        self.nft = nft
        self.clock = clock
        self.never = never
        self.table = table or (table_of(ruleset) if ruleset.strip() else TABLE)
        self.digest = digest_of(ruleset)
        self.state_dir = state_dir
        #: The table's structure right after the last load (what the health check compares).
        self.structure = ""
        #: What this process put in the sets: (version, address) -> the decision's until.
        self.applied: dict[tuple[int, str], int] = {}

    def run_nft(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        done = subprocess.run([self.nft, *args], input=stdin, capture_output=True, text=True, timeout=30)
        if check and done.returncode != 0:
            raise RuntimeError(f"nft {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def table_loaded(self) -> bool:
        done = subprocess.run([self.nft, "list", "table", *self.table.split()], capture_output=True,
                              text=True, timeout=30)
        return done.returncode == 0

    def live(self) -> tuple[str, str] | None:
        """(digest comment, structure hash) of the loaded table; None when it is not loaded."""
        # -t (terse): without set elements; the meter sets may hold 2 x 65536 of them.
        text = subprocess.run([self.nft, "-t", "list", "table", *self.table.split()], capture_output=True,
                              text=True, timeout=30)
        if text.returncode != 0:
            return None
        comment = re.search(r'^\s*comment "([^"]*)"', text.stdout, re.MULTILINE)
        listing = json.loads(self.run_nft("-t", "-j", "list", "table", *self.table.split()))
        structure = hashlib.sha256(json.dumps(_strip(listing), sort_keys=True).encode()).hexdigest()
        return (comment.group(1) if comment else ""), structure

    def state_file(self) -> str | None:
        if not self.state_dir:
            return None
        return os.path.join(self.state_dir, f"host-guard-{self.table.replace(' ', '-')}.json")

    def drift(self) -> str:
        """Why the loaded table is not the wanted one ("" when it is)."""
        found = self.live()
        if found is None:
            return f"table {self.table} is not loaded"
        comment, structure = found
        if comment != self.digest or not self.digest:
            return f"table {self.table} carries {comment or 'no digest'}, wanted {self.digest or '?'}"
        wanted = self.structure
        if not wanted and self.state_file():
            try:
                with open(str(self.state_file()), encoding="utf-8") as handle:
                    saved = json.load(handle)
                if saved.get("digest") == self.digest:
                    wanted = str(saved.get("structure", ""))
            except (OSError, ValueError):
                wanted = ""
        if not wanted:
            return "no snapshot of the loaded rules (the supervisor has not loaded them)"
        if structure != wanted:
            return f"the rules of {self.table} differ from those loaded"
        return ""

    def load(self) -> None:
        """The ruleset and the current bans, one transaction."""
        now = self.clock()
        wanted = read_decisions(self.decisions, now, self.never)
        bans = [f"add element {self.table} {SETS[version]} {{ {address} timeout {left}s }}"
                for (version, address), left in sorted(wanted.items())]
        self.run_nft("-f", "-", stdin=self.ruleset.rstrip("\n") + "\n" + "\n".join(bans) + "\n")
        self.applied = {key: int(now) + left for key, left in wanted.items()}
        found = self.live()
        self.structure = found[1] if found else ""
        path = self.state_file()
        if path:
            try:
                with open(path, "w", encoding="utf-8") as handle:
                    json.dump({"digest": self.digest, "structure": self.structure}, handle)
            except OSError as exc:
                log(f"cannot write the health snapshot {path}: {exc}")
        log(f"ruleset loaded ({self.table}, {len(bans)} bans)")

    def elements(self, version: int) -> set[str]:
        out = json.loads(self.run_nft("-j", "list", "set", *self.table.split(), SETS[version]))
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
        wanted = read_decisions(self.decisions, now, self.never)
        until = {key: int(now) + left for key, left in wanted.items()}
        commands: list[str] = []
        added = removed = 0
        for version in (4, 6):
            present = self.elements(version)
            for address in sorted(present):
                key = (version, address)
                if key not in wanted:
                    commands.append(f"delete element {self.table} {SETS[version]} {{ {address} }}")
                    removed += 1
                    self.applied.pop(key, None)
            for key, left in sorted(wanted.items()):
                if key[0] != version:
                    continue
                address = key[1]
                if address in present and abs(self.applied.get(key, 0) - until[key]) <= 1:
                    continue
                if address in present:
                    commands.append(f"delete element {self.table} {SETS[version]} {{ {address} }}")
                commands.append(f"add element {self.table} {SETS[version]} {{ {address} timeout {left}s }}")
                self.applied[key] = until[key]
                added += 1
        if commands:
            self.run_nft("-f", "-", stdin="\n".join(commands) + "\n")
            log(f"bans: {added} added, {removed} removed")
        return added, removed

    def remove(self) -> None:
        if self.table_loaded():
            self.run_nft("delete", "table", *self.table.split(), check=False)
            log(f"table {self.table} deleted")


def _never(value: str) -> tuple[Network, ...]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="host-guard")
    parser.add_argument("--decisions", default=os.environ.get("HOST_GUARD_DECISIONS_DIR",
                                                              "/var/lib/paper-trading/decisions"))
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between table checks")
    parser.add_argument("--sync", type=float, default=1.0, help="seconds between decision syncs")
    parser.add_argument("--nft", default="nft")
    parser.add_argument("--ruleset-file", help="read the ruleset here instead of HOST_GUARD_RULESET")
    parser.add_argument("--table", help="the table (default: the one the ruleset declares)")
    parser.add_argument("--never-ban", default=os.environ.get("HOST_GUARD_NEVER_BAN", ""),
                        help="comma-separated CIDRs never banned (admin and allow-listed sources)")
    parser.add_argument("--bridges", default=os.environ.get("HOST_GUARD_BRIDGES", ""),
                        help="comma-separated exact names of this stack's Docker bridges")
    parser.add_argument("--sys-net", default="/sys/class/net")
    parser.add_argument("--state-dir", default=os.environ.get("HOST_GUARD_STATE_DIR", "/dev/shm"))
    parser.add_argument("--once", action="store_true", help="load and sync once, then exit")
    parser.add_argument("--remove", action="store_true", help="delete the table and exit")
    parser.add_argument("--check", action="store_true", help="health: the loaded table is the wanted one")
    args = parser.parse_args(argv)
    if args.ruleset_file:
        with open(args.ruleset_file, encoding="utf-8") as handle:
            ruleset = handle.read()
    else:
        ruleset = os.environ.get("HOST_GUARD_RULESET", "")
    try:
        guard = Guard(ruleset, args.decisions, args.nft, never=_never(args.never_ban), table=args.table,
                      state_dir=args.state_dir)
    except ValueError as exc:
        log(f"refusing to start: {exc}")
        return 2
    if args.remove:
        guard.remove()
        return 0
    if not ruleset.strip():
        log("no ruleset given (HOST_GUARD_RULESET or --ruleset-file)")
        return 2
    if args.check:
        why = guard.drift()
        if why:
            log(f"unhealthy: {why}")
            return 1
        return 0
    bridges = [b.strip() for b in args.bridges.split(",") if b.strip()]
    problems = bridge_problems(bridges, args.sys_net)
    if problems:
        # Nothing is loaded or changed: a table that trusted an uplink would open the host.
        log("refusing to start: " + "; ".join(problems))
        return 2
    stop: dict[str, bool | int] = {"now": False, "signal": 0}

    def on_signal(signum: int, _frame: object) -> None:
        stop["now"] = True
        stop["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGUSR1, on_signal)
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
                why = guard.drift()
                if why:
                    log(f"{why}: loading it again")
                    guard.load()
            guard.sync()
        except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
            log(f"error: {exc}; retrying")
    if stop["signal"] == signal.SIGUSR1:
        # The decommission (pulumi destroy, or the operator's explicit command): remove the table.
        guard.remove()
        return 0
    # Stopped or restarted: the table stays (fail closed). Non-zero (128 + SIGTERM, as a shell
    # would): Docker's on-failure policy then restarts the guard when dockerd comes back.
    log(f"stopping; table {guard.table} stays loaded")
    return 128 + int(stop["signal"])


if __name__ == "__main__":
    sys.exit(main())
