"""Read-only root filesystems (CIS Docker 5.12, issue 21 item 7), on the rendered stacks.

Files reach the apps and the proxy through never-started carriers (stack/carrier.py); each
container that still runs with a writable root is listed, with its reason, in
`policies/settings.py: WRITABLE_REASONS` and in docs/policies.md.
"""

from __future__ import annotations

import re

import pulumi
import pulumi_docker as docker
import pytest

from contract import CARRIER_LABEL
from policies.settings import WRITABLE_REASONS
from stack.carrier import files_hash, volume_name
from stack.common import config_file, secret_file
from tests.support import rendered
from tools.render import ROOT, Resource

SERVICE = "paper-trading.service"
DOC = (ROOT / "docs" / "policies.md").read_text()


def running(stack: str) -> list[Resource]:
    return [r for r in rendered(stack).containers if CARRIER_LABEL not in r.label_map]


def carriers(stack: str) -> list[Resource]:
    return [r for r in rendered(stack).containers if CARRIER_LABEL in r.label_map]


def documented_writable() -> dict[str, str]:
    """docs/policies.md's table of writable roots: `| `service` | reason |` rows under its heading."""
    section = DOC.split("### Containers that keep a writable root", 1)[1].split("\n## ", 1)[0]
    rows = re.finditer(r"^\| `([a-z-]+)` \| (.+?) \|$", section, re.M)
    return {m.group(1): m.group(2).strip() for m in rows}


def test_prod_every_running_container_is_read_only_or_listed_with_its_reason() -> None:
    writable = sorted(str(r.label_map[SERVICE]) for r in running("prod")
                      if r.inputs.get("readOnly") is not True)
    # Before issue 21 item 7: 17 of 21 (4 apps, the proxy, these 12).
    assert len(running("prod")) == 21
    assert writable == sorted(WRITABLE_REASONS), writable
    assert len(writable) == 12
    docs = documented_writable()
    assert set(docs) == set(WRITABLE_REASONS), sorted(set(docs) ^ set(WRITABLE_REASONS))
    assert all(len(reason) > 20 for reason in docs.values()), docs


@pytest.mark.parametrize("stack", ["prod", "dev", "ci"])
def test_the_apps_and_the_proxy_run_read_only_with_their_files_mounted_read_only(stack: str) -> None:
    targets = [r for r in running(stack)
               if r.label_map.get("paper-trading.role") in ("app", "proxy")]
    assert len([r for r in targets if r.label_map["paper-trading.role"] == "proxy"]) == 1
    for res in targets:
        assert res.inputs["readOnly"] is True, res.name
        assert not res.inputs.get("uploads"), res.name
        name = res.inputs["name"]
        (carrier,) = [c for c in carriers(stack) if c.label_map[CARRIER_LABEL] == name]
        (mount,) = [v for v in res.inputs["volumes"]
                    if str(v.get("volumeName", "")).startswith(f"{name}-files-")]
        assert mount["readOnly"] is True
        (carried,) = carrier.inputs["volumes"]
        assert carried["volumeName"] == mount["volumeName"]
        assert carried["containerPath"] == mount["containerPath"]
        assert carried.get("readOnly") is not True
        assert all(str(u["file"]).startswith(mount["containerPath"] + "/") for u in carrier.inputs["uploads"])
        assert carrier.urn in res.options["dependsOn"], f"{res.name} starts before its files are in"


@pytest.mark.parametrize("stack", ["prod", "dev", "ci"])
def test_carriers_never_start_and_publish_nothing(stack: str) -> None:
    found = carriers(stack)
    assert found
    volumes = {v.inputs["name"]: v for v in rendered(stack).of_type("docker:index/volume:Volume")}
    for res in found:
        i = res.inputs
        assert (i["start"], i["mustRun"], i.get("wait", False)) == (False, False, False), res.name
        assert not i.get("ports") and not i.get("mounts"), res.name
        assert len(i["networksAdvanced"]) == 1 and not i["networksAdvanced"][0].get("aliases"), res.name
        assert i["capabilities"]["drops"] == ["ALL"] and not i["capabilities"].get("adds"), res.name
        (vol,) = i["volumes"]
        labels = {e["label"]: e["value"] for e in volumes[vol["volumeName"]].inputs["labels"]}
        assert labels[CARRIER_LABEL] == res.label_map[CARRIER_LABEL]
        assert labels["paper-trading.data"] == "false"
        assert res.options["deleteBeforeReplace"] is True


def test_the_volume_name_is_a_hash_of_the_files_secrets_only_as_digests() -> None:
    secret = "s3cret-exchange-key-123"
    files = [(secret_file("/run/secrets/key", secret, owner="1000"), secret),
             (config_file("/run/secrets/conf", "a=1"), "a=1")]
    name = volume_name("c", files)
    assert re.fullmatch(r"c-files-[0-9a-f]{12}", name)
    assert secret not in name
    assert volume_name("c", list(reversed(files))) == name, "order does not matter"
    changed = [(secret_file("/run/secrets/key", secret + "x", owner="1000"), secret + "x"), files[1]]
    assert volume_name("c", changed) != name, "a new secret is a new volume (and a new consumer)"
    assert files_hash([(config_file("/run/secrets/conf", "a=2"), "a=2"), files[0]]) != files_hash(files)
    assert files_hash([(secret_file("/run/secrets/key", secret), secret), files[1]]) != files_hash(files), \
        "mode counts"


def test_a_generated_content_enters_the_hash_by_its_path_only() -> None:
    upload = docker.ContainerUploadArgs(file="/run/secrets/pw", content="", permissions="0444")
    one, other = pulumi.Output.from_input("x"), pulumi.Output.from_input("y")
    assert files_hash([(upload, one)]) == files_hash([(upload, other)])


def test_a_new_exchange_key_is_a_new_volume_for_every_app_replica_and_nothing_else() -> None:
    import json

    from tools.render import evaluate, stack_config

    config, secrets = stack_config("prod")
    exchanges = json.loads(config["paper-trading:exchanges"])
    exchanges["binance"]["apiKey"] = "secret:rotated"
    config["paper-trading:exchanges"] = json.dumps(exchanges)
    before = {v.inputs["name"] for v in rendered("prod").of_type("docker:index/volume:Volume")}
    after = {v.inputs["name"] for v in evaluate("prod", config=config, secret_keys=secrets)
             .of_type("docker:index/volume:Volume")}
    changed = sorted(before - after)
    assert len(changed) == 4 and all("-app-" in n and "-files-" in n for n in changed), changed
