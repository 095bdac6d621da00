"""Small helpers shared by every component: names, labels and the hardening baseline.

Keeping the baseline in one place means a container cannot drift from it by
accident: components build their containers through `hardened_container_args`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker

from contract import COLOR_LABEL, SERVICE_LABEL, STACK_LABEL
from settings import Limits

MIB = 1024 * 1024


@dataclass(frozen=True)
class NetworkNames:
    """Docker network names, plain strings so policies can read them at preview.

    `monitoring` holds only the monitoring control plane (Prometheus, Alertmanager, Grafana,
    Loki and the log collector); `metrics` is where Prometheus meets what it scrapes (exporters,
    RabbitMQ, the proxy's status listener). No app container joins either.
    """

    frontend: str
    backend: str
    monitoring: str
    metrics: str


def labels(values: Mapping[str, str]) -> list[docker.ContainerLabelArgs]:
    """Container labels in a stable (sorted) order so the graph is deterministic."""
    return [docker.ContainerLabelArgs(label=k, value=v) for k, v in sorted(values.items())]


def network_attachments(
    attachments: Mapping[str, Sequence[str]],
) -> list[docker.ContainerNetworksAdvancedArgs]:
    """`{network name: [aliases]}` to networks_advanced entries, sorted by name."""
    return [
        docker.ContainerNetworksAdvancedArgs(name=name, aliases=list(aliases) or None)
        for name, aliases in sorted(attachments.items())
    ]


def log_options(max_size: str = "10m", max_file: int = 5) -> dict[str, str]:
    """json-file rotation: every container's logs stay bounded on the host."""
    return {
        "max-size": max_size,
        "max-file": str(max_file),
        # Carried into every log line, so the log collector can label by service and color.
        "labels": f"{SERVICE_LABEL},{COLOR_LABEL},{STACK_LABEL}",
    }


def hardened_container_args(
    *,
    image: str,
    name: str,
    service: str,
    stack_labels: Mapping[str, str],
    networks: Mapping[str, Sequence[str]],
    limits: Limits,
    read_only: bool = True,
    user: str | None = None,
    envs: Sequence[str] | None = None,
    tmpfs: Mapping[str, str] | None = None,
    volumes: Sequence[docker.ContainerVolumeArgs] | None = None,
    mounts: Sequence[docker.ContainerMountArgs] | None = None,
    uploads: Sequence[docker.ContainerUploadArgs] | None = None,
    ports: Sequence[docker.ContainerPortArgs] | None = None,
    command: Sequence[str] | None = None,
    healthcheck: docker.ContainerHealthcheckArgs | None = None,
    wait: bool = False,
    wait_timeout: int = 120,
    capability_adds: Sequence[str] | None = None,
    extra_labels: Mapping[str, str] | None = None,
    max_retries: int = 5,
    ulimits: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for `docker.Container` with the CIS-5 baseline applied.

    No privileges, every capability dropped (adds only where a service needs one),
    `no-new-privileges`, memory and CPU limits, bounded `on-failure` restarts,
    log rotation, never the default bridge (explicit user networks only).
    """
    if not networks:
        raise ValueError(f"{name}: a container needs at least one user network")
    if read_only and uploads:
        writable = [str(v.container_path).rstrip("/") for v in volumes or [] if v.container_path]
        for upload in uploads:
            target = str(upload.file)
            if not any(target.startswith(path + "/") for path in writable):
                raise ValueError(f"{name}: upload {target} needs a volume (read-only root filesystem)")
    all_labels = {**stack_labels, SERVICE_LABEL: service, **(extra_labels or {})}
    args: dict[str, Any] = dict(
        image=image,
        name=name,
        hostname=name,
        labels=labels(all_labels),
        # No network_mode: pulumi-docker then creates the container on `bridge`, detaches it and
        # attaches these networks with their aliases before it starts. With network_mode set to
        # one of them, Docker silently drops that network's aliases (found under the real engine).
        networks_advanced=network_attachments(networks),
        # pulumi-docker 5.x copies uploads as one archive extracted at "/", which Docker refuses
        # on a read-only root filesystem whatever volume the files land in (found under the real
        # engine: "container rootfs is marked read-only"). A container that receives files keeps
        # a writable root (docs/policies.md, residual risks); every other hardening stays.
        read_only=read_only and not uploads,
        privileged=False,
        # Spelt as Docker reports them back (CAP_ prefix), so a refresh finds no drift.
        capabilities=docker.ContainerCapabilitiesArgs(
            drops=["ALL"],
            adds=sorted(_cap(c) for c in capability_adds) if capability_adds else None,
        ),
        security_opts=["no-new-privileges:true"],
        memory=limits.memory_mb,
        memory_swap=limits.memory_mb,
        # As the provider reads it back ("1.0", "0.5"): any other spelling is a diff that replaces.
        cpus=f"{limits.cpus:.1f}" if float(limits.cpus).is_integer() else f"{limits.cpus:g}",
        restart="on-failure",
        max_retry_count=max_retries,
        log_driver="json-file",
        log_opts=log_options(),
        must_run=True,
        envs=list(envs) if envs else None,
        tmpfs=dict(tmpfs) if tmpfs else None,
        volumes=list(volumes) if volumes else None,
        mounts=list(mounts) if mounts else None,
        uploads=list(uploads) if uploads else None,
        ports=list(ports) if ports else None,
        command=list(command) if command else None,
        healthcheck=healthcheck,
        user=user,
        init=True,
        destroy_grace_seconds=30,
        # Anonymous volumes (where secret files land, see `secret_file`) are deleted with the
        # container (`docker rm -v`). The provider's default too, spelt out so a policy and the
        # render see it and nobody turns it off unnoticed.
        remove_volumes=True,
        # `{name: limit}`, soft = hard (a process cannot raise it); sorted so the graph is stable.
        # Docker's own default otherwise (since 25: nofile soft 1024). `nproc` counts every
        # process of the uid on the host, not only this container's (docs/policies.md).
        ulimits=[docker.ContainerUlimitArgs(name=k, soft=v, hard=v) for k, v in sorted(ulimits.items())]
        if ulimits else None,
    )
    if wait:
        if healthcheck is None:
            raise ValueError(f"{name}: wait=True needs a healthcheck")
        args.update(wait=True, wait_timeout=wait_timeout)
    return args


def secret_file(
    path: str, content: pulumi.Input[str], owner: str | None = None, mode: str = "0400"
) -> docker.ContainerUploadArgs:
    """A secret handed to a container as a file (never as an env value, label or argument).

    Files land in an anonymous volume private to the container (`scratch_volume`), owned by
    root so the service cannot change or delete them, removed with the container
    (`remove_volumes`). `mode` is `0400` for a service that reads as root; `owner` names the
    (non-root) user that must read the file: it is then `0444`, the narrowest the provider
    allows. Setting the upload's owner makes the provider ask Docker to copy with
    `copyUIDGID`, and Docker then resolves the container's `user` in the *Docker host's*
    passwd database (`getent`): `1000:1000` is refused, a bare uid works only where the host
    happens to list it (measured on Docker 20.10), so the owner is never sent.

    At rest the files are on the host's disk under the Docker root
    (`/var/lib/docker/volumes/<id>/_data`, reachable by root only) while the container
    exists; a tmpfs cannot hold them, because the provider copies them before the container
    starts (docs/policies.md, "Secrets at rest").
    """
    if mode not in ("0400", "0444"):
        raise ValueError(f"{path}: a secret file is 0400 (read by root) or 0444 (read by owner={owner!r})")
    return docker.ContainerUploadArgs(
        file=path,
        content=pulumi.Output.secret(content),
        permissions="0444" if owner else mode,
    )


def config_file(path: str, content: str) -> docker.ContainerUploadArgs:
    """A generated, non-secret config file uploaded into a container."""
    return docker.ContainerUploadArgs(file=path, content=content, permissions="0444")


def scratch_volume(path: str) -> docker.ContainerVolumeArgs:
    """An anonymous volume for uploaded files: they live and die with the container, not in a layer."""
    return docker.ContainerVolumeArgs(container_path=path)


def http_probe(url: str) -> list[str]:
    """A healthcheck that works in alpine (wget), Debian (curl), Node or Python images."""
    node = (
        "node -e \"require('http').get('" + url + "',r=>process.exit(r.statusCode===200?0:1))"
        ".on('error',()=>process.exit(1))\""
    )
    python = (
        "python3 -c \"import sys,urllib.request;"
        "sys.exit(0 if urllib.request.urlopen('" + url + "',timeout=4).status==200 else 1)\""
    )
    return [
        "CMD-SHELL",
        f"if command -v wget >/dev/null; then wget -q -O /dev/null {url}; "
        f"elif command -v curl >/dev/null; then curl -fsS -o /dev/null {url}; "
        f"elif command -v node >/dev/null; then {node}; else {python}; fi",
    ]


def _cap(name: str) -> str:
    upper = name.strip().upper()
    return upper if upper.startswith("CAP_") else f"CAP_{upper}"


def go_duration(text: str) -> str:
    """`90s`/`15m`/`1h` as Go prints a duration (`1m30s`, `15m0s`, `1h0m0s`).

    The provider reads healthcheck durations back in that form; any other spelling of the
    same value is a diff on every preview (found under the real engine).
    """
    match = re.fullmatch(r"(\d+)(s|m|h)", text.strip())
    if match is None:
        raise ValueError(f"duration {text!r}: expected a whole number of s, m or h")
    seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def healthcheck(
    test: Sequence[str], interval: str = "10s", timeout: str = "5s", retries: int = 5,
    start_period: str = "20s",
) -> docker.ContainerHealthcheckArgs:
    return docker.ContainerHealthcheckArgs(
        tests=list(test), interval=go_duration(interval), timeout=go_duration(timeout), retries=retries,
        start_period=go_duration(start_period),
    )
