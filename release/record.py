"""The `deploy` audit record: one per `pulumi up` that changes what runs.

A dynamic resource registered last, after every component: the engine creates or updates
it only once everything it depends on has been created or updated, so its record says the
deployment finished, which program and config it applied (`fingerprint`), and which color
is live. It re-runs when the program's sources, the settings or the live color change; an
`up` that changes nothing changes nothing here either. A deploy that fails before the end
never reaches it: the failing step (gate, switch, backup) records its own failure, and the
engine's own history (`pulumi stack history`) keeps the failed update (docs/security.md).

Its state also keeps `auditHead`, `LINE:SHA256` of the line it appended:
the audit trail's hash chain anchored outside the Docker host. `python -m validation
--audit-anchor <auditHead>` fails when the trail no longer holds that line unchanged (truncated,
or rewritten with a recomputed chain), which the chain alone cannot show.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pulumi
import pulumi.dynamic

from release.audit import Auditor, AuditTarget
from release.dynamic import StateProvider

DEPLOY_RECORD_KIND = "paper-trading:deploy-record"
#: Inputs whose change is a new deployment (startedAt only measures the duration).
WATCHED = ("fingerprint", "liveColor", "stack")


def fingerprint(settings_json: str, sources: Iterable[Path]) -> str:
    """sha256 over the settings and the program's source files, in a stable order."""
    digest = hashlib.sha256(settings_json.encode())
    for path in sorted(sources):
        digest.update(str(path.name).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def program_sources(root: Path) -> list[Path]:
    """The files that decide what the program deploys: `__main__.py`, the contract's, the stack's,
    the release's, the settings' and the renderers' modules and every file under `programs/` (the
    code that runs inside the containers, whatever its kind).

    Python's bytecode caches are not sources (they differ by interpreter and are not deployed).
    """
    programs = [path for path in sorted((root / "programs").rglob("*"))
                if "__pycache__" not in path.relative_to(root).parts and path.suffix not in (".pyc", ".pyo")]
    modules = [path for folder in ("contract", "stack", "release", "settings", "render")
               for path in sorted((root / folder).rglob("*.py"))]
    found = [root / "__main__.py", *modules, *programs]
    return [path for path in found if path.is_file()]


def write_record(props: Mapping[str, Any], olds: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Append the deploy record; return the state (the record's time, never a secret)."""

    started = float(props.get("startedAt") or time.time())
    duration_ms = max(0.0, (time.time() - started) * 1000)
    live = str(props.get("liveColor") or "") or None
    previous = str((olds or {}).get("liveColor") or "") or None
    auditor = Auditor.for_target(AuditTarget.from_props(props.get("audit")))
    recorded_at = head = None
    if auditor is not None:
        recorded_at = auditor.record("deploy", "ok", duration_ms, from_=previous, to=live).time
        head = str(auditor.head) if auditor.head else None
    return {**props, "recordedAt": recorded_at, "auditHead": head}


class DeployRecordProvider(StateProvider):
    """Writes the record at create and at each update (a changed deployment); never deletes it."""

    WATCHED = WATCHED
    ID_KEY, ID_PREFIX = "stack", "deploy"

    def apply(self, props: dict[str, Any], olds: dict[str, Any] | None) -> dict[str, Any]:
        return write_record(props, olds)

    def render_outputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Offline render: no record is written."""
        return {"recordedAt": None, "auditHead": None}


class DeployRecord(pulumi.dynamic.Resource):
    """Writes one `deploy` audit record when the deployment it follows has changed."""

    def __init__(
        self, name: str, *, stack: str, fingerprint: str, live_color: pulumi.Input[str],
        audit: Mapping[str, Any] | None, opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props: dict[str, Any] = {
            "kind": DEPLOY_RECORD_KIND,
            "stack": stack,
            "fingerprint": fingerprint,
            "liveColor": live_color,
            "startedAt": time.time(),
            "audit": dict(audit) if audit else None,
            "recordedAt": None,
            "auditHead": None,
        }
        super().__init__(DeployRecordProvider(), name, props, opts)
