"""Auto-scaling on Swarm: the live color's replicas follow its requests in flight per replica.

The decision rule is `decide`, a pure function: above `scaleOutAbove` one replica more, below
`scaleInBelow` one fewer (the gap between them is the hysteresis), never outside
[`minReplicas`, `maxReplicas`], at most one change per `cooldownSeconds` (measured from the
service's last update, so a scaler restarted in between keeps it), and only when the signal
covers every running task (a new task not scraped yet would make the average lie).

`Autoscaler.tick` applies one decision, failing closed: a signal that cannot be read, edge
proxies that do not agree on the live color, or an audit record that cannot be appended leave
the replicas as they are. A change is Swarm's own scale (the replica count only, the task
template untouched), so no running task is ever replaced. Every change, and every decision held
at `maxReplicas` under load, is audited (operation `scale`: `from`/`to` are replica counts,
`reason` names the color and the signal); a decision that reaches or is held at a bound is
posted to Alertmanager. The driver is `python -m release.swarm autoscale` (release/swarm/cli.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx

from release.audit import Auditor, Sink
from release.swarm.nodes import Node, client_for, served_on
from render.monitoring.signal import replicas_query, signal_query
from settings import AutoscaleConfig

Action = Literal["out", "in", "hold"]
Bound = Literal["max", "min"]
ALERT_NAME = "PaperTradingAutoscaleAtBound"
#: How long a posted alert stays firing unless posted again (each held decision re-posts it).
ALERT_TTL = timedelta(minutes=5)
QUERY_TIMEOUT_S = 5.0


class AutoscaleError(RuntimeError):
    """The scaler could not decide or act; the message says what it could not read or do."""


@dataclass(frozen=True)
class Signal:
    """Requests in flight per replica, and over how many tasks Prometheus averaged it."""

    per_replica: float
    scraped: int


@dataclass(frozen=True)
class Decision:
    action: Action
    current: int
    target: int
    #: The decision reached this bound, or wanted past it and was held there (alerted).
    bound: Bound | None
    why: str

    @property
    def changes(self) -> bool:
        return self.target != self.current


def decide(signal: Signal, current: int, rule: AutoscaleConfig, since_change_s: float | None) -> Decision:
    """One step of the rule (see the module's docstring); `since_change_s`: None if never changed."""
    low, high = rule.min_replicas, rule.max_replicas
    if current > high:
        return Decision("in", current, high, "max", f"{current} replicas is above maxReplicas ({high})")
    if current < low:
        return Decision("out", current, low, "min", f"{current} replicas is below minReplicas ({low})")
    load = signal.per_replica
    if signal.scraped != current:
        return Decision("hold", current, current, None,
                        f"the signal covers {signal.scraped} of {current} tasks: wait for the next scrape")
    if since_change_s is not None and since_change_s < rule.cooldown_seconds:
        return Decision("hold", current, current, None,
                        f"cooling down ({since_change_s:.0f} of {rule.cooldown_seconds:g} s "
                        "since the last change)")
    if load > rule.scale_out_above:
        if current >= high:
            return Decision("hold", current, current, "max",
                            f"in flight per replica {load:.2f} > {rule.scale_out_above:g} "
                            f"at maxReplicas ({high})")
        target = current + 1
        return Decision("out", current, target, "max" if target == high else None,
                        f"in flight per replica {load:.2f} > scaleOutAbove {rule.scale_out_above:g}")
    if load < rule.scale_in_below and current > low:
        target = current - 1
        return Decision("in", current, target, "min" if target == low else None,
                        f"in flight per replica {load:.2f} < scaleInBelow {rule.scale_in_below:g}")
    return Decision("hold", current, current, None,
                    f"in flight per replica {load:.2f} within "
                    f"[{rule.scale_in_below:g}, {rule.scale_out_above:g}]")


def read_signal(prometheus: str, color: str, client: httpx.Client | None = None) -> Signal:
    """The live color's requests in flight per replica from Prometheus; AutoscaleError if unreadable."""

    def scalar(query: str) -> float:
        try:
            response = (client or httpx).get(f"{prometheus}/api/v1/query", params={"query": query},
                                             timeout=QUERY_TIMEOUT_S)
            response.raise_for_status()
            doc = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise AutoscaleError(
                f"signal: Prometheus at {prometheus} did not answer {query!r}: {exc}") from None
        result = doc.get("data", {}).get("result") if isinstance(doc, dict) else None
        if doc.get("status") != "success" or not isinstance(result, list) or len(result) != 1:
            raise AutoscaleError(f"signal: {query!r} returned no single value ({str(doc)[:200]})")
        try:
            value = float(result[0]["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            raise AutoscaleError(f"signal: {query!r} returned a malformed sample {result[0]!r}") from None
        if not math.isfinite(value) or value < 0:
            raise AutoscaleError(f"signal: {query!r} returned {value}")
        return value

    return Signal(per_replica=scalar(signal_query(color)), scraped=int(scalar(replicas_query(color))))


def post_alert(alertmanager: str, stack: str, color: str, decision: Decision) -> None:
    """Fire `ALERT_NAME` for the bound the decision hit (Alertmanager API v2); raises if not delivered."""
    now = datetime.now(UTC)
    alert = {
        "labels": {"alertname": ALERT_NAME, "severity": "warning", "stack": stack, "color": color,
                   "bound": decision.bound or ""},
        "annotations": {"summary": f"{color}: {decision.target} replicas, at {decision.bound}Replicas",
                        "description": decision.why},
        "startsAt": now.isoformat(), "endsAt": (now + ALERT_TTL).isoformat(),
    }
    try:
        response = httpx.post(f"{alertmanager.rstrip('/')}/api/v2/alerts", json=[alert],
                              timeout=QUERY_TIMEOUT_S)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise AutoscaleError(
            f"alert: Alertmanager at {alertmanager} did not take {ALERT_NAME}: {exc}") from None


@dataclass(frozen=True)
class Outcome:
    color: str
    signal: Signal | None
    decision: Decision | None
    error: str | None = None


class Autoscaler:
    """One stack's scaler: where the signal, the live color and the replicas are read, and acted on."""

    def __init__(self, stack: str, rule: AutoscaleConfig, manager: str, edges: Sequence[Node],
                 proxy_service: str, services: Mapping[str, str], prometheus: str, sink: Sink,
                 actor: str | None = None, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        if rule.alertmanager_url is None:
            raise AutoscaleError("swarm.autoscale.alertmanagerUrl: is not set")
        self.stack, self.rule, self.manager, self.edges = stack, rule, manager, edges
        self.proxy_service, self.services, self.prometheus = proxy_service, services, prometheus
        self.sink, self.actor, self.clock = sink, actor, clock
        self.alertmanager = str(rule.alertmanager_url)
        #: The last decision held at maxReplicas was recorded: the next identical one is not.
        self._held: tuple[str, int] | None = None

    def live_color(self) -> str:
        """The color every edge proxy serves; AutoscaleError when they do not agree or cannot be read."""
        served = served_on(self.edges, self.proxy_service)
        colors = set(served.values())
        if len(colors) != 1 or next(iter(colors)) not in self.services:
            raise AutoscaleError(f"live color: the edge proxies do not agree ({served}): scaling nothing")
        return next(iter(colors))

    def tick(self) -> Outcome:
        """Read, decide, audit, act, alert: one decision. Raises AutoscaleError when it cannot."""
        color = self.live_color()
        signal = read_signal(self.prometheus, color)
        client = client_for(self.manager)
        try:
            service = client.services.get(self.services[color])
            current = int(service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"])
            decision = decide(signal, current, self.rule, self._since_update(service.attrs))
            self._act(color, decision, service)
            if decision.bound is not None:
                post_alert(self.alertmanager, self.stack, color, decision)
        finally:
            client.close()
        return Outcome(color, signal, decision)

    def _since_update(self, attrs: Mapping[str, Any]) -> float | None:
        raw = attrs.get("UpdatedAt")
        if not raw:
            return None
        return max(0.0, (self.clock() - docker_time(str(raw))).total_seconds())

    def _act(self, color: str, decision: Decision, service: Any) -> None:
        held = decision.bound == "max" and not decision.changes
        if not decision.changes and not (held and self._held != (color, decision.current)):
            if not held:
                self._held = None
            return
        auditor = Auditor(self.stack, self.sink, self.actor, fail_closed=True,
                          reason=f"live {color}: {decision.why}"[:500])
        counts = {"from_": str(decision.current), "to": str(decision.target)}
        if held:  # wanted past maxReplicas: the refusal is the record (once per color and count)
            auditor.record("scale", "refused", 0.0, **counts,
                           error=f"at maxReplicas ({self.rule.max_replicas})")
            self._held = (color, decision.current)
            return
        self._held = None
        auditor.begin("scale", **counts)  # fail closed: no intent record, no scaling
        started = time.monotonic()
        try:
            service.scale(decision.target)  # Swarm's scale: the replica count only, no running task replaced
        except Exception as exc:  # noqa: BLE001 - recorded, then raised as the scaler's own error
            auditor.record("scale", "failed", (time.monotonic() - started) * 1000, **counts, error=str(exc))
            raise AutoscaleError(f"scale {self.services[color]} to {decision.target}: {exc}") from None
        auditor.record("scale", "ok", (time.monotonic() - started) * 1000, **counts)


def docker_time(raw: str) -> datetime:
    """An Engine API timestamp (RFC 3339, nanoseconds) as an aware datetime."""
    whole, _, rest = raw.rstrip("Z").partition(".")
    fraction = "".join(ch for ch in rest if ch.isdigit())[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{whole}.{fraction}+00:00")
