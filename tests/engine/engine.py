"""Drive the real Pulumi CLI on a throwaway copy of the project, with a local file backend.

`EngineProject` copies the repository's tracked files into a temporary folder (the venv is
linked, not copied), gives the engine its own `PULUMI_HOME` (the providers built by
`scripts/install-engine` are installed into it from their files, so nothing is downloaded)
and a `file://` backend, and runs `pulumi` there. Every operation is timed; `timings` holds
the figures the README quotes. Structured results come from the engine itself:
`--json` previews (steps with their operation and URN), `stack output --json`,
the streamed `--json` engine events (policy events with their policy name and enforcement level,
diagnostics with their severity).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "engine-test-passphrase"


class EngineError(AssertionError):
    def __init__(self, args: list[str], proc: subprocess.CompletedProcess[str]) -> None:
        tail = "\n".join((proc.stdout + "\n" + proc.stderr).splitlines()[-60:])
        super().__init__(f"pulumi {' '.join(args)} exited {proc.returncode}:\n{tail}")
        self.proc = proc


def tracked_files(root: Path = ROOT) -> list[str]:
    """The files a clone has (tracked, plus new files not ignored), as git lists them."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                         capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name and (root / name).is_file()]


@dataclass
class EngineProject:
    """A copy of the project with its own engine home and state backend."""

    base: Path
    pulumi: str
    stack: str = "ci"
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def workdir(self) -> Path:
        return self.base / "project"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
        env.update({
            "PULUMI_HOME": str(self.base / "home"),
            "PULUMI_BACKEND_URL": f"file://{self.base / 'state'}",
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_SKIP_CONFIRMATIONS": "true",
            "PATH": f"{Path(self.pulumi).parent}:{env.get('PATH', '')}",
        })
        return env

    def prepare(self, link_venv: bool = True) -> None:
        """Copy the project; link the venv (or leave it to the language host to create, as on a clone)."""
        for name in tracked_files():
            target = self.workdir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
        if link_venv:
            (self.workdir / "venv").symlink_to(ROOT / "venv")
        (self.base / "state").mkdir(parents=True, exist_ok=True)
        install = subprocess.run([str(ROOT / "scripts" / "install-engine")], env=self.env,
                                 capture_output=True, text=True, timeout=3600)
        if install.returncode != 0:
            raise AssertionError(f"scripts/install-engine failed:\n{install.stdout}\n{install.stderr}")
        self.run("stack", "init", self.stack, "--secrets-provider", "passphrase")

    def run(self, *args: str, check: bool = True, timing: str | None = None, timeout: float = 1800,
            cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        command = [self.pulumi, *args, "--non-interactive"]
        if args and args[0] in ("up", "preview", "destroy", "refresh", "config", "stack") and \
                "--stack" not in args and "-s" not in args and args[:2] != ("stack", "init"):
            command += ["--stack", self.stack]
        started = time.perf_counter()
        proc = subprocess.run(command, cwd=cwd or self.workdir, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)
        if timing:
            self.timings[timing] = round(time.perf_counter() - started, 1)
        if check and proc.returncode != 0:
            raise EngineError(list(args), proc)
        return proc

    def outputs(self, secrets: bool = False) -> dict[str, Any]:
        args = ["stack", "output", "--json"] + (["--show-secrets"] if secrets else [])
        document: dict[str, Any] = json.loads(self.run(*args).stdout)
        return document

    def config_set(self, path: str, value: str) -> None:
        self.run("config", "set", "--path", path, value)

    def preview_steps(self, *extra: str) -> list[dict[str, Any]]:
        """The engine's planned steps (`op`, `urn`, `diffReasons`...) from `pulumi preview --json`."""
        proc = self.run("preview", "--json", *extra)
        document = json.loads(proc.stdout)
        steps: list[dict[str, Any]] = document.get("steps") or []
        return steps

    def events(self, *args: str, check: bool = False, timing: str | None = None,
               cwd: Path | None = None) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
        """Run an operation with streamed `--json`; return its result and the engine's events."""
        stream = {"PULUMI_ENABLE_STREAMING_JSON_PREVIEW": "true"}
        proc = self.run(*args, "--json", check=check, timing=timing, cwd=cwd, env=stream)
        return proc, json_lines(proc.stdout)


def json_lines(text: str) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def changed(steps: list[dict[str, Any]]) -> dict[str, str]:
    """URN -> operation for every step that is not `same`."""
    return {str(s["urn"]): str(s["op"]) for s in steps if s.get("op") not in ("same", "read")}


def policy_violations(events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(policy name, enforcement level, URN or '') for each policy event the engine reported."""
    found = []
    for event in events:
        policy = event.get("policyEvent")
        if policy:
            found.append((str(policy.get("policyName")), str(policy.get("enforcementLevel")),
                          str(policy.get("resourceUrn") or "")))
    return found
