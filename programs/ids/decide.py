"""fail2ban's ban/unban action: one decision file per banned address (docs/security.md).

`decide.py ban|unban <ip> <bantime> <jail>`. A ban writes `<unix-seconds-until> <jail>` to
`<decisions>/<address>` (IPv6 ':' -> '_') atomically (temp file + rename), unless the address
is on the allow-list; an unban removes the file. Every input is checked before it names a
file: the address is parsed as an IP address, the jail must be one of the generated jails.
Runs inside the IDS container (python3 from the image), standard library only.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _paths() -> dict[str, object]:
    loaded: dict[str, object] = json.loads((HERE / "paths.json").read_text())
    return loaded


def _allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    for line in (HERE / "allow-list").read_text().split():
        network = ipaddress.ip_network(line, strict=False)
        if address.version == network.version and address in network:
            return True
    return False


def file_name(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return str(address).replace(":", "_")


def _current(target: Path) -> tuple[int, str] | None:
    """The decision a file holds now: (until, jail), or None."""
    try:
        until, jail = target.read_text().split()
        return int(until), jail
    except (OSError, ValueError):
        return None


def _count_ban(state_dir: Path, jail: str) -> None:
    """`paper_trading_ids_bans_total{jail}`: one counter file per jail, incremented under a lock."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / f"bans_total.{jail}", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        text = handle.read().strip()
        handle.seek(0)
        handle.truncate()
        handle.write(f"{int(text or 0) + 1}\n")


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] not in ("ban", "unban"):
        print("usage: decide.py ban|unban <ip> <bantime> <jail>", file=sys.stderr)
        return 2
    verb, raw_ip, raw_bantime, jail = argv
    paths = _paths()
    jails = paths["jails"]
    assert isinstance(jails, list)
    try:
        address = ipaddress.ip_address(raw_ip)
        bantime = int(float(raw_bantime))
    except ValueError:
        print(f"decide.py: refusing {raw_ip!r}/{raw_bantime!r}: not an address / seconds", file=sys.stderr)
        return 2
    if jail not in jails:
        print(f"decide.py: unknown jail {jail!r}", file=sys.stderr)
        return 2
    decisions = Path(str(paths["decisions_dir"]))
    target = decisions / file_name(address)
    current = _current(target)
    if verb == "unban":
        # Another jail's longer ban of the same address stays (its own unban removes it).
        if current is None or current[1] == jail or current[0] <= time.time():
            target.unlink(missing_ok=True)
        print(f"decide.py: unban {address} ({jail})", file=sys.stderr)
        return 0
    if _allowed(address):
        print(f"decide.py: {address} is on the allow-list, not banned ({jail})", file=sys.stderr)
        return 0
    until, reason = int(time.time()) + max(bantime, 1), jail
    if current is not None and current[0] > until:
        until, reason = current  # a longer ban by another jail stands
    temp = decisions / f".{file_name(address)}.{os.getpid()}.tmp"
    temp.write_text(f"{until} {reason}\n")
    temp.chmod(0o644)
    os.replace(temp, target)
    _count_ban(Path(str(paths["run_dir"])) / "state", jail)
    print(f"decide.py: ban {address} until {until} ({jail})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
