"""Kernel append-only for the audit trail: `chattr +a` by a one-shot container (opt-in).

Run by `python -m release.audit seal|unseal` (docs/security.md, "Audit trail").
"""

from __future__ import annotations

from typing import Any

import docker
import docker.errors

import programs
from contract import AUDIT_DIR, AUDIT_PATH, ROLE_LABEL

#: Kernel append-only (measured: ext4 volumes, Docker 20.10's default seccomp):
#: `chattr +a` on audit.jsonl makes every open for writing without O_APPEND, truncate, rename
#: and unlink fail with EPERM for every process, root included; the writers (`>>`, O_APPEND)
#: still append. Setting or clearing it needs CAP_LINUX_IMMUTABLE, and CAP_FOWNER because the
#: file belongs to the writer uid: this one-shot container (root, only those two capabilities,
#: no network, read-only rootfs, only the audit volume) is the only thing that ever holds them.
#: Opt-in (`seal`): afterwards `docker volume rm` and any rotation need `unseal` first.
SEAL_SCRIPT = programs.text("audit/seal.sh")


def seal(volume: str, image: str, client: Any = None, *, on: bool = True) -> str:
    """Set (`on`) or clear kernel append-only on the volume's audit.jsonl; lsattr's line."""

    docker_client = client or docker.from_env(timeout=30)
    try:
        out = docker_client.containers.run(
            image, ["sh", "-c", SEAL_SCRIPT], entrypoint=[], user="0",
            environment={"AUDIT_LOG": AUDIT_PATH, "SEAL_FLAG": "+a" if on else "-a"},
            volumes=[f"{volume}:{AUDIT_DIR}:rw"],
            network_mode="none", read_only=True, cap_drop=["ALL"], cap_add=["LINUX_IMMUTABLE", "FOWNER"],
            security_opt=["no-new-privileges"], labels={ROLE_LABEL: "audit-seal"}, mem_limit="32m",
            remove=True, stdout=True, stderr=False,
        )
    except docker.errors.ContainerError as exc:
        raw = exc.stderr
        said = " ".join((raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw or "")).split())
        raise OSError(f"audit seal exited {exc.exit_status}: {said or 'no message'}") from None
    finally:
        if client is None:
            docker_client.close()
    return " ".join((out.decode(errors="replace") if isinstance(out, bytes) else str(out or "")).split())
