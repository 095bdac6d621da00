"""Names the program, the programs in its containers, the policy pack and the tools agree on.

Defined once: a label the program writes is the label a policy reads and a tool filters on;
the directory where the program mounts secrets is where every container reads them.
"""

from __future__ import annotations

from typing import Final

LABEL_PREFIX: Final = "paper-trading"
#: What a container is for (`app`, `host-guard`, ...): policies and the release planner key on it.
ROLE_LABEL: Final = f"{LABEL_PREFIX}.role"
#: The app color a container serves (`blue` or `green`).
COLOR_LABEL: Final = f"{LABEL_PREFIX}.color"
#: The Pulumi stack a container, network or volume belongs to.
STACK_LABEL: Final = f"{LABEL_PREFIX}.stack"
#: The service (`proxy`, `postgres`, `app-blue`, ...).
SERVICE_LABEL: Final = f"{LABEL_PREFIX}.service"
#: On a never-started file carrier: the container whose files it carries (stack/carrier.py).
CARRIER_LABEL: Final = f"{LABEL_PREFIX}.carrier-for"
#: The role of the app's containers.
APP_ROLE: Final = "app"
#: The role of the Swarm auto-scaler's Prometheus (stack/swarm/signal.py): it publishes one port.
SIGNAL_ROLE: Final = "autoscale-signal"
#: Where every container reads its secrets: files on a tmpfs, never environment variables.
SECRETS_DIR: Final = "/run/secrets"
#: Where the audit volume is mounted (the backup service, the one-shot writer, the log collector)
#: and the trail's file in it.
AUDIT_DIR: Final = "/var/log/paper-trading/audit"
AUDIT_FILE: Final = "audit.jsonl"
AUDIT_PATH: Final = f"{AUDIT_DIR}/{AUDIT_FILE}"
#: The backup image ships this directory owned by its `postgres` user: mounting the (empty,
#: new) audit volume there too makes Docker copy that owner onto it (copy-up), so the
#: non-root writers can create the file. Same technique as the backups volume.
AUDIT_OWNERSHIP_DONOR: Final = "/var/lib/postgresql"


def swarm_app_service(name_prefix: str, color: str) -> str:
    """A color's Swarm service name: the stack builds it, the release and the scaler find it by it."""
    return f"{name_prefix}-app-{color}"


def swarm_data_service(name_prefix: str, store: str) -> str:
    """A datastore's Swarm service name (postgres, redis, rabbitmq): the handoff finds its task by it."""
    return f"{name_prefix}-{store}"
