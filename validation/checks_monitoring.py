"""Monitoring checks, each only when its URL is given: Prometheus, Alertmanager, Grafana."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from validation.context import CheckFailed, Context, Passed
from validation.models import Category
from validation.options import ValidationOptions
from validation.registry import check

GRAFANA_OK = frozenset({"ok", "success"})


def _need(attr: str, flag: str) -> Any:
    def rule(options: ValidationOptions) -> str | None:
        return None if getattr(options, attr) else f"no {flag} given"

    return rule


async def _json(ctx: Context, base: str, path: str, headers: dict[str, str] | None = None) -> Any:
    response = await ctx.get(path, base=base, headers=headers)
    if response.status_code != 200:
        raise CheckFailed(f"GET {base}{path}: status {response.status_code}")
    try:
        return response.json()
    except ValueError as exc:
        raise CheckFailed(f"GET {base}{path}: not JSON") from exc


def _is_candidate(target: dict[str, Any], color: str) -> bool:
    labels = {**(target.get("discoveredLabels") or {}), **(target.get("labels") or {})}
    if labels.get("color") == color:
        return True
    return any(f"app-{color}" in str(value) for value in labels.values())


def _describe_target(target: dict[str, Any]) -> str:
    instance = (target.get("labels") or {}).get("instance")
    text = f"{target.get('scrapePool')}/{instance}: {target.get('health')} {target.get('lastError', '')}"
    return text.strip()


@check(
    "monitoring.prometheus_targets",
    Category.MONITORING,
    "--prometheus-url: every active target is up, including the candidate color's replicas (label "
    "color=<color> or an address app-<color>); waits up to most of the check timeout for fresh targets.",
    skip_when=_need("prometheus_url", "--prometheus-url"),
)
async def prometheus_targets(ctx: Context) -> Passed:
    base = ctx.options.prometheus_url
    assert base is not None
    color = ctx.options.color
    wanted = ctx.options.expected_replicas or 1
    deadline = time.monotonic() + ctx.options.check_timeout * 0.8
    while True:
        body = await _json(ctx, base, "/api/v1/targets?state=active")
        targets = (body.get("data") or {}).get("activeTargets") or []
        down = [_describe_target(t) for t in targets if t.get("health") != "up"]
        candidates = [t for t in targets if color and _is_candidate(t, color)]
        problem = ""
        if not targets:
            problem = "Prometheus has no active targets"
        elif down:
            problem = f"{len(down)} target(s) not up: {'; '.join(down[:5])}"
        elif color and len(candidates) < wanted:
            problem = f"{len(candidates)} target(s) for {color}, expected {wanted}"
        if not problem:
            return Passed(f"{len(targets)} targets up", {"targets": len(targets)})
        left = deadline - time.monotonic()
        if left <= 0:
            raise CheckFailed(problem, down=down)
        # Never past the deadline: a sleep beyond it would end in the budget's bare "timed out".
        await asyncio.sleep(min(0.5, left))


@check(
    "monitoring.prometheus_rules",
    Category.MONITORING,
    "--prometheus-url: rule groups are loaded and no rule reports an evaluation error.",
    skip_when=_need("prometheus_url", "--prometheus-url"),
)
async def prometheus_rules(ctx: Context) -> Passed:
    base = ctx.options.prometheus_url
    assert base is not None
    body = await _json(ctx, base, "/api/v1/rules")
    groups = (body.get("data") or {}).get("groups") or []
    if not groups:
        raise CheckFailed("Prometheus has no rule groups loaded")
    rules = [rule for group in groups for rule in group.get("rules") or []]
    # "unknown" is a rule not evaluated yet (Prometheus just started): not an error.
    bad = [
        f"{r.get('name')}: {r.get('lastError') or r.get('health')}"
        for r in rules
        if r.get("health") == "err" or r.get("lastError")
    ]
    if bad:
        raise CheckFailed(f"{len(bad)} rule(s) failing: {'; '.join(bad[:5])}")
    pending = sum(1 for r in rules if r.get("health") == "unknown")
    note = f", {pending} not evaluated yet" if pending else ""
    return Passed(f"{len(groups)} groups, {len(rules)} rules without evaluation errors{note}")


def _basic(user: str, password: str) -> dict[str, str]:
    raw = f"{user}:{password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@check(
    "monitoring.alertmanager",
    Category.MONITORING,
    "--alertmanager-url: GET /-/ready answers 200 with ALERTMANAGER_USER/ALERTMANAGER_PASSWORD, and "
    "401 without them (anyone who reaches an Alertmanager without auth can silence the safety alerts).",
    skip_when=_need("alertmanager_url", "--alertmanager-url"),
)
async def alertmanager(ctx: Context) -> Passed:
    o = ctx.options
    base = o.alertmanager_url
    assert base is not None
    anonymous = await ctx.get("/-/ready", base=base)
    if o.alertmanager_user is None or o.alertmanager_password is None:
        if anonymous.status_code == 401:
            raise CheckFailed("Alertmanager requires authentication: set ALERTMANAGER_USER and "
                              "ALERTMANAGER_PASSWORD (the stack's alertmanagerPassword)")
        raise CheckFailed(f"Alertmanager /-/ready without credentials: status {anonymous.status_code}, "
                          "expected 401 (it must require authentication)")
    if anonymous.status_code != 401:
        raise CheckFailed(f"Alertmanager answers without credentials (status {anonymous.status_code}, "
                          "expected 401): anyone on its network can create silences")
    headers = _basic(o.alertmanager_user, o.alertmanager_password.get_secret_value())
    response = await ctx.get("/-/ready", base=base, headers=headers)
    if response.status_code != 200:
        raise CheckFailed(f"Alertmanager /-/ready with credentials: status {response.status_code}")
    return Passed("ready; refuses requests without credentials (401)")


def _grafana_headers(ctx: Context) -> dict[str, str]:
    o = ctx.options
    if o.grafana_token is not None:
        return {"Authorization": f"Bearer {o.grafana_token.get_secret_value()}"}
    if o.grafana_user and o.grafana_password is not None:
        return _basic(o.grafana_user, o.grafana_password.get_secret_value())
    return {}


@check(
    "monitoring.grafana_datasources",
    Category.MONITORING,
    "--grafana-url: at least one datasource, and each answers its health check.",
    skip_when=_need("grafana_url", "--grafana-url"),
)
async def grafana_datasources(ctx: Context) -> Passed:
    base = ctx.options.grafana_url
    assert base is not None
    headers = _grafana_headers(ctx)
    sources = await _json(ctx, base, "/api/datasources", headers)
    if not isinstance(sources, list) or not sources:
        raise CheckFailed("Grafana has no datasources")

    async def health(source: dict[str, Any]) -> str | None:
        response = await ctx.get(
            f"/api/datasources/uid/{source.get('uid')}/health", base=base, headers=headers
        )
        try:
            status = str(response.json().get("status", "")).lower()
        except (ValueError, AttributeError):
            status = ""
        if response.status_code != 200 or status not in GRAFANA_OK:
            return f"{source.get('name')}: {response.status_code} {status}".strip()
        return None

    bad = [b for b in await asyncio.gather(*(health(s) for s in sources)) if b]
    if bad:
        raise CheckFailed(f"datasource(s) unhealthy: {'; '.join(bad)}")
    return Passed(f"{len(sources)} datasource(s) healthy")


@check(
    "monitoring.grafana_dashboards",
    Category.MONITORING,
    "--grafana-url: at least one dashboard is provisioned.",
    skip_when=_need("grafana_url", "--grafana-url"),
)
async def grafana_dashboards(ctx: Context) -> Passed:
    base = ctx.options.grafana_url
    assert base is not None
    found = await _json(ctx, base, "/api/search?type=dash-db", _grafana_headers(ctx))
    if not isinstance(found, list) or not found:
        raise CheckFailed("Grafana has no dashboards")
    return Passed(f"{len(found)} dashboard(s)", {"dashboards": [d.get("title") for d in found]})
