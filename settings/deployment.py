"""`deployment`: the live color and each color's image and replicas."""

from __future__ import annotations

from pydantic import Field

from .base import Color, Model, Pinned, other_color

#: The most replicas one color may run (the proxy's scrape relay admits exactly these names).
MAX_REPLICAS = 20


class ColorConfig(Model):
    image: Pinned
    replicas: int = Field(default=2, ge=1, le=MAX_REPLICAS)


class DeploymentConfig(Model):
    active_color: Color = "blue"
    blue: ColorConfig
    green: ColorConfig

    def color(self, color: Color) -> ColorConfig:
        return self.blue if color == "blue" else self.green

    @property
    def preview_color(self) -> Color:
        return other_color(self.active_color)
