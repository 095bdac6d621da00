"""The IDS as rendered (issue 14, part 2): config validation, the generated fail2ban files and the
hardened container. The real fail2ban/nginx run is tests/render/test_ids_real.py."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from render.ids import JAILS, bundle
from settings import ConfigError, parse_settings
from tests.support import rendered
from tests.support.fidelity_nginx import prod_settings
from tools.render import stack_config


def _raw(stack: str = "prod") -> dict[str, str]:
    config, _ = stack_config(stack)
    return {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("paper-trading:")}


def _ids_container(stack: str) -> Any:
    found = [r for r in rendered(stack).containers if r.name == "ids"]
    assert len(found) == 1, f"{stack}: {len(found)} ids containers"
    return found[0]


@pytest.mark.parametrize(("ids", "key", "says"), [
    ({"allowList": ["10.0.0.300"]}, "security.ids.allowList", "is not an IP address or CIDR"),
    ({"banTimeSeconds": 1}, "security.ids.banTimeSeconds", "must be at least 10"),
    ({"probe": {"maxRetry": 0}}, "security.ids.probe.maxRetry", "must be at least 1"),
    ({"bantime": 60}, "security.ids.bantime", "unknown key"),
])
def test_bad_ids_config_names_the_key(ids: dict[str, Any], key: str, says: str) -> None:
    raw = _raw()
    security = json.loads(raw.get("security", "{}"))
    security["ids"] = {**security.get("ids", {}), **ids}
    raw["security"] = json.dumps(security)
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw, frozenset(k for k in raw if k in ("exchanges", "monitoring")))
    assert any(p.startswith(f"paper-trading:{key}") and says in p for p in caught.value.problems), \
        caught.value.problems


def test_allow_list_is_normalised_cidrs() -> None:
    raw = _raw()
    raw["security"] = json.dumps({"ids": {"allowList": ["203.0.113.7", "10.1.0.0/16", "2001:db8::1"]}})
    settings = parse_settings(raw, frozenset({"exchanges", "monitoring"}))
    assert settings.security.ids.allow_list == ("203.0.113.7/32", "10.1.0.0/16", "2001:db8::1/128")


def test_bundle_has_every_jail_with_its_thresholds() -> None:
    settings = prod_settings()
    files = bundle(settings)
    jail = files["conf/jail.conf"]
    for name in JAILS:
        cfg = getattr(settings.security.ids, name)
        section = jail.split(f"[{name}]\n", 1)[1].split("\n\n", 1)[0].splitlines()
        assert f"findtime = {cfg.find_time_seconds}" in section
        assert f"maxretry = {cfg.max_retry}" in section
        assert f"action = paper-trading-decision[jail={name}]" in section
        assert f"conf/filter.d/paper-trading-{name}.conf" in files
    assert f"bantime = {settings.security.ids.ban_time_seconds}" in jail.splitlines()
    # Only the public listeners count (not the preview listener where the gate probes).
    assert '"listener":"(?:8080|8443)"' in files["conf/filter.d/paper-trading-probe.conf"]
    assert "127.0.0.0/8" in files["allow-list"].split()


def test_ids_container_is_hardened() -> None:
    for stack in ("prod", "ci"):
        res = _ids_container(stack)
        inputs = res.inputs
        labels = {lab["label"]: lab["value"] for lab in inputs["labels"]}
        assert labels["paper-trading.role"] == "ids"
        assert inputs["user"] == "65534:65534"
        assert inputs["readOnly"] is True and not inputs.get("uploads")
        assert inputs["capabilities"]["drops"] == ["ALL"] and not inputs["capabilities"].get("adds")
        assert inputs["privileged"] is False
        assert "no-new-privileges:true" in inputs["securityOpts"]
        assert not inputs.get("networkMode") and not inputs.get("ports")
        assert [n["name"].rsplit("-", 1)[-1] for n in inputs["networksAdvanced"]] == ["metrics"]
        mounts = {v["containerPath"]: v for v in inputs["volumes"]}
        assert mounts["/var/log/paper-trading"]["readOnly"] is True
        assert mounts["/var/lib/paper-trading/decisions"].get("readOnly") in (False, None)
        assert set(mounts) == {"/var/log/paper-trading", "/var/lib/paper-trading/decisions"}
        # The generated bundle is what the container runs.
        env = dict(e.split("=", 1) for e in inputs["envs"])
        shipped = json.loads(base64.b64decode(env["IDS_CONFIG_BUNDLE"]))
        settings = prod_settings() if stack == "prod" else _ci()
        assert shipped["conf/jail.conf"] == bundle(settings)["conf/jail.conf"]


def _ci() -> Any:
    return parse_settings(_raw("ci"), frozenset({"exchanges", "monitoring"}))


def test_proxy_writes_the_access_log_file_on_the_volume() -> None:
    proxy = next(r for r in rendered("prod").containers if r.name == "proxy")
    carrier = next(r for r in rendered("prod").containers if r.name == "proxy-carrier")
    conf = next(u["content"] for u in carrier.inputs["uploads"] if u["file"].endswith("nginx.conf"))
    assert "    access_log /var/log/paper-trading/access.log ids;" in conf.splitlines()
    volumes = {v["containerPath"]: v for v in proxy.inputs["volumes"]}
    assert volumes["/var/log/paper-trading"]["volumeName"].endswith("-proxy-logs")
    vols = {v.inputs["name"]: v.inputs for v in rendered("prod").of_type("docker:index/volume:Volume")}
    opts = vols[volumes["/var/log/paper-trading"]["volumeName"]]["driverOpts"]
    assert opts["type"] == "tmpfs" and "uid=101" in opts["o"] and "size=" in opts["o"]


def test_auth_jail_watches_every_auth_rate_limited_location() -> None:
    """Every `location` of the rendered proxy under `limit_req zone=auth` is one of the auth
    jail's paths (issue 21, item 5: it once watched only the login), and the filter names each."""
    import re

    from render.ids import auth_paths, failregexes

    carrier = next(r for r in rendered("prod").containers if r.name == "proxy-carrier")
    conf = next(u["content"] for u in carrier.inputs["uploads"] if u["file"].endswith("nginx.conf"))
    limited = {m.group(1) for m in re.finditer(r"location (\S+) \{[^}]*limit_req zone=auth ", conf)}
    settings = prod_settings()
    assert limited and limited <= set(auth_paths(settings)), (limited, auth_paths(settings))
    (unsafe, limit) = failregexes("auth", settings, (8443,))
    for path in limited:
        assert re.escape(path) in unsafe and re.escape(path) in limit
