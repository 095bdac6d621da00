"""Why the log collector runs as uid 0, measured on the real Docker Engine (issue 13, item 6).

promtail finds the logs with the glob `/var/lib/docker/containers/*/*-json.log`, which
needs to LIST each container's directory. A container writing json-file logs with the
program's rotation options (rotated small here) is read by a probe started with the
rendered log collector's own inputs (user, dropped capabilities, no-new-privileges,
read-only mount): it must find and read the current and the rotated files. The same probe
as a non-root user in group 0 (Grafana's `472:0` pattern) finds nothing, although it may
open a file whose path it already knows: Docker creates `/var/lib/docker/containers` and
each container's directory `root:root 0710` (group may traverse, not list) and the log
files `root:root 0640`, rotated files included. docs/monitoring.md quotes these results.

The probe runs Python's glob and open() in the Debian base image (promtail's image is not
reachable from here); Go's filepath.Glob, which promtail uses, also lists the directory.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from render.monitoring import layout
from stack.common import log_options
from stack.monitoring import ROOT_USER
from tests.support import missing, rendered, require_docker

pytestmark = pytest.mark.docker

IMAGE = "paper-trading-base:test"
LABEL = "paper-trading.log-access-test"
PROBE = f"""
import glob, json, os, sys
wanted = sys.argv[1]
found = sorted(p for p in glob.glob("{layout.DOCKER_CONTAINERS_DIR}/*/*-json.log*") if wanted in p)
def readable(path):
    try:
        with open(path, "rb") as f:
            return len(f.read(64)) > 0
    except OSError:
        return False
direct = f"{layout.DOCKER_CONTAINERS_DIR}/{{wanted}}/{{wanted}}-json.log"
print(json.dumps({{"uid": os.getuid(), "gid": os.getgid(), "found": [os.path.basename(p) for p in found],
                  "read": [readable(p) for p in found], "direct_read": readable(direct)}}))
"""


def _docker(*args: str) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    graph = rendered("prod")
    found = [r.inputs for r in graph.containers
             if r.label_map.get("paper-trading.service") == "log-collector"]
    assert len(found) == 1
    return found[0]


@pytest.fixture(scope="module")
def noisy() -> Iterator[str]:
    """A container logging fast through json-file with the program's options, rotated at 1 KiB."""
    require_docker()
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        missing(f"{IMAGE} not built (scripts/build-test-images)")
    opts = {**log_options(), "max-size": "1k", "max-file": "3"}
    cid = _docker("run", "-d", "--label", LABEL, "--log-driver", "json-file",
                  *[a for k, v in opts.items() for a in ("--log-opt", f"{k}={v}")],
                  IMAGE, "sh", "-c", "while :; do echo padding-padding-padding-padding; sleep 0.01; done")
    try:
        rotated = f"{layout.DOCKER_CONTAINERS_DIR}/{cid}/{cid}-json.log.2"
        deadline = time.monotonic() + 30
        while not os.path.exists(rotated):
            assert time.monotonic() < deadline, "json-file never rotated twice"
            time.sleep(0.2)
        yield cid
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


def _probe(collector: dict[str, Any], cid: str, user: str, add: tuple[str, ...] = ()) -> dict[str, Any]:
    """The probe with the rendered collector's user-independent hardening and host mount."""
    caps = collector["capabilities"]
    mounts = [v for v in collector["volumes"] if v.get("hostPath") == layout.DOCKER_CONTAINERS_DIR]
    assert len(mounts) == 1 and mounts[0]["readOnly"] is True
    args = ["run", "--rm", "--label", LABEL, "--network", "none", "--read-only", "--user", user,
            *[f"--cap-drop={c}" for c in caps.get("drops") or []],
            *[f"--cap-add={c}" for c in [*(caps.get("adds") or []), *add]],
            *[f"--security-opt={o}" for o in collector["securityOpts"]],
            "-v", f"{layout.DOCKER_CONTAINERS_DIR}:{layout.DOCKER_CONTAINERS_DIR}:ro",
            IMAGE, "python3", "-c", PROBE, cid]
    return dict(json.loads(_docker(*args)))


def test_docker_creates_the_logs_root_only(noisy: str) -> None:
    """The modes the decision rests on, read from the host."""
    base = layout.DOCKER_CONTAINERS_DIR
    logs = [f"{base}/{noisy}/{noisy}-json.log{suffix}" for suffix in ("", ".1", ".2")]
    modes = {path: (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
             for path in (base, f"{base}/{noisy}", *logs) for st in [os.stat(path)]}
    assert modes[base][1:] == (0, 0) and modes[base][0] & 0o007 in (0, 0o001)
    directory, *files = list(modes.values())[1:]
    assert directory == (0o710, 0, 0)
    assert files == [(0o640, 0, 0)] * 3


def test_the_rendered_collector_reads_current_and_rotated_logs(collector: dict[str, Any], noisy: str) -> None:
    assert collector["user"] == ROOT_USER
    assert collector["capabilities"]["drops"] == ["ALL"] and not collector["capabilities"].get("adds")
    seen = _probe(collector, noisy, collector["user"])
    assert seen["found"] == [f"{noisy}-json.log", f"{noisy}-json.log.1", f"{noisy}-json.log.2"]
    assert seen["read"] == [True, True, True]


@pytest.mark.parametrize("user", ["65534:0", "472:0", "65534:65534"])
def test_a_non_root_collector_cannot_list_the_logs(collector: dict[str, Any], noisy: str, user: str) -> None:
    seen = _probe(collector, noisy, user)
    assert seen["found"] == []
    # Group 0 may open a log whose path it knows (0710 dirs, 0640 files), but cannot discover it.
    assert seen["direct_read"] is user.endswith(":0")


def test_a_capability_does_not_help_a_non_root_collector(collector: dict[str, Any], noisy: str) -> None:
    """Docker gives a non-root process no effective capabilities: CAP_DAC_READ_SEARCH is inert."""
    seen = _probe(collector, noisy, "65534:0", add=("CAP_DAC_READ_SEARCH",))
    assert seen["found"] == []
