"""Secrets at rest (issue 13, item 5): where the secret files the program uploads live, and for how long.

pulumi-docker copies uploads as one tar archive extracted at `/` after creating the container and
before starting it; the program points every secret file into an anonymous volume. The render checks
say what the program asks for; the Docker checks replay exactly what the provider does with the
rendered inputs on the real Docker Engine (create, copy the archive at `/` with the rendered mode and
no owner, start, then delete with the rendered `removeVolumes`) and look at the result from inside
the container and on the host.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import rendered, require_docker
from tools.render import SECRET_SIG, SECRET_VALUE, Resource

TEST_LABEL = "paper-trading.test"


def _secret(wire: Any) -> bool:
    def marked(value: Any) -> bool:
        return isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_VALUE
    return marked(wire) or (isinstance(wire, dict) and marked(wire.get("content")))


def secret_uploads(res: Resource) -> list[dict[str, Any]]:
    pairs = zip(res.inputs.get("uploads") or [], res.wire.get("uploads") or [], strict=True)
    return [upload for upload, wire in pairs if _secret(wire)]


def anonymous_volumes(res: Resource) -> list[str]:
    return [
        str(v["containerPath"]).rstrip("/") for v in res.inputs.get("volumes") or []
        if v.get("containerPath") and not v.get("volumeName") and not v.get("hostPath")
    ]


def with_secrets(stack: str) -> list[Resource]:
    return [res for res in rendered(stack).containers if secret_uploads(res)]


CARRIER_LABEL = "paper-trading.carrier-for"


def is_carrier(res: Resource) -> bool:
    return CARRIER_LABEL in res.label_map


STACKS = ("prod", "ci")


@pytest.mark.parametrize("stack", STACKS)
def test_secret_files_live_in_anonymous_volumes_removed_with_the_container(stack: str) -> None:
    holders = [r for r in with_secrets(stack) if not is_carrier(r)]
    assert len(holders) >= 5, [r.name for r in holders]
    for res in holders:
        assert res.inputs.get("removeVolumes") is True, f"{res.name}: anonymous volumes must go with it"
        volumes = anonymous_volumes(res)
        for upload in secret_uploads(res):
            target = str(upload["file"])
            assert any(target.startswith(v + "/") for v in volumes), (
                f"{res.name}: {target} is not in an anonymous volume (named volume, bind or image layer)")


@pytest.mark.parametrize("stack", STACKS)
def test_carrier_secret_files_live_in_a_named_volume_only_their_consumer_mounts_read_only(stack: str) -> None:
    """The apps' secrets (issue 21, item 7): in a never-started carrier's named volume, not in the app."""
    graph = rendered(stack)
    carriers = [r for r in with_secrets(stack) if is_carrier(r)]
    apps = [r for r in graph.containers
            if r.label_map.get("paper-trading.role") == "app" and not is_carrier(r)]
    assert apps and len(carriers) == len(apps), [r.name for r in carriers]
    for res in carriers:
        assert res.inputs["start"] is False and res.inputs["mustRun"] is False, res.name
        (volume,) = res.inputs["volumes"]
        name = str(volume["volumeName"])
        for upload in secret_uploads(res):
            assert str(upload["file"]).startswith(volume["containerPath"] + "/"), (res.name, upload["file"])
        mounting = [(c.inputs["name"], v.get("readOnly")) for c in graph.containers
                    for v in c.inputs.get("volumes") or [] if v.get("volumeName") == name and c is not res]
        assert mounting == [(res.label_map[CARRIER_LABEL], True)], (res.name, mounting)
        assert not any(app.inputs.get("uploads") for app in apps)


@pytest.mark.parametrize("stack", STACKS)
def test_secret_files_have_the_narrowest_mode(stack: str) -> None:
    for res in with_secrets(stack):
        for upload in secret_uploads(res):
            assert upload.get("permissions") in ("0400", "0444"), (res.name, upload["file"])
            assert not upload.get("executable") and not upload.get("owner") and not upload.get("group")


def test_a_secret_file_is_never_group_or_world_writable() -> None:
    from stack.common import secret_file

    assert secret_file("/run/secrets/x", "v").permissions == "0400"
    assert secret_file("/run/secrets/x", "v", owner="1000").permissions == "0444"
    for mode in ("0644", "0666", "0440", "0555"):
        with pytest.raises(ValueError, match="0400"):
            secret_file("/run/secrets/x", "v", mode=mode)


def _secret_values(stack: str) -> set[str]:
    """Every secret value of the render: generated passwords and the config's stand-ins."""
    graph = rendered(stack)
    values = {f"mock-{r.name}-{int(r.inputs.get('length', 32))}" for r in graph.of_type(
        "random:index/randomPassword:RandomPassword")}
    for res in graph.containers:
        for upload in secret_uploads(res):
            words = str(upload.get("content", "")).split()
            values.update(word for word in words if word.startswith("secret:"))
    return values


@pytest.mark.parametrize("stack", STACKS)
def test_nothing_secret_in_envs_labels_or_command(stack: str) -> None:
    values = _secret_values(stack)
    assert len(values) >= 3
    for res in rendered(stack).containers:
        shown = {k: v for k, v in res.inputs.items() if k != "uploads"}
        text = json.dumps(shown)
        leaked = sorted(v for v in values if v in text)
        where = sorted(k for k in shown if any(v in json.dumps(shown[k]) for v in leaked))
        assert not leaked, f"{res.name}: secret value in {where}"


# --------------------------------------------------------------------------- real Docker


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    require_docker()
    import docker

    api = docker.from_env()
    yield api
    for container in api.containers.list(all=True, filters={"label": f"{TEST_LABEL}=secrets-at-rest"}):
        container.remove(force=True, v=True)


def _archive(upload: dict[str, Any], content: bytes) -> bytes:
    """The provider's archive for one upload: the path, the mode, no owner (uid/gid 0)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(str(upload["file"]))
        info.size, info.mode = len(content), int(str(upload["permissions"]), 8)
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _replay(client: Any, res: Resource) -> tuple[Any, dict[str, bytes]]:
    """Create, upload and start `res` as pulumi-docker does; a fake value per secret file."""
    image = str(res.inputs["image"])
    try:
        client.images.get(image)
    except Exception:  # noqa: BLE001 - the image is built by scripts/build-test-images --ci
        from tests.support import missing

        missing(f"image {image} (run scripts/build-test-images --ci)")
    user = res.inputs.get("user") or ""
    container = client.api.create_container(
        image, entrypoint=["sleep", "600"], user=user, volumes=anonymous_volumes(res),
        labels={TEST_LABEL: "secrets-at-rest"}, name=f"secrets-at-rest-{uuid.uuid4().hex[:8]}",
        host_config=client.api.create_host_config(
            read_only=bool(res.inputs.get("readOnly")), cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
        ),
    )
    handle = client.containers.get(container["Id"])
    files: dict[str, bytes] = {}
    for upload in secret_uploads(res):
        content = f"fake-{uuid.uuid4().hex}".encode()
        files[str(upload["file"])] = content
        # The provider's CopyToContainer: path "/", copyUIDGID only when an owner is set (never here).
        assert client.api.put_archive(container["Id"], "/", _archive(upload, content))
    handle.start()
    return handle, files


def _sh(handle: Any, script: str, user: str) -> tuple[int, str]:
    code, out = handle.exec_run(["sh", "-c", script], user=user)
    return code, out.decode()


@pytest.mark.parametrize("name", ["backup", "postgres-exporter"])
def test_on_docker_secret_files_are_read_only_root_owned_and_removed_with_the_container(
    client: Any, name: str,
) -> None:
    res = next(r for r in rendered("ci").containers if r.name == name)
    handle, files = _replay(client, res)
    user = str(res.inputs.get("user") or "0")
    try:
        for path, content in files.items():
            code, out = _sh(handle, f"stat -c '%a %u %g' {path}", user)
            mode, uid, gid = out.split()
            expected = next(u["permissions"] for u in secret_uploads(res) if u["file"] == path)
            assert (code, mode, uid, gid) == (0, expected.lstrip("0"), "0", "0")
            code, out = _sh(handle, f"cat {path}", user)
            assert (code, out) == (0, content.decode()), "the service's user reads its secret"
            if user not in ("0", "root"):
                assert _sh(handle, f"echo x > {path}", user)[0] != 0, "the service cannot change it"
                assert _sh(handle, f"rm -f {path}", user)[0] != 0, "the service cannot delete it"
            else:
                assert _sh(handle, f"cat {path}", "65534")[0] != 0, "0400: no other uid reads it"
        mounts = {m["Destination"]: m for m in client.api.inspect_container(handle.id)["Mounts"]}
        root = client.info()["DockerRootDir"]
        sources = []
        for path in files:
            mount = mounts[os.path.dirname(path)]
            assert mount["Type"] == "volume" and mount["Source"].startswith(f"{root}/volumes/")
            sources.append((mount["Name"], mount["Source"]))
            # On the host: the file is on disk below a Docker root no other user may enter.
            if os.path.isdir(root):
                assert os.path.isfile(os.path.join(mount["Source"], os.path.basename(path)))
                assert stat.S_IMODE(os.stat(root).st_mode) & 0o007 == 0, f"{root} is open to other users"
    finally:
        # The provider's Delete: stop (here without the grace period: `sleep` ignores SIGTERM),
        # then remove with the rendered removeVolumes.
        handle.stop(timeout=1)
        client.api.remove_container(handle.id, force=True, v=bool(res.inputs.get("removeVolumes")))
    left = {v.name for v in client.volumes.list()}
    for volume, source in sources:
        assert volume not in left, f"{name}: anonymous volume {volume} outlived the container"
        assert not os.path.exists(source)


def test_on_docker_an_apps_secret_files_come_from_its_carrier_read_only_root_owned(client: Any) -> None:
    """The app's files as the provider delivers them (issue 21, item 7): its never-started carrier is
    created with the rendered named volume and gets the archive at `/`; the app, read-only root and
    the volume mounted read-only, reads them as its user and can change nothing; the volume outlives
    both containers until the engine deletes it (its Volume resource), and then its folder is gone."""
    graph = rendered("ci")
    consumer = next(r for r in graph.containers if r.name == "blue-1")
    carrier = next(r for r in graph.containers if r.label_map.get(CARRIER_LABEL) == consumer.inputs["name"])
    image = str(consumer.inputs["image"])
    try:
        client.images.get(image)
    except Exception:  # noqa: BLE001 - the image is built by scripts/build-test-images --ci
        from tests.support import missing

        missing(f"image {image} (run scripts/build-test-images --ci)")
    (volume,) = carrier.inputs["volumes"]
    (mount,) = [v for v in consumer.inputs["volumes"] if v.get("volumeName") == volume["volumeName"]]
    name = f"secrets-at-rest-{uuid.uuid4().hex[:8]}"
    client.volumes.create(name, labels={TEST_LABEL: "secrets-at-rest"})
    made = client.api.create_container(
        image, user=carrier.inputs.get("user") or "", labels={TEST_LABEL: "secrets-at-rest"},
        name=f"{name}-files", host_config=client.api.create_host_config(
            read_only=bool(carrier.inputs.get("readOnly")), cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"], binds=[f"{name}:{volume['containerPath']}:rw"],
            network_mode="none",
        ),
    )
    files: dict[str, bytes] = {}
    for upload in secret_uploads(carrier):
        content = f"fake-{uuid.uuid4().hex}".encode()
        files[str(upload["file"])] = content
        assert client.api.put_archive(made["Id"], "/", _archive(upload, content))
    assert client.api.inspect_container(made["Id"])["State"]["Status"] == "created"
    user = str(consumer.inputs.get("user") or "0")
    app = client.api.create_container(
        image, entrypoint=["sleep", "600"], user=user, labels={TEST_LABEL: "secrets-at-rest"},
        name=f"{name}-app", host_config=client.api.create_host_config(
            read_only=consumer.inputs["readOnly"], cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
            binds=[f"{name}:{mount['containerPath']}:{'ro' if mount['readOnly'] else 'rw'}"],
            network_mode="none",
        ),
    )
    handle = client.containers.get(app["Id"])
    handle.start()
    root = client.info()["DockerRootDir"]
    source = client.volumes.get(name).attrs["Mountpoint"]
    try:
        assert files and consumer.inputs["readOnly"] is True
        for path, content in files.items():
            expected = next(u["permissions"] for u in secret_uploads(carrier) if u["file"] == path)
            assert _sh(handle, f"stat -c '%a %u %g' {path}", user) == (0, f"{expected.lstrip('0')} 0 0\n")
            assert _sh(handle, f"cat {path}", user) == (0, content.decode())
            assert _sh(handle, f"echo x > {path}", user)[0] != 0, "the app cannot change it"
            assert _sh(handle, f"rm -f {path}", user)[0] != 0, "the app cannot delete it"
            assert _sh(handle, f"cat {path}", "0")[1] == content.decode()
            if os.path.isdir(root):
                assert os.path.isfile(os.path.join(source, os.path.basename(path)))
        assert _sh(handle, "echo x > /etc/written", "0")[0] != 0, "read-only root, even for root"
    finally:
        handle.stop(timeout=1)
        client.api.remove_container(app["Id"], force=True, v=True)
        client.api.remove_container(made["Id"], force=True, v=bool(carrier.inputs.get("removeVolumes")))
    assert name in {v.name for v in client.volumes.list()}, "a named volume outlives its containers"
    client.volumes.get(name).remove()  # the engine's delete of the Volume resource
    assert not os.path.exists(source)
