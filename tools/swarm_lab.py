"""A Docker Swarm of several nodes on this one machine: each node a dockerd in its own network namespace.

The namespaces are joined by veth pairs to a bridge in a hub namespace; the host reaches the
nodes through one more veth (the lab's subnet only). Each node's dockerd has its own data root,
exec root, socket and cgroup parent, and is started with `nsenter --net` (not `ip netns exec`,
which remounts /sys and hides the cgroup mounts from dockerd). Every node is a manager, so the
raft quorum survives one node lost. What this kernel lacks (IPVS, ESP) rules out VIPs, the
routing mesh and encrypted overlays: services use dnsrr endpoints and host-mode ports.

    python -m tools.swarm_lab up            # 3 nodes; prints each node's DOCKER_HOST
    python -m tools.swarm_lab partition n2  # cut n2 off the hub (its veth down); `heal n2` undoes it
    python -m tools.swarm_lab cut-raft n2   # only n2's swarm control traffic (2377); `heal-raft n2`
    python -m tools.swarm_lab load IMAGE..  # docker save | docker load into every node
    python -m tools.swarm_lab down          # containers, daemons, mounts, cgroups, namespaces: gone

`down` is safe to run at any time, also after a failed `up` or a killed test run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

PREFIX = "ptsl"
HUB = f"{PREFIX}-hub"
BRIDGE = "br0"
SUBNET = "192.168.77"
HOST_ADDRESS = f"{SUBNET}.254"
HOST_VETH = f"{PREFIX}-host"
DATA = Path("/var/lib/paper-trading-swarm-lab")
RUN = Path("/run/ptsl")
SWARM_PORT = 2377
#: Node labels by default: two edge nodes (the proxies), one data node (Postgres, Redis, RabbitMQ).
DEFAULT_LABELS: tuple[dict[str, str], ...] = ({"edge": "true"}, {"edge": "true"}, {"data": "true"})
READY_TIMEOUT_S = 60.0
#: How often a node reports to the managers (Swarm's default is 5 s): a node that stops reporting
#: is marked down after a few periods, and only then are its tasks replaced elsewhere.
HEARTBEAT_NS = 2_000_000_000
#: The nft table `cut-raft` adds in a node's namespace (`heal-raft` deletes it).
RAFT_TABLE = "ptsl_raft"


class LabError(RuntimeError):
    """A step of the lab failed; the message names the step and what the tool said."""


@dataclass(frozen=True)
class Node:
    """One node: its namespace, address, dockerd paths and the Engine API socket."""

    name: str
    index: int

    @property
    def netns(self) -> str:
        return f"{PREFIX}-{self.name}"

    @property
    def address(self) -> str:
        return f"{SUBNET}.{self.index}"

    @property
    def hub_veth(self) -> str:
        return f"{PREFIX}-h-{self.name}"

    @property
    def socket(self) -> Path:
        return RUN / f"{self.name}.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pidfile(self) -> Path:
        return RUN / f"{self.name}.pid"

    @property
    def data_root(self) -> Path:
        return DATA / self.name

    @property
    def exec_root(self) -> Path:
        return RUN / self.name

    @property
    def log(self) -> Path:
        return DATA / f"{self.name}.log"

    def client(self, timeout: int = 30) -> Any:
        return docker.DockerClient(base_url=self.docker_host, timeout=timeout)


@dataclass
class Lab:
    """The lab's nodes (n1..nN); `up` builds them, `down` removes everything the lab made."""

    size: int = 3
    labels: Sequence[dict[str, str]] = DEFAULT_LABELS
    nodes: list[Node] = field(init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.size <= 9:
            raise LabError(f"nodes: {self.size} is not between 1 and 9")
        self.nodes = [Node(f"n{i}", i) for i in range(1, self.size + 1)]

    # ------------------------------------------------------------------ build
    @staticmethod
    def can_run() -> bool:
        """Root only: network namespaces, veths and daemons of its own."""
        return os.geteuid() == 0

    def up(self) -> None:
        """Namespaces, links, daemons, then the swarm (every node a manager) and the node labels."""
        if not self.can_run():
            raise LabError("the swarm lab needs root (network namespaces, dockerd)")
        for tool in ("ip", "nsenter", "dockerd"):
            if shutil.which(tool) is None:
                raise LabError(f"{tool} is not installed (packages iproute2, util-linux, docker.io)")
        self.down()
        try:
            self._network()
            for node in self.nodes:
                self._start_daemon(node)
            for node in self.nodes:
                self._wait_ready(node)
            self._form_swarm()
        except BaseException:
            self.down()
            raise

    def _network(self) -> None:
        _ip("netns", "add", HUB)
        _ip("-n", HUB, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", HUB, "link", "set", BRIDGE, "up")
        _ip("-n", HUB, "link", "set", "lo", "up")
        for node in self.nodes:
            _ip("netns", "add", node.netns)
            _ip("-n", node.netns, "link", "set", "lo", "up")
            _ip("link", "add", node.hub_veth, "netns", HUB, "type", "veth", "peer", "name", "eth0",
                "netns", node.netns)
            _ip("-n", HUB, "link", "set", node.hub_veth, "master", BRIDGE, "up")
            _ip("-n", node.netns, "addr", "add", f"{node.address}/24", "dev", "eth0")
            _ip("-n", node.netns, "link", "set", "eth0", "up")
        # No default route in the nodes: nothing outside the lab is reachable, so a registry
        # lookup (Swarm tries one before it starts a task) fails at once instead of timing out.
        hub_side = f"{PREFIX}-h-host"
        _ip("link", "add", HOST_VETH, "type", "veth", "peer", "name", hub_side, "netns", HUB)
        _ip("-n", HUB, "link", "set", hub_side, "master", BRIDGE, "up")
        _ip("addr", "add", f"{HOST_ADDRESS}/24", "dev", HOST_VETH)
        _ip("link", "set", HOST_VETH, "up")

    def _start_daemon(self, node: Node) -> None:
        for path in (node.data_root, node.exec_root):
            path.mkdir(parents=True, exist_ok=True)
        config = DATA / "daemon.json"
        config.write_text("{}\n")
        # Its own network and UTS namespaces: the node's hostname is its name (`docker node ls`).
        dockerd = [
            "dockerd",
            "--config-file", str(config), "--data-root", str(node.data_root),
            "--exec-root", str(node.exec_root), "--pidfile", str(node.pidfile),
            "-H", node.docker_host, "--bridge=none", "--iptables=true", "--userland-proxy=false",
            "--exec-opt", "native.cgroupdriver=cgroupfs", "--cgroup-parent", f"/{node.netns}",
            "--log-level", "warn",
        ]
        command = ["nsenter", f"--net=/var/run/netns/{node.netns}", "unshare", "--uts", "sh", "-c",
                   'hostname "$0" && exec "$@"', f"{PREFIX}-{node.name}", *dockerd]
        with node.log.open("ab") as log:
            subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                             start_new_session=True)

    def _wait_ready(self, node: Node) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if node.socket.exists() and node.client(timeout=5).ping():
                    return
            except (docker.errors.DockerException, OSError):
                pass
            time.sleep(0.2)
        tail = node.log.read_text(errors="replace")[-2000:] if node.log.exists() else "(no log)"
        raise LabError(f"{node.name}: dockerd did not answer within {READY_TIMEOUT_S:.0f} s; "
                       f"its log ends:\n{tail}")

    def _form_swarm(self) -> None:
        first = self.nodes[0]
        leader = first.client()
        leader.swarm.init(advertise_addr=first.address, listen_addr=f"{first.address}:{SWARM_PORT}",
                          dispatcher_heartbeat_period=HEARTBEAT_NS)
        leader.swarm.reload()
        token = leader.swarm.attrs["JoinTokens"]["Manager"]
        for node in self.nodes[1:]:
            node.client().swarm.join(remote_addrs=[f"{first.address}:{SWARM_PORT}"], join_token=token,
                                     advertise_addr=node.address, listen_addr=f"{node.address}:{SWARM_PORT}")
        for node, labels in zip(self.nodes, self._labels(), strict=True):
            swarm_node = self.swarm_node(node)
            spec = dict(swarm_node.attrs["Spec"])
            spec["Labels"] = {**spec.get("Labels", {}), **labels}
            swarm_node.update(spec)

    def _labels(self) -> Iterator[dict[str, str]]:
        for index in range(self.size):
            yield dict(self.labels[index]) if index < len(self.labels) else {}

    # ------------------------------------------------------------------ use
    def manager(self, exclude: Sequence[str] = ()) -> Any:
        """A client of a node that answers as a manager (skipping `exclude`)."""
        for node in self.nodes:
            if node.name in exclude:
                continue
            try:
                client = node.client(timeout=10)
                client.swarm.reload()
                return client
            except docker.errors.DockerException:
                continue
        raise LabError("no manager answers")

    def swarm_node(self, node: Node) -> Any:
        client = node.client()
        return client.nodes.get(client.info()["Swarm"]["NodeID"])

    def status(self) -> dict[str, dict[str, str]]:
        """Per node: its state and availability as a manager sees them, and its labels."""
        out: dict[str, dict[str, str]] = {}
        for swarm_node in self.manager().nodes.list():
            name = swarm_node.attrs["Description"]["Hostname"].removeprefix(f"{PREFIX}-")
            out[name] = {"state": swarm_node.attrs["Status"]["State"],
                         "availability": swarm_node.attrs["Spec"]["Availability"],
                         "labels": ",".join(sorted(swarm_node.attrs["Spec"].get("Labels", {})))}
        return out

    def partition(self, name: str) -> None:
        """Cut one node off the hub: nothing reaches it or leaves it; its daemon keeps running."""
        _ip("-n", HUB, "link", "set", self.node(name).hub_veth, "down")

    def heal(self, name: str) -> None:
        _ip("-n", HUB, "link", "set", self.node(name).hub_veth, "up")

    def cut_raft(self, name: str) -> None:
        """Drop the node's swarm control traffic (tcp 2377: raft, dispatcher) both ways, nothing else:
        as a manager it is gone, while its tasks and the overlay (udp 4789, 7946) keep working."""
        drop = f"tcp dport {SWARM_PORT} drop; tcp sport {SWARM_PORT} drop;"
        rules = (f"table inet {RAFT_TABLE} {{\n"
                 f"  chain in {{ type filter hook input priority -10; {drop} }}\n"
                 f"  chain out {{ type filter hook output priority -10; {drop} }}\n"
                 "}\n")
        _nft(self.node(name), rules)

    def heal_raft(self, name: str) -> None:
        _nft(self.node(name), f"delete table inet {RAFT_TABLE}\n", check=False)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise LabError(f"no node {name!r}: the lab has {', '.join(n.name for n in self.nodes)}")

    def load(self, images: Sequence[str], label: str | None = None) -> None:
        """Copy images from the host's engine into every node, or only those labelled `label`
        (no registry here)."""
        nodes = [node for node, labels in zip(self.nodes, self._labels(), strict=True)
                 if label is None or labels.get(label) == "true"]
        for image in images:
            saved = subprocess.run(["docker", "save", image], capture_output=True, check=False)
            if saved.returncode != 0:
                raise LabError(f"docker save {image}: {saved.stderr.decode(errors='replace').strip()}")
            for node in nodes:
                loaded = subprocess.run(["docker", "-H", node.docker_host, "load"], input=saved.stdout,
                                        capture_output=True, check=False)
                if loaded.returncode != 0:
                    raise LabError(f"{node.name}: docker load {image}: "
                                   f"{loaded.stderr.decode(errors='replace').strip()}")

    # ------------------------------------------------------------------ teardown
    def down(self) -> None:
        """Stop every node's daemon (its containers go with it), then remove what the lab made."""
        _stop_daemons(self._all_nodes())
        _unmount_under(DATA)
        _unmount_under(RUN)
        for name in _netns_list():
            if name.startswith(f"{PREFIX}-"):
                _ip("netns", "delete", name, check=False)
        _ip("link", "delete", HOST_VETH, check=False)
        for root in Path("/sys/fs/cgroup").glob(f"*/{PREFIX}-n*"):
            for directory in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if directory.is_dir():
                    directory.rmdir()
            root.rmdir()
        shutil.rmtree(DATA, ignore_errors=True)
        shutil.rmtree(RUN, ignore_errors=True)

    def _all_nodes(self) -> list[Node]:
        """Every node a pidfile names, also those of a bigger lab left behind."""
        found = {n.name: n for n in self.nodes}
        for pidfile in RUN.glob("n*.pid") if RUN.exists() else []:
            name = pidfile.stem
            if name[1:].isdigit():
                found.setdefault(name, Node(name, int(name[1:])))
        return list(found.values())

    def leftovers(self) -> list[str]:
        """What the lab would leave behind: an empty list after `down`."""
        left = [f"netns {n}" for n in _netns_list() if n.startswith(f"{PREFIX}-")]
        left += [f"mount {m}" for m in _mounts() if m.startswith((str(DATA), str(RUN)))]
        left += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/{PREFIX}-n*")]
        left += [f"path {p}" for p in (DATA, RUN) if p.exists()]
        if subprocess.run(["ip", "link", "show", HOST_VETH], capture_output=True).returncode == 0:
            left.append(f"link {HOST_VETH}")
        left += [f"process {pid}" for pid in _pids_of("dockerd", str(DATA))]
        return left


def _ip(*args: str, check: bool = True) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _nft(node: Node, script: str, check: bool = True) -> None:
    done = subprocess.run(["nsenter", f"--net=/var/run/netns/{node.netns}", "nft", "-f", "-"], input=script,
                          capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise LabError(f"{node.name}: nft: {done.stderr.strip()}")


def _netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _mounts() -> list[str]:
    return [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]


def _unmount_under(root: Path) -> None:
    for mount in sorted((m for m in _mounts() if m.startswith(str(root))), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


def _pids_of(name: str, needle: str) -> list[int]:
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and Path(cmdline[0].decode(errors="replace")).name == name \
                and any(needle.encode() in part for part in cmdline):
            pids.append(int(proc.name))
    return pids


def _stop_daemons(nodes: Sequence[Node], timeout_s: float = 15.0) -> None:
    """SIGTERM every node's dockerd at once, SIGKILL what is left after `timeout_s`, then their
    containerd and shims (a lab is thrown away: no need to wait for each container's grace)."""
    pids: set[int] = set()
    for node in nodes:
        pids |= set(_pids_of("dockerd", str(node.data_root)))
        if node.pidfile.exists():
            with contextlib.suppress(ValueError):
                pids.add(int(node.pidfile.read_text().strip()))
    _signal(pids, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    _signal(pids, signal.SIGKILL)
    for node in nodes:
        # The daemon's containerd and shims: their command lines name the node's exec root.
        root = str(node.exec_root)
        _signal(set(_pids_of("containerd", root) + _pids_of("containerd-shim-runc-v2", root)), signal.SIGKILL)


def _signal(pids: set[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.swarm_lab", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build the lab (removes an old one first)")
    up.add_argument("--nodes", type=int, default=3)
    sub.add_parser("down", help="remove everything the lab made")
    sub.add_parser("status", help="each node's state, availability and labels, as JSON")
    for verb in ("partition", "heal", "cut-raft", "heal-raft"):
        sub.add_parser(verb).add_argument("node")
    loader = sub.add_parser("load", help="copy images into every node (or those with --label)")
    loader.add_argument("images", nargs="+")
    loader.add_argument("--label", help="only the nodes with this label (e.g. data)")
    sub.add_parser("leftovers", help="what the lab would leave behind (empty after down)")
    args = parser.parse_args(argv)
    lab = Lab(size=getattr(args, "nodes", 3))
    try:
        if args.command == "up":
            started = time.monotonic()
            lab.up()
            print(f"swarm lab up: {lab.size} managers in {time.monotonic() - started:.1f} s")
            for node in lab.nodes:
                print(f"  {node.name} {node.address}  DOCKER_HOST={node.docker_host}")
        elif args.command == "down":
            lab.down()
        elif args.command == "status":
            print(json.dumps(lab.status(), indent=2, sort_keys=True))
        elif args.command == "partition":
            lab.partition(args.node)
        elif args.command == "heal":
            lab.heal(args.node)
        elif args.command == "cut-raft":
            lab.cut_raft(args.node)
        elif args.command == "heal-raft":
            lab.heal_raft(args.node)
        elif args.command == "load":
            lab.load(args.images, label=args.label)
        elif args.command == "leftovers":
            left = lab.leftovers()
            print("\n".join(left) or "nothing")
            return 1 if left else 0
    except LabError as exc:
        print(f"swarm-lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
