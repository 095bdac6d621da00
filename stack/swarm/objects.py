"""What every Swarm service of the stack shares: versioned object names, hardening, rollout.

Swarm secrets and configs are immutable and cannot be removed while a service uses them, so a
new content is a new object under a new name; the service then moves to it in one rolling
update and the old object is deleted after. A config's name carries a hash of its content; a
secret's an HMAC under a per-stack random key (a bare hash of a short secret would let anyone
who can list secrets test guesses against it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

import pulumi
import pulumi_docker as docker

from contract import STACK_LABEL
from settings import Limits
from stack.common import go_duration

#: How long `up` waits for a service's rollout to converge before it fails.
CONVERGE_TIMEOUT = "3m"


def versioned(prefix: str, content: str) -> str:
    """A config's name: `prefix` and the first 12 hex digits of its content's sha256."""
    return f"{prefix}-{hashlib.sha256(content.encode()).hexdigest()[:12]}"


def keyed(prefix: str, key: str, secret: str) -> str:
    """A secret's name: `prefix` and an HMAC of its value under the stack's name key."""
    return f"{prefix}-{hmac.new(key.encode(), secret.encode(), hashlib.sha256).hexdigest()[:12]}"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret_b64(value: pulumi.Input[str]) -> pulumi.Output[str]:
    """A secret's data as Swarm takes it (base64), kept secret in the state."""
    def encode(plain: str) -> pulumi.Output[str]:
        return pulumi.Output.secret(b64(plain))
    return pulumi.Output.from_input(value).apply(encode)


def keyed_name(prefix: str, key_and_value: list[str]) -> str:
    """`keyed` for `Output.all(key, value).apply`: the name of a secret whose value is an output."""
    key, plain = key_and_value
    return keyed(prefix, key, plain)


def labels(values: Mapping[str, str]) -> list[docker.ServiceLabelArgs]:
    return [docker.ServiceLabelArgs(label=k, value=v) for k, v in sorted(values.items())]


def container_labels(values: Mapping[str, str]) -> list[docker.ServiceTaskSpecContainerSpecLabelArgs]:
    return [docker.ServiceTaskSpecContainerSpecLabelArgs(label=k, value=v) for k, v in sorted(values.items())]


def service_labels(stack: str) -> list[docker.ServiceLabelArgs]:
    """The service object's own labels: only the stack (role and color are on the tasks' containers)."""
    return labels({STACK_LABEL: stack})


def tmpfs(target: str, size_mb: int, mode: int = 0o777) -> docker.ServiceTaskSpecContainerSpecMountArgs:
    """A tmpfs mount of the task's own; Swarm can set neither its owner nor the sticky bit (it reads
    back 0777), so a non-root user needs it open."""
    return docker.ServiceTaskSpecContainerSpecMountArgs(
        type="tmpfs", target=target, read_only=False,
        tmpfs_options=docker.ServiceTaskSpecContainerSpecMountTmpfsOptionsArgs(
            size_bytes=size_mb * 1024 * 1024, mode=mode),
    )


def resources(limits: Limits) -> docker.ServiceTaskSpecResourcesArgs:
    return docker.ServiceTaskSpecResourcesArgs(limits=docker.ServiceTaskSpecResourcesLimitsArgs(
        memory_bytes=limits.memory_mb * 1024 * 1024, nano_cpus=int(limits.cpus * 1e9)))


def health(test: list[str], start_period: str = "10s") -> docker.ServiceTaskSpecContainerSpecHealthcheckArgs:
    return docker.ServiceTaskSpecContainerSpecHealthcheckArgs(
        tests=test, interval=go_duration("2s"), timeout=go_duration("5s"), retries=3,
        start_period=go_duration(start_period))


#: Bounded restarts of a failing task (CIS 5.14's spirit: no endless restart loop).
RESTART = docker.ServiceTaskSpecRestartPolicyArgs(condition="on-failure", max_attempts=5, delay="5s",
                                                   window="1m")  # as the provider reads it back
#: The provider reads an unset map back as an unknown change on every preview: the services set
#: these maps explicitly (found under the real engine).
TIMEZONE_ENV = {"TZ": "UTC"}
#: Reuse TIME_WAIT ports for new outgoing connections (per network namespace: this task only).
APP_SYSCTLS = {"net.ipv4.tcp_tw_reuse": "1"}


def rollout(order: str, parallelism: int = 1) -> tuple[docker.ServiceUpdateConfigArgs,
                                                       docker.ServiceRollbackConfigArgs]:
    """`parallelism` tasks at a time (0: all), watched for 5 s; a failed update rolls back (Swarm's own)."""
    update = docker.ServiceUpdateConfigArgs(order=order, failure_action="rollback", parallelism=parallelism,
                                            monitor="5s", delay="1s", max_failure_ratio="0")
    rollback = docker.ServiceRollbackConfigArgs(order=order, parallelism=parallelism, monitor="5s")
    return update, rollback


def converge() -> docker.ServiceConvergeConfigArgs:
    """`up` waits until every task of the service runs the new spec (or fails with Swarm's reason)."""
    return docker.ServiceConvergeConfigArgs(delay="1s", timeout=CONVERGE_TIMEOUT)


def config_object(name: str, prefix: str, content: str, parent: pulumi.Resource) -> docker.ServiceConfig:
    """A Swarm config holding `content` under its versioned name."""
    return docker.ServiceConfig(
        name, name=versioned(prefix, content), data=b64(content),
        opts=pulumi.ResourceOptions(parent=parent, delete_before_replace=False),
    )
