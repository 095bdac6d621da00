"""The backup service and data safety on the rendered graph.

`backup_graph` renders the real program; until `__main__.py` builds the Backup
component it renders the program plus the one wiring statement the lead adds
(and `test_backup_is_wired_into_main` fails, so that cannot go unnoticed).
"""

from __future__ import annotations

from typing import Any

import pytest

from stack.backup import BACKUP_USER, BIN_DIR, OWNERSHIP_DONORS, SCRIPTS, SCRIPTS_DIR, service_command
from tests.support import rendered
from tests.support.backup_render import _wired, backup_container, backup_graph, envs

BACKUP_TYPE = "paper-trading:backup:Backup"
DATA_VOLUMES = ("postgres", "redis", "rabbitmq", "prometheus", "alertmanager", "grafana", "logs", "backups")
STACKS = ("prod", "dev")










def test_backup_is_wired_into_main() -> None:
    assert _wired(), "__main__.py does not build the Backup component yet (see docs/backup.md)"
    assert rendered("prod").of_type(BACKUP_TYPE)


@pytest.mark.parametrize("stack", STACKS)
def test_every_data_volume_protected_and_retained(stack: str) -> None:
    graph = backup_graph(stack)
    volumes = {r.inputs["name"]: r for r in graph.of_type("docker:index/volume:Volume")}
    prefix = backup_container(graph).inputs["name"].removesuffix("-backup")
    for service in DATA_VOLUMES:
        res = volumes[f"{prefix}-{service}-data"]
        assert res.options["protect"] is True, service
        assert res.options["retainOnDelete"] is True, service
    # Every volume labelled as data, whoever creates it, is protected too.
    for name, res in volumes.items():
        if res.label_map.get("paper-trading.data") == "true":
            assert res.options["protect"] and res.options["retainOnDelete"], name
    # The metrics volume is derived data, deliberately not protected.
    metrics = volumes[f"{prefix}-backup-metrics"]
    assert metrics.options["protect"] is False and "paper-trading.data" not in metrics.label_map


def test_container_mounts_volumes_and_runs_the_repo_scripts() -> None:
    graph = backup_graph("prod")
    res = backup_container(graph)
    i = res.inputs
    assert i["image"] == "postgres:15.10-alpine" and i["name"] == "paper-trading-backup"
    assert i["command"] == service_command() == ["/bin/sh", "-c", (SCRIPTS_DIR / "service.sh").read_text()]
    assert i["command"][-1].rstrip().endswith("exec backup loop")
    assert envs(res)["PATH"].startswith(f"{BIN_DIR}:")
    # Not root: the image's postgres user, owner of both volumes through the donor mounts.
    assert i["user"] == BACKUP_USER == "postgres"
    mounts = {v["containerPath"]: v for v in i["volumes"]}
    assert mounts["/backups"]["volumeName"] == "paper-trading-backups-data"
    assert mounts["/metrics"]["volumeName"] == "paper-trading-backup-metrics"
    assert mounts[OWNERSHIP_DONORS["backups"]]["volumeName"] == "paper-trading-backups-data"
    assert mounts[OWNERSHIP_DONORS["metrics"]]["volumeName"] == "paper-trading-backup-metrics"
    assert mounts["/sources/redis"] == {
        "volumeName": "paper-trading-redis-data", "readOnly": True, "containerPath": "/sources/redis"}
    assert [n["name"] for n in i["networksAdvanced"]] == ["paper-trading-backend"]
    files = graph.files()
    for script in SCRIPTS:
        assert files[f"paper-trading-backup{BIN_DIR}/{script}"] == (SCRIPTS_DIR / script).read_text()
    # Passwords as files only.
    assert files["paper-trading-backup/run/secrets/postgres_password"] == "[secret]"
    assert not [e for e in i["envs"] if "mock-" in e or "PASSWORD=" in e]
    assert envs(res)["PGPASSWORD_FILE"] == "/run/secrets/postgres_password"


def test_container_is_hardened() -> None:
    i = backup_container(backup_graph("prod")).inputs
    assert i["readOnly"] is (not i.get("uploads"))  # writable only where pulumi-docker must upload files
    assert i["privileged"] is False
    assert i["capabilities"]["drops"] == ["ALL"] and not i["capabilities"].get("adds")
    assert "no-new-privileges:true" in i["securityOpts"]
    assert i["memory"] == 256 and i["restart"] == "on-failure"
    assert not i.get("ports")


def test_schedule_and_retention_come_from_config() -> None:
    default = envs(backup_container(backup_graph("prod")))
    keys = ("BACKUP_INTERVAL_SECONDS", "BACKUP_KEEP_COUNT", "BACKUP_MAX_AGE_DAYS")
    assert [default[k] for k in keys] == ["21600", "14", "30"]
    assert "BACKUP_SECOND_DIR" not in default
    graph = backup_graph("prod", backup={
        "intervalMinutes": 90, "retention": {"keepCount": 3, "maxAgeDays": 9},
        "secondTarget": "/srv/offsite/paper-trading/", "restoreCheckDays": 0,
        "rabbitmqDefinitions": False, "redisSnapshot": False,
    })
    res = backup_container(graph)
    env = envs(res)
    assert env["BACKUP_INTERVAL_SECONDS"] == "5400"
    assert env["BACKUP_KEEP_COUNT"] == "3" and env["BACKUP_MAX_AGE_DAYS"] == "9"
    assert env["BACKUP_RESTORE_CHECK_SECONDS"] == "0"
    assert env["BACKUP_SECOND_DIR"] == "/backups-second"
    assert "RABBITMQ_API_URL" not in env and "REDIS_DATA_DIR" not in env
    mounts = {v["containerPath"]: v for v in res.inputs["volumes"]}
    assert mounts["/backups-second"]["hostPath"] == "/srv/offsite/paper-trading"
    assert "/sources/redis" not in mounts
    assert "paper-trading-backup/run/secrets/rabbitmq_password" not in graph.files()


def test_disabled_backup_keeps_metrics_volume_but_no_container() -> None:
    graph = backup_graph("prod", backup={"enabled": False})
    assert not [r for r in graph.containers if r.label_map.get("paper-trading.service") == "backup"]
    assert [r for r in graph.of_type("docker:index/volume:Volume") if r.name == "backup-metrics"]


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ({"intervalMinutes": 1}, "backup.intervalMinutes"),
        ({"retention": {"keepCount": 0}}, "backup.retention.keepCount"),
        ({"retention": {"maxAgeDays": 0}}, "backup.retention.maxAgeDays"),
        ({"secondTarget": "relative/path"}, "backup.secondTarget"),
        ({"secondTarget": "/"}, "backup.secondTarget"),
        ({"schedule": "daily"}, "backup.schedule"),
    ],
)
def test_bad_backup_config_names_the_key(value: dict[str, Any], key: str) -> None:
    from settings import ConfigError

    with pytest.raises(ConfigError) as err:
        backup_graph("prod", backup=value)
    assert f"paper-trading:{key}:" in str(err.value)
