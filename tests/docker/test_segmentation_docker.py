"""Real Docker: the rendered ci stack's network layout keeps the apps away from the monitoring
control plane (issue 13, items 1 and 6).

Every container of the rendered `ci` stack is started from its rendered inputs on the rendered
networks (tests/docker/test_ci_images.py `CiStack`: the ci stand-in images, uploads, aliases), so the
app, the proxy (the generated nginx.conf), Alertmanager (the rendered web config) and Prometheus
(the rendered prometheus.yml and password file) run as the program describes them. Then:

- from inside an app container: no control-plane name resolves, no address of Alertmanager or
  Prometheus (on any of their networks) accepts a connection, a silence cannot be created, and
  the proxy's status listener (stub_status, the scrape relay) is closed, also after an
  `nginx -s reload` (what the routing switch does), while the proxy's live listener answers;
- from a container on the monitoring network: a silence without credentials gets 401, with the
  generated credentials it is created;
- Prometheus scrapes each app replica through the proxy's relay (`up`, `paper_trading_mode` with
  the replica's instance/color labels), the blackbox exporter probes readiness through it, and
  Prometheus authenticates to Alertmanager (its `alertmanager` job is up).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.ci_stack import STACK, CiStack

pytestmark = pytest.mark.docker

READY_TIMEOUT = 120.0
SCRAPE_TIMEOUT = 60.0
CONTROL_PLANE = ("alertmanager", "prometheus", "grafana", "loki")
SILENCE = {
    "matchers": [{"name": "alertname", "value": "PaperTradingModeOff", "isRegex": False}],
    "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2030-01-02T00:00:00Z",
    "createdBy": "test", "comment": "a compromised app silencing the safety alert",
}

#: Runs inside a container (python3): each step's outcome as JSON, never an exception.
PROBE = r"""
import json, socket, sys, urllib.request, urllib.error, base64
steps = json.loads(sys.argv[1]); out = []
for step in steps:
    kind = step["kind"]
    try:
        if kind == "resolve":
            out.append(socket.gethostbyname(step["host"]))
        elif kind == "connect":
            with socket.create_connection((step["host"], step["port"]), timeout=3):
                out.append("connected")
        elif kind == "http":
            headers = {"Content-Type": "application/json"}
            if step.get("auth"):
                headers["Authorization"] = "Basic " + base64.b64encode(step["auth"].encode()).decode()
            data = step["body"].encode() if step.get("body") is not None else None
            req = urllib.request.Request(step["url"], data=data, headers=headers, method=step["method"])
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    out.append({"status": r.status, "body": r.read().decode(errors="replace")[:20000]})
            except urllib.error.HTTPError as e:
                out.append({"status": e.code, "body": ""})
    except (OSError, urllib.error.URLError) as e:
        out.append("error: " + type(getattr(e, "reason", e)).__name__)
print(json.dumps(out))
"""


def probe(container: Any, steps: list[dict[str, Any]]) -> list[Any]:
    result = container.exec_run(["python3", "-c", PROBE, json.dumps(steps)])
    assert result.exit_code == 0, result.output.decode(errors="replace")
    found: list[Any] = json.loads(result.output.decode().strip().splitlines()[-1])
    return found


def refused(outcome: Any) -> bool:
    """A step that got no HTTP answer and no connection (name or connection error)."""
    return isinstance(outcome, str) and outcome.startswith("error: ")


class Env:
    def __init__(self, stack: CiStack, graph: Any, prober: Any) -> None:
        self.stack, self.graph, self.prober = stack, graph, prober

    def rendered(self, service: str) -> Any:
        (res,) = [r for r in self.graph.containers if r.label_map.get("paper-trading.service") == service
                  and "paper-trading.carrier-for" not in r.label_map]
        return res

    def container(self, service: str) -> Any:
        return self.stack.started[self.rendered(service).inputs["name"]]

    def apps(self) -> list[Any]:
        return [self.stack.started[r.inputs["name"]] for r in self.graph.containers
                if r.label_map.get("paper-trading.role") == "app"
                and "paper-trading.carrier-for" not in r.label_map]

    def addresses(self, service: str) -> dict[str, str]:
        container = self.container(service)
        container.reload()
        networks = container.attrs["NetworkSettings"]["Networks"]
        return {net: info["IPAddress"] for net, info in networks.items()}


@pytest.fixture(scope="module")
def env(client: Any) -> Iterator[Env]:  # noqa: F811 - the imported fixture
    from tools.render import evaluate

    graph = evaluate(STACK)
    stack = CiStack(client, graph)
    try:
        stack.create_networks()
        deadline = time.monotonic() + READY_TIMEOUT
        stack.start_all(deadline)
        wanted = [r for r in graph.containers if r.label_map.get("paper-trading.service") in
                  ("alertmanager", "prometheus", "proxy", "blackbox-exporter")
                  or r.label_map.get("paper-trading.role") == "app"]
        while [r for r in wanted if stack.status(r) is not True] and time.monotonic() < deadline:
            time.sleep(0.5)
        bad = [stack.describe(r) for r in wanted if stack.status(r) is not True]
        assert not bad, "not healthy:\n" + "\n".join(bad)
        # A container on Prometheus' networks (monitoring + metrics), as Prometheus sees them.
        prometheus = next(r for r in graph.containers
                          if r.label_map.get("paper-trading.service") == "prometheus")
        nets = [n["name"] for n in prometheus.inputs["networksAdvanced"]]
        base = next(i for i in client.images.list()
                    if any(t.startswith("paper-trading-base:") for t in i.tags))
        prober = client.containers.create(
            base.id, command=["sleep", "3600"], name=f"{stack.prefix}-prober", labels=stack.labels,
            network=stack.network(nets[0]))
        for net in nets[1:]:
            client.networks.get(stack.network(net)).connect(prober)
        prober.start()
        yield Env(stack, graph, prober)
    finally:
        stack.remove()


def test_the_layout_under_test_is_the_rendered_one(env: Env) -> None:
    """Guards against a vacuous pass: the app is up on its rendered networks, Alertmanager on its own."""
    app_nets = {n["name"] for n in env.rendered("app-blue").inputs["networksAdvanced"]}
    assert {n.rsplit("-", 1)[1] for n in app_nets} == {"frontend", "backend"}
    am = env.addresses("alertmanager")
    assert len(am) == 1 and next(iter(am)).endswith("-monitoring")
    # The app reaches the proxy's live listener: the network is really there.
    (live,) = probe(env.apps()[0], [{"kind": "connect", "host": "proxy", "port": 8080}])
    assert live == "connected"


def test_app_resolves_no_control_plane_name(env: Env) -> None:
    names = [*CONTROL_PLANE, "promtail", "proxy-status",
             *[env.rendered(s).inputs["name"] for s in ("alertmanager", "prometheus")]]
    for app in env.apps():
        outcomes = probe(app, [{"kind": "resolve", "host": name} for name in names])
        assert {n: o for n, o in zip(names, outcomes, strict=True) if not refused(o)} == {}, app.name


def test_app_cannot_connect_to_any_control_plane_address(env: Env) -> None:
    targets = [(ip, 9093) for ip in env.addresses("alertmanager").values()]
    targets += [(ip, 9090) for ip in env.addresses("prometheus").values()]
    assert len(targets) >= 3  # alertmanager: monitoring; prometheus: monitoring + metrics
    for app in env.apps():
        outcomes = probe(app, [{"kind": "connect", "host": ip, "port": port} for ip, port in targets])
        assert {t: o for t, o in zip(targets, outcomes, strict=True) if not refused(o)} == {}, app.name


def test_app_cannot_create_a_silence(env: Env) -> None:
    urls = ["http://alertmanager:9093/api/v2/silences",
            *[f"http://{ip}:9093/api/v2/silences" for ip in env.addresses("alertmanager").values()]]
    steps = [{"kind": "http", "method": "POST", "url": u, "body": json.dumps(SILENCE)} for u in urls]
    for app in env.apps():
        outcomes = probe(app, steps)
        assert {u: o for u, o in zip(urls, outcomes, strict=True) if not refused(o)} == {}, app.name


def _status_from_app(env: Env) -> dict[str, Any]:
    proxy_ips = env.addresses("proxy")
    hosts = ["proxy", *proxy_ips.values()]
    app = env.apps()[0]
    outcomes = probe(app, [{"kind": "connect", "host": h, "port": 8081} for h in hosts])
    return {h: o for h, o in zip(hosts, outcomes, strict=True) if not refused(o)}


def _relay_from_prometheus_side(env: Env) -> list[Any]:
    app = env.rendered("app-blue").inputs["name"]
    return probe(env.prober, [
        {"kind": "http", "method": "GET", "url": f"http://proxy-status:8081/scrape/{app}/metrics"},
        {"kind": "http", "method": "GET", "url": "http://proxy-status:8081/stub_status"},
        {"kind": "http", "method": "POST", "url": f"http://proxy-status:8081/scrape/{app}/metrics",
         "body": ""},
        {"kind": "http", "method": "GET", "url": "http://proxy-status:8081/scrape/elsewhere:80/metrics"},
    ])


def test_status_listener_closed_to_the_app_also_after_a_reload(env: Env) -> None:
    for moment in ("started", "reloaded"):
        assert _status_from_app(env) == {}, moment
        metrics, stub, post, other = _relay_from_prometheus_side(env)
        assert metrics["status"] == 200 and "\npaper_trading_mode 1" in "\n" + metrics["body"], moment
        assert stub["status"] == 200 and "Active connections" in stub["body"], moment
        assert (post["status"], other["status"]) == (403, 404), moment  # GET-only, exact locations
        if moment == "started":
            result = env.container("proxy").exec_run(["nginx", "-s", "reload", "-c",
                                                      "/etc/paper-trading/nginx/nginx.conf"])
            assert result.exit_code == 0, result.output
            time.sleep(1)


def test_silence_needs_the_generated_credentials(env: Env) -> None:
    am = env.rendered("alertmanager")
    (password,) = [u["content"] for u in am.inputs["uploads"] if u["file"].endswith("/alertmanager_password")]
    post = {"kind": "http", "method": "POST", "url": "http://alertmanager:9093/api/v2/silences",
            "body": json.dumps(SILENCE)}
    without, wrong, good = probe(env.prober, [
        post, {**post, "auth": "prometheus:wrong"}, {**post, "auth": f"prometheus:{password}"},
    ])
    assert (without["status"], wrong["status"], good["status"]) == (401, 401, 200)
    assert json.loads(good["body"])["silenceID"]


def _query(env: Env, expr: str) -> list[dict[str, Any]]:
    from urllib.parse import quote

    (answer,) = probe(env.prober, [{"kind": "http", "method": "GET",
                                    "url": f"http://prometheus:9090/api/v1/query?query={quote(expr)}"}])
    assert answer["status"] == 200, answer
    result: list[dict[str, Any]] = json.loads(answer["body"])["data"]["result"]
    return result


def test_prometheus_scrapes_the_apps_through_the_relay(env: Env) -> None:
    apps = {r.inputs["name"]: r.label_map["paper-trading.color"] for r in env.graph.containers
            if r.label_map.get("paper-trading.role") == "app"
            and "paper-trading.carrier-for" not in r.label_map}
    wanted = {(name, color, "1") for name, color in apps.items()}
    queries = ('up{job="app"}', 'paper_trading_mode{job="app"}', 'probe_success{job="app-ready"}')
    am_up = 'up{job="alertmanager"}'
    deadline = time.monotonic() + SCRAPE_TIMEOUT
    while True:
        found = {q: {(s["metric"]["instance"], s["metric"]["color"], s["value"][1]) for s in _query(env, q)}
                 for q in queries}
        # Prometheus authenticates to Alertmanager with the rendered password file.
        am = [s["value"][1] for s in _query(env, am_up)]
        if (all(found[q] == wanted for q in queries) and am == ["1"]) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert found == {q: wanted for q in queries}
    assert am == ["1"]
