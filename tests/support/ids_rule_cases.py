"""Rule-test rows of the IDS alerts (issue 14, part 2), shared by tests/render/test_monitoring_rules.py's
table and tests/render/test_ids_rules.py: (alert, series, silent_at, fires_at, labels, summary)."""

from __future__ import annotations

from typing import Any

from tests.support.monitoring import stack_settings

IDS = {"job": "ids", "instance": "ids:9191"}
DOWN = "The intrusion detector is down or fail2ban stopped answering: nobody is banned"


def sel(metric: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{metric}{{{inner}}}"


def bans(jail: str) -> str:
    return sel("paper_trading_ids_bans_total", {**IDS, "jail": jail})


def threshold() -> int:
    return stack_settings("prod").security.ids.ban_storm_threshold


def ids_case_rows() -> list[tuple[Any, ...]]:
    t = threshold()
    return [
        # A storm: 2 x threshold bans at minute 5, none before; auth stays quiet.
        ("IdsBanStorm", [(bans("probe"), f"0x5 {2 * t}x25"), (bans("auth"), "0x30")], ["4m"], "7m", {},
         f"The IDS banned more than {t} addresses in 5 minutes"),
        # The heartbeat stops at minute 5 while the target still answers (fail2ban hung).
        ("IdsDetectorDown", [(sel("up", IDS), "1x20"),
                             (sel("paper_trading_ids_heartbeat_timestamp_seconds", IDS), "0+60x5 300x15")],
         ["2m", "6m"], "10m", IDS, DOWN),
    ]
