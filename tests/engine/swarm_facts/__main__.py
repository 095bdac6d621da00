"""The Swarm resources the Swarm target builds on, under the real engine (tests/engine/test_swarm_facts.py).

An overlay network, a secret and a config with content-hashed names (both are immutable and
cannot be deleted while a service uses them: a new value is a new object), and a replicated
dnsrr service that mounts them, attaches the network by id, runs read-only, spreads over the
nodes, updates start-first with rollback, and makes `up` wait for the rollout.
"""

import base64
import hashlib
import hmac

import pulumi
import pulumi_docker as docker
import pulumi_random as random

config = pulumi.Config()
image = config.require("image")
replicas = config.require_int("replicas")
secret_value = config.require_secret("secret")
settings_text = config.require("settings")


def versioned(prefix: str, content: str) -> str:
    return f"{prefix}-{hashlib.sha256(content.encode()).hexdigest()[:12]}"


def keyed(prefix: str, key: str, secret: str) -> str:
    """A secret's versioned name: keyed (a bare hash of a short secret would let anyone who can
    list secrets test guesses against it), so the name can be shown while the value cannot."""
    return f"{prefix}-{hmac.new(key.encode(), secret.encode(), hashlib.sha256).hexdigest()[:12]}"


def b64(content: str) -> str:
    return base64.b64encode(content.encode()).decode()


network = docker.Network("net", name="facts-net", driver="overlay", attachable=True)
name_key = random.RandomId("secret-name-key", byte_length=16)
secret_name = pulumi.Output.unsecret(pulumi.Output.all(name_key.hex, secret_value).apply(
    lambda args: keyed("facts-secret", args[0], args[1])))
secret = docker.Secret(
    "secret", name=secret_name,
    data=secret_value.apply(b64),
)
settings_config = docker.ServiceConfig(
    "settings", name=versioned("facts-settings", settings_text), data=b64(settings_text),
)
service = docker.Service(
    "app",
    name="facts-app",
    task_spec=docker.ServiceTaskSpecArgs(
        container_spec=docker.ServiceTaskSpecContainerSpecArgs(
            image=image,
            read_only=True,
            secrets=[docker.ServiceTaskSpecContainerSpecSecretArgs(
                secret_id=secret.id, secret_name=secret.name, file_name="/run/secrets/facts",
                file_mode=0o400)],
            configs=[docker.ServiceTaskSpecContainerSpecConfigArgs(
                config_id=settings_config.id, config_name=settings_config.name, file_name="/etc/facts.json")],
        ),
        networks_advanceds=[docker.ServiceTaskSpecNetworksAdvancedArgs(id=network.id, aliases=["app"])],
        placement=docker.ServiceTaskSpecPlacementArgs(prefs=["spread=node.id"]),
    ),
    mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=replicas)),
    endpoint_spec=docker.ServiceEndpointSpecArgs(mode="dnsrr"),
    update_config=docker.ServiceUpdateConfigArgs(order="start-first", failure_action="rollback",
                                                 parallelism=1, monitor="5s"),
    rollback_config=docker.ServiceRollbackConfigArgs(order="start-first", parallelism=1),
    converge_config=docker.ServiceConvergeConfigArgs(delay="1s", timeout="120s"),
)
pulumi.export("secretName", secret.name)
pulumi.export("configName", settings_config.name)
pulumi.export("serviceId", service.id)
