"""Generated configuration for the monitoring stack: one builder module per service.

Every builder is a pure function of `Settings` (plus the stack name where labels need
it) returning file text, so tests run the real tools (promtool, amtool) on exactly
what the component uploads. Nothing here reads `deployment.activeColor`: flipping the
live color must never change a monitoring container's inputs; the live color is
measured at run time by probing the proxy (see `blackbox.py`, `rules.py`).
"""

from __future__ import annotations

from . import alertmanager, blackbox, grafana, layout, loki, prometheus, promtail, rules, victorialogs

__all__ = ["alertmanager", "blackbox", "grafana", "layout", "loki", "prometheus", "promtail", "rules",
           "victorialogs"]
