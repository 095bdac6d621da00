"""Files for a read-only container through a never-started carrier (issue 21, item 7): real Docker facts.

pulumi-docker 5.x copies a container's uploads as one tar archive extracted at `/` (paths relative
to `/`), after it created the container and before it would start it. Replayed here with the Docker
SDK exactly that way, on the real engine:

- on a created, never-started container with a writable root, the archive extracted at `/` lands in
  the named volume mounted below it (Docker mounts the volumes for an archive operation on a stopped
  container): the carrier;
- on a created container with a read-only root, the same copy is refused, even into the volume (why
  the carrier keeps a writable root: it never runs a process, so nothing ever writes it);
- a consumer with a read-only root that mounts the same named volume read-only reads the files (0444
  as a non-root user, 0400 as root), cannot change them, and a non-root reader cannot read a 0400 one;
- the volume cannot be removed while the carrier (or a consumer) still references it.
"""

from __future__ import annotations

import io
import tarfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import require_docker

pytestmark = pytest.mark.docker

TEST_LABEL = "paper-trading.test"
IMAGE = "paper-trading-base:test"
TARGET = "/run/secrets"


def provider_archive(files: dict[str, tuple[str, int]]) -> bytes:
    """The provider's upload archive: each file by its path relative to `/`, its mode, no owner."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, (content, mode) in files.items():
            data = content.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def env() -> Iterator[tuple[Any, str, str]]:
    require_docker()
    import docker

    client = docker.from_env()
    tag = f"carrier-{uuid.uuid4().hex[:8]}"
    labels = {TEST_LABEL: tag}
    network = client.networks.create(f"{tag}-net", driver="bridge", internal=True, labels=labels)
    volume = client.volumes.create(f"{tag}-files", labels=labels)
    try:
        yield client, tag, volume.name
    finally:
        for container in client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={tag}"}):
            container.remove(force=True, v=True)
        volume.remove(force=True)
        network.remove()


def _create(client: Any, tag: str, name: str, volume: str, *, read_only: bool, mode: str, **kw: Any) -> Any:
    return client.containers.create(
        IMAGE, command=kw.pop("command", ["sleep", "1"]), name=f"{tag}-{name}", labels={TEST_LABEL: tag},
        read_only=read_only, network=f"{tag}-net", cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
        volumes={volume: {"bind": TARGET, "mode": mode}}, **kw,
    )


FILES = {f"{TARGET}/db_password": ("s3cret-db\n", 0o444), f"{TARGET}/root_only": ("root-only\n", 0o400)}


def test_a_never_started_carrier_receives_uploads_into_its_named_volume(env: tuple[Any, str, str]) -> None:
    client, tag, volume = env
    carrier = _create(client, tag, "carrier", volume, read_only=False, mode="rw")
    assert carrier.put_archive("/", provider_archive(FILES)) is True
    carrier.reload()
    assert carrier.attrs["State"]["Status"] == "created", "the carrier never runs"

    reader = _create(client, tag, "reader", volume, read_only=True, mode="ro", user="1000:1000",
                     command=["sh", "-c", f"cat {TARGET}/db_password; stat -c '%a %u' {TARGET}/db_password "
                                          f"{TARGET}/root_only; cat {TARGET}/root_only 2>&1; "
                                          f"echo x > {TARGET}/db_password 2>&1; echo x > /etc/x 2>&1; true"])
    reader.start()
    assert reader.wait(timeout=60)["StatusCode"] == 0
    out = reader.logs().decode()
    assert "s3cret-db" in out
    assert "444 0" in out and "400 0" in out, out  # root-owned, the rendered modes
    assert "root-only" not in out, "a non-root reader must not read a 0400 file"
    assert out.count("Read-only file system") == 2, out  # neither the volume nor the root is writable

    root = _create(client, tag, "root-reader", volume, read_only=True, mode="ro",
                   command=["cat", f"{TARGET}/root_only"])
    root.start()
    assert root.wait(timeout=60)["StatusCode"] == 0
    assert root.logs().decode() == "root-only\n"


def test_the_provider_copy_is_refused_on_a_read_only_root_even_into_a_volume(
    env: tuple[Any, str, str],
) -> None:
    import docker

    client, tag, volume = env
    consumer = _create(client, tag, "ro", volume, read_only=True, mode="rw")
    with pytest.raises(docker.errors.APIError, match="read-only"):
        consumer.put_archive("/", provider_archive(FILES))


def test_a_volume_in_use_by_a_carrier_cannot_be_removed(env: tuple[Any, str, str]) -> None:
    import docker

    client, tag, volume = env
    carrier = _create(client, tag, "carrier", volume, read_only=False, mode="rw")
    carrier.put_archive("/", provider_archive(FILES))
    with pytest.raises(docker.errors.APIError, match="in use"):
        client.volumes.get(volume).remove()
    carrier.remove(v=True)  # `remove_volumes` removes anonymous volumes only: the named one stays
    assert client.volumes.get(volume).name == volume
