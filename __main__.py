"""The paper-trading deployment: load settings, build components, export outputs."""

import pulumi

from components.config import load_settings
from components.network import Networks, NetworksArgs
from components.volumes import Volumes, VolumesArgs

settings = load_settings()
stack = pulumi.get_stack()
networks = Networks("networks", NetworksArgs(name_prefix=settings.name_prefix, stack=stack))
volumes = Volumes("volumes", VolumesArgs(name_prefix=settings.name_prefix, stack=stack))
pulumi.export("activeColor", settings.deployment.active_color)
