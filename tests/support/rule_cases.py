"""Alert-rule cases run through promtool test rules: one table, shared by the monitoring and IDS rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from render.monitoring import rules


def _sel(metric: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{metric}{{{inner}}}"

@dataclass
class Case:
    alert: str
    series: list[tuple[str, str]]
    silent_at: list[str]
    fires_at: str
    labels: dict[str, str]
    summary: str
    interval: str = "1m"
    extra_alerts: list[dict[str, Any]] = field(default_factory=list)

def _group(case: Case, alert_by_name: dict[str, rules.Alert]) -> dict[str, Any]:
    alert = alert_by_name[case.alert]
    checks: list[dict[str, Any]] = [{"eval_time": t, "alertname": case.alert, "exp_alerts": []}
                                    for t in case.silent_at]
    if case.fires_at:
        checks.append({"eval_time": case.fires_at, "alertname": case.alert, "exp_alerts": [{
            "exp_labels": {**case.labels, "severity": alert.severity},
            "exp_annotations": {
                "summary": case.summary, "runbook": alert.runbook,
                "runbook_url": f"docs/monitoring.md#{alert.name.lower()}",
            },
        }]})
    return {
        "name": case.alert,
        "interval": case.interval,
        "input_series": [{"series": s, "values": v} for s, v in case.series],
        "alert_rule_test": checks,
    }
