"""The promotion gate: a dynamic resource that validates the candidate color before it goes live.

`pulumi up` creates (or updates) the gate after the candidate's containers and the proxy;
its provider runs the blocking checks through the proxy's preview listener with
`X-Preview-Color: <candidate>`. Passed -> output `approvedColor` = candidate (the routing
switch and the stack output `activeColor` read it). Failed -> create/update raise with the
readable summary, so the update fails and nothing downstream moves. `pulumi preview` never
runs checks: the output is simply unknown until `up`.

The gate fails closed at run time too, whatever its inputs say: a gate built disabled, or
told to skip a `safety.*`/`health.*` check, refuses to approve anything; and it approves only
when every check in `required_checks` actually ran and passed (a check that vanished from
the report, or skipped itself, blocks the promotion).

The provider class is small and importable (dill pickles it by reference); clients are
created inside the methods. Secrets (exchange keys) are used but never returned as state;
a fingerprint of them is kept so a key change re-runs the gate.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi.dynamic

from release.audit import Auditor, AuditTarget, Result, audit_target
from release.dynamic import StateProvider
from release.guard import served_color
from release.swarm.checks import settled_checks
from release.swarm.nodes import Node, served_on
from render.monitoring.layout import ALERTMANAGER_USER
from validation import avalidate
from validation.errors import DeploymentError, DeploymentErrorType
from validation.options import ValidationOptions
from validation.report import render_table, summary

if TYPE_CHECKING:
    from settings import Settings
    from validation.models import ValidationReport

#: Check families no configuration may skip: the candidate must prove paper mode and health.
UNSKIPPABLE_PREFIXES = ("safety.", "health.")
#: Checks that apply to every candidate and must have run and passed before any approval.
ALWAYS_REQUIRED = (
    "health.basic", "health.detailed", "health.ready", "health.live", "health.metrics",
    "safety.paper_trading_mode", "safety.real_trades_blocked", "safety.exchange_permissions",
    "safety.metrics", "safety.deployment_color", "safety.background_work",
)
#: Marks the gate among dynamic resources (the `promotion-gated` policy looks for it).
GATE_KIND = "paper-trading:promotion-gate"

#: Inputs whose change re-runs the checks (the candidate, the exact containers it runs, how it
#: is checked): an approval is bound to what it approved.
WATCHED = ("candidateColor", "candidateContainers", "previewUrl", "image", "replicas", "options", "enabled",
           "swarm")
#: Secret inputs: used by the checks, never recorded in state (only their fingerprint).
SECRET_FIELDS = ("exchanges", "alertmanagerPassword")


def _fingerprint(value: Any) -> str:
    raw = json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()


def _run_report(props: Mapping[str, Any], expect_work_role: str | None = None) -> ValidationReport:
    """Build the options from the gate's inputs and run the checks (own loop, own thread if needed).

    `expect_work_role="standby"`: the candidate is not the live color, so it must do no
    background work (`safety.background_work`); None lets the check infer it.
    """

    options = ValidationOptions.model_validate(
        {
            **dict(props.get("options") or {}),
            "base_url": props["previewUrl"],
            "color": props["candidateColor"],
            "expected_replicas": int(props["replicas"]) if props.get("replicas") else None,
            "exchanges": tuple(props.get("exchanges") or ()),
            **({"alertmanager_password": props["alertmanagerPassword"]}
               if props.get("alertmanagerPassword") else {}),
            **({"expect_work_role": expect_work_role} if expect_work_role else {}),
        }
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(avalidate(options))
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["report"] = asyncio.run(avalidate(options))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    report: ValidationReport = box["report"]
    return report


def required_checks(props: Mapping[str, Any]) -> tuple[str, ...]:
    """The checks that must have run and passed for this candidate (exchange keys when given)."""
    return ALWAYS_REQUIRED + (("safety.exchange_keys",) if props.get("exchanges") else ())


def refusal(props: Mapping[str, Any]) -> str | None:
    """Why these inputs may never approve a color (disabled, or a protected check skipped)."""
    if props.get("enabled") is not True:
        return f"the gate is disabled (enabled={props.get('enabled')!r}); it never approves without checks"
    options = props.get("options")
    if not isinstance(options, Mapping):
        return "the gate's options are missing or unreadable"
    skip = options.get("skip") or ()
    if isinstance(skip, str) or not isinstance(skip, (list, tuple, set, frozenset)):
        return f"options.skip must be a list of check names, not {skip!r}"
    protected = sorted(str(name) for name in skip if str(name).startswith(UNSKIPPABLE_PREFIXES))
    if protected:
        return f"options.skip names checks that can never be skipped: {', '.join(protected)}"
    return None


def _secret_values(props: Mapping[str, Any]) -> list[str]:
    """Every secret the gate holds, so none can reach an audit record's error."""
    found = [str(props.get("alertmanagerPassword") or "")]
    for cred in props.get("exchanges") or ():
        if isinstance(cred, Mapping):
            found += [str(cred.get(key) or "") for key in ("api_key", "api_secret", "passphrase")]
    return [value for value in found if value]


def run_gate(props: Mapping[str, Any], expect_work_role: str | None = None) -> dict[str, Any]:
    """`_verdict`, with one audit record of it (ok; refused: not approved; failed: the gate broke)."""


    auditor = Auditor.for_target(AuditTarget.from_props(props.get("audit")), secrets=_secret_values(props))
    start = time.monotonic()
    candidate = str(props.get("candidateColor"))
    if auditor is not None:  # intent first: fail closed, AuditUnavailable here runs no check
        auditor.begin("gate", to=candidate)
    try:
        state = _verdict(props, expect_work_role)
    except Exception as exc:
        if auditor is not None:
            result: Result = "refused" if isinstance(exc, DeploymentError) else "failed"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            auditor.record("gate", result, (time.monotonic() - start) * 1000, to=candidate, error=first)
        raise
    if auditor is not None:
        auditor.record("gate", "ok", (time.monotonic() - start) * 1000, to=candidate)
    return state


def _verdict(props: Mapping[str, Any], expect_work_role: str | None = None) -> dict[str, Any]:
    """Validate; return the state to record, or raise DeploymentError naming the failed checks."""

    candidate = str(props["candidateColor"])
    state = {k: v for k, v in props.items() if k not in SECRET_FIELDS}
    state["secretsFingerprint"] = _fingerprint({k: props.get(k) for k in SECRET_FIELDS})
    checked_at = datetime.now(UTC).isoformat()
    refused = refusal(props)
    if refused is not None:
        raise DeploymentError(
            DeploymentErrorType.VALIDATION_ERROR, "validation", "promotion-gate",
            f"promotion gate refuses to approve {candidate}: {refused}", recoverable=False,
        )
    swarm = props.get("swarm")
    if swarm:
        _swarm_verdict(swarm, candidate, int(props["replicas"]))
    report = _run_report(props, expect_work_role)
    results = {check.name: check for check in report.checks}
    unproven = [
        name for name in required_checks(props)
        if name not in results or results[name].status != "passed"
    ]
    failed = [c.name for c in report.checks if c.blocking and c.status == "failed"]
    if not report.passed or unproven:
        missing = [name for name in unproven if name not in failed]
        reasons = [summary(report)] if not report.passed else []
        if missing:
            reasons.append(f"required checks that did not run and pass: {', '.join(missing)}")
        raise DeploymentError(
            DeploymentErrorType.VALIDATION_ERROR,
            "validation",
            "promotion-gate",
            "\n".join(reasons)
            + "\n\n"
            + render_table(report)
            + f"\n\nlive traffic and activeColor stay where they were; {candidate} was not promoted",
            recoverable=True,
            failed_checks=failed + [name for name in missing if name not in failed],
        )
    brief = {
        "passed": sum(1 for c in report.checks if c.status == "passed"),
        "skipped": sum(1 for c in report.checks if c.status == "skipped"),
        "failedNonBlocking": [c.name for c in report.checks if c.status == "failed"],
        "durationSeconds": report.duration_seconds,
    }
    return {**state, "approvedColor": candidate, "validated": True, "checkedAt": checked_at, "report": brief}


def _swarm_verdict(swarm: Mapping[str, Any], candidate: str, replicas: int) -> None:
    """The candidate's service on Swarm: rollout completed, every replica healthy, on 2+ nodes."""
    nodes = [Node.of(node) for node in swarm.get("nodes") or ()]
    results = settled_checks(str(swarm["manager"]), str(swarm["service"]), replicas, nodes)
    failed = [check for check in results if not check.passed]
    if failed:
        lines = [f"  {check.name}: {check.message}" for check in failed]
        raise DeploymentError(
            DeploymentErrorType.VALIDATION_ERROR, "validation", "promotion-gate",
            f"{candidate}'s service {swarm['service']} is not ready to go live:\n" + "\n".join(lines)
            + f"\n\nlive traffic and activeColor stay where they were; {candidate} was not promoted",
            recoverable=True, failed_checks=[check.name for check in failed],
        )


def spent(olds: Mapping[str, Any], news: Mapping[str, Any], client: Any = None) -> bool:
    """Whether the recorded approval no longer stands: its switch did not make it live.

    An approval is used once. The switch after it either made the approved color live (the
    proxy serves it) or failed and switched back: then the next `up` must check again, never
    switch on the old verdict. Read from the proxy itself; when it cannot be read, the approval
    counts as spent (the checks run again: the safe side).
    """

    approved = olds.get("approvedColor")
    if not approved:
        return True
    swarm = news.get("swarm")
    if isinstance(swarm, Mapping):  # every edge proxy must serve it
        edges = [Node.of(node) for node in swarm.get("edgeNodes") or ()]
        served = set(served_on(edges, str(swarm.get("proxyService"))).values()) if edges else set()
        return served != {approved}
    name = news.get("proxyContainerName")
    if not isinstance(name, str) or not name:
        return True
    try:
        return bool(served_color(name, client) != approved)
    except Exception:  # noqa: BLE001 - unreadable: check again
        return True


class PromotionGateProvider(StateProvider):
    """Create/update run the checks; diff re-runs them when a watched input changes."""

    WATCHED = WATCHED
    ID_KEY, ID_PREFIX = "candidateColor", "promotion-gate"

    def changed(self, olds: dict[str, Any], news: dict[str, Any]) -> list[str]:
        changed = super().changed(olds, news)
        secrets = _fingerprint({k: news.get(k) for k in SECRET_FIELDS})
        if olds.get("secretsFingerprint") != secrets:
            changed.append("exchanges")
        if not changed and spent(olds, news):
            changed.append("approvedColor")
        return changed

    def apply(self, props: dict[str, Any], olds: dict[str, Any] | None) -> dict[str, Any]:
        # Nothing approved before (create), a candidate other than the color approved last, or the
        # color approved last when its switch failed (the approval is spent): not live yet, so it
        # must do no background work (standby). The same, live color again (a key change) is
        # judged by the check.
        moving = (olds is None or olds.get("approvedColor") != props.get("candidateColor")
                  or spent(olds, props))
        return run_gate(props, expect_work_role="standby" if moving else None)

    def render_outputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Offline render (tools/render.py): what a passed create would output, without checks."""
        return {"approvedColor": inputs["candidateColor"]}


@dataclass(frozen=True)
class PromotionGateArgs:
    """What to validate: the candidate color, where its preview listener is, what it runs."""

    candidate_color: pulumi.Input[str]
    preview_url: pulumi.Input[str]
    image: pulumi.Input[str]
    replicas: pulumi.Input[int]
    #: `ValidationOptions` fields (JSON-compatible): timeouts, thresholds, server_name, ...
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Exchange credentials for safety.exchange_keys (dicts of ExchangeCredentials fields).
    exchanges: pulumi.Input[Sequence[Mapping[str, Any]]] | None = None
    enabled: bool = True
    #: Where verdicts are recorded (`AuditTarget.props()`); None: not recorded.
    audit: Mapping[str, Any] | None = None

    @staticmethod
    def from_settings(settings: Settings) -> PromotionGateArgs:
        """The gate for the stack's desired `deployment.activeColor`, read from the typed config."""
        candidate = settings.deployment.active_color
        color = settings.deployment.color(candidate)
        v = settings.validation
        tls = settings.server.ssl.enabled
        # The preview listener: the host's loopback; on Swarm, the first edge node's (host mode).
        host = "127.0.0.1" if settings.swarm is None else settings.swarm.labelled("edge")[0].address
        preview = v.preview_url or f"{'https' if tls else 'http'}://{host}:{settings.proxy.preview_port}"
        burst = v.rate_limit_burst if v.rate_limit_burst is not None else settings.proxy.auth_rate_limit.burst
        options: dict[str, Any] = {
            "timeout": v.timeout_seconds,
            "check_timeout": v.check_timeout_seconds,
            "retries": v.retries,
            "latency_threshold_ms": v.latency_threshold_ms,
            "cert_min_days": v.cert_min_days,
            "rate_limit_path": v.rate_limit_path,
            "rate_limit_burst": burst,
            "insecure": v.insecure,
            "skip": sorted(v.skip),
            "paths": settings.app.health.model_dump(),
            # safety.background_work: whether the stack runs consumers/schedulers at all.
            "work_enabled": settings.workers.enabled,
        }
        optional = {
            "server_name": settings.server.host if tls else None,
            "ca_file": v.ca_file,
            "prometheus_url": v.prometheus_url,
            "alertmanager_url": v.alertmanager_url,
            "grafana_url": v.grafana_url,
        }
        options.update({k: val for k, val in optional.items() if val is not None})
        creds = []
        for name, ex in settings.exchanges.configured().items():
            if ex.api_secret is None:
                continue
            creds.append(
                {
                    "exchange": name,
                    "api_key": ex.api_key.get_secret_value(),
                    "api_secret": ex.api_secret.get_secret_value(),
                    "passphrase": ex.passphrase.get_secret_value() if ex.passphrase else None,
                    "base_url": settings.exchanges.base_url(name),
                }
            )
        return PromotionGateArgs(
            candidate_color=candidate,
            preview_url=preview,
            image=color.image,
            replicas=color.replicas,
            options=options,
            exchanges=pulumi.Output.secret(creds) if creds else None,
            enabled=v.enabled,
            audit=audit_target(settings, pulumi.get_stack()),
        )


class PromotionGate(pulumi.dynamic.Resource):
    """Approves `candidate_color` only after its blocking checks pass; `approved_color` is the result."""

    def __init__(
        self, name: str, args: PromotionGateArgs, opts: pulumi.ResourceOptions | None = None,
        *, alertmanager_password: pulumi.Input[str] | None = None,
        proxy_container_name: str | None = None,
        candidate_containers: pulumi.Input[Sequence[pulumi.Input[str]]] | None = None,
        swarm: Mapping[str, Any] | None = None,
    ) -> None:
        """`alertmanager_password`: Alertmanager's basic-auth password, for the monitoring.alertmanager
        check when the options name an `alertmanager_url` (a secret input, never in state).

        `proxy_container_name`: the proxy whose switch spends an approval (`spent`; None: every
        `up` checks again). `candidate_containers`: the candidate color's container ids, which the
        approval is bound to: a replaced container is a new candidate.

        `swarm`: on the Swarm target, where the candidate's service is (`manager` endpoint,
        `service`, `nodes`) and the edge proxies that spend an approval (`proxyService`,
        `edgeNodes`): the Swarm checks run before the HTTP ones."""
        options = dict(args.options)
        am_password: pulumi.Output[str] | None = None
        if options.get("alertmanager_url") and alertmanager_password is not None:

            options["alertmanager_user"] = ALERTMANAGER_USER
            am_password = pulumi.Output.secret(alertmanager_password)
        props: dict[str, Any] = {
            "kind": GATE_KIND,
            "candidateColor": args.candidate_color,
            "previewUrl": args.preview_url,
            "image": args.image,
            "replicas": args.replicas,
            "options": options,
            "enabled": args.enabled,
            "exchanges": args.exchanges,
            "alertmanagerPassword": am_password,
            "approvedColor": None,
            "validated": None,
            "checkedAt": None,
            "report": None,
            "secretsFingerprint": None,
            "audit": dict(args.audit) if args.audit else None,
            "proxyContainerName": proxy_container_name,
            "candidateContainers": candidate_containers,
            "swarm": dict(swarm) if swarm else None,
        }
        secret_opts = pulumi.ResourceOptions(additional_secret_outputs=list(SECRET_FIELDS))
        super().__init__(
            PromotionGateProvider(), name, props, pulumi.ResourceOptions.merge(secret_opts, opts)
        )

    # Dynamic resources keep their outputs under the property names (camelCase here, as
    # the offline render and policies read them); these give them Python names.
    @property
    def approved_color(self) -> pulumi.Output[str]:
        output: pulumi.Output[str] = self.__dict__["approvedColor"]
        return output

    @property
    def validated(self) -> pulumi.Output[bool]:
        output: pulumi.Output[bool] = self.__dict__["validated"]
        return output
