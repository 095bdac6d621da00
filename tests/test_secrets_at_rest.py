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


STACKS = ("prod", "ci")


@pytest.mark.parametrize("stack", STACKS)
def test_secret_files_live_in_anonymous_volumes_removed_with_the_container(stack: str) -> None:
    holders = with_secrets(stack)
    assert len(holders) >= 5, [r.name for r in holders]
    for res in holders:
        assert res.inputs.get("removeVolumes") is True, f"{res.name}: anonymous volumes must go with it"
        volumes = anonymous_volumes(res)
        for upload in secret_uploads(res):
            target = str(upload["file"])
            assert any(target.startswith(v + "/") for v in volumes), (
                f"{res.name}: {target} is not in an anonymous volume (named volume, bind or image layer)")


@pytest.mark.parametrize("stack", STACKS)
def test_secret_files_have_the_narrowest_mode(stack: str) -> None:
    for res in with_secrets(stack):
        for upload in secret_uploads(res):
            assert upload.get("permissions") in ("0400", "0444"), (res.name, upload["file"])
            assert not upload.get("executable") and not upload.get("owner") and not upload.get("group")


def test_a_secret_file_is_never_group_or_world_writable() -> None:
    from components.common import secret_file

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


@pytest.mark.parametrize("name", ["blue-1", "backup", "postgres-exporter"])
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
