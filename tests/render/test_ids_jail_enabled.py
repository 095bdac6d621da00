"""`security.ids.<jail>.enabled: false` turns exactly that jail off in the generated jail.conf.

tests/render/test_ids.py checks every jail's thresholds with every jail enabled; here each jail is
disabled in turn and jail.conf (read with configparser, as fail2ban reads it) must say
`enabled = false` for it and `true` for the others, thresholds unchanged.
"""

from __future__ import annotations

import configparser

import pytest

from render.ids import JAILS, IdsPaths, jail_conf
from tests.support.fidelity_nginx import prod_settings


def _disabled(jail: str) -> configparser.ConfigParser:
    settings = prod_settings()
    ids = settings.security.ids
    ids = ids.model_copy(update={jail: getattr(ids, jail).model_copy(update={"enabled": False})})
    settings = settings.model_copy(update={"security": settings.security.model_copy(update={"ids": ids})})
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(jail_conf(settings, IdsPaths()))
    return parser


@pytest.mark.parametrize("jail", ["probe", "auth", "injection", "errors"])
def test_a_disabled_jail_is_off_and_the_others_stay_on(jail: str) -> None:
    parser = _disabled(jail)
    assert {j: parser[j]["enabled"] for j in JAILS} == {j: "false" if j == jail else "true" for j in JAILS}
    cfg = getattr(prod_settings().security.ids, jail)
    found = (parser[jail]["maxretry"], parser[jail]["findtime"])
    assert found == (str(cfg.max_retry), str(cfg.find_time_seconds))
