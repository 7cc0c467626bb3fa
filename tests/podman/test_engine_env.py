"""The `podman` fixture's environment works through the Docker-compatible API, spoken with plain
httpx over the unix socket: what the podman backend relies on."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.podman_env import PodmanEnv

MIB = 1024 * 1024
STDOUT, STDERR = 1, 2


@pytest.fixture
def api(podman: PodmanEnv) -> Iterator[httpx.Client]:
    with podman.client() as client:
        yield client


def demux(raw: bytes) -> list[tuple[int, bytes]]:
    """Split a multiplexed log/attach stream (no TTY) into (stream, payload) frames: each frame is
    an 8-byte header [stream type, 0, 0, 0, big-endian uint32 size] and then the payload."""
    frames = []
    offset = 0
    while offset < len(raw):
        assert len(raw) - offset >= 8, f"truncated frame header at {offset}: {raw[offset:]!r}"
        stream, size = struct.unpack_from(">BxxxI", raw, offset)
        offset += 8
        assert stream in (0, STDOUT, STDERR), f"bad stream type {stream} at {offset - 8}"
        assert len(raw) - offset >= size, f"truncated frame at {offset}"
        frames.append((stream, raw[offset : offset + size]))
        offset += size
    return frames


def test_ping(podman: PodmanEnv, api: httpx.Client) -> None:
    response = api.get(f"{podman.api}/_ping")
    assert response.status_code == 200
    assert response.text == "OK"
    assert podman.docker_host == f"unix://{podman.socket}"


def test_version_is_podman_with_docker_api(podman: PodmanEnv, api: httpx.Client) -> None:
    response = api.get(f"{podman.api}/version")
    assert response.status_code == 200
    version = response.json()
    assert version["ApiVersion"]
    assert version["Os"] == "linux"
    names = [c.get("Name", "") for c in version.get("Components", [])]
    assert any("podman" in name.lower() for name in names), names


def test_test_image_is_present(podman: PodmanEnv, api: httpx.Client) -> None:
    response = api.get(f"{podman.api}/images/{podman.image}/json")
    assert response.status_code == 200, response.text
    assert podman.image in response.json()["RepoTags"]


def test_container_with_limits_runs_exits_and_logs(podman: PodmanEnv, api: httpx.Client) -> None:
    name = f"botsched-env-{uuid.uuid4().hex[:12]}"
    body = {
        "Image": podman.image,
        "Cmd": ["sh", "-c", "echo hi; echo oops >&2; exit 3"],
        "Labels": {"botsched.test": "engine-env"},
        "HostConfig": {"Memory": 64 * MIB, "NanoCpus": 500_000_000},
    }
    created = api.post(f"{podman.api}/containers/create", params={"name": name}, json=body)
    assert created.status_code == 201, created.text
    cid = created.json()["Id"]
    try:
        inspected = api.get(f"{podman.api}/containers/{cid}/json")
        assert inspected.status_code == 200, inspected.text
        host_config = inspected.json()["HostConfig"]
        assert host_config["Memory"] == 64 * MIB
        assert host_config["NanoCpus"] == 500_000_000

        started = api.post(f"{podman.api}/containers/{cid}/start")
        assert started.status_code == 204, started.text

        waited = api.post(f"{podman.api}/containers/{cid}/wait", timeout=60)
        assert waited.status_code == 200, waited.text
        assert waited.json()["StatusCode"] == 3

        logs = api.get(f"{podman.api}/containers/{cid}/logs", params={"stdout": "1", "stderr": "1"})
        assert logs.status_code == 200, logs.text
        frames = demux(logs.content)
        stdout = b"".join(data for stream, data in frames if stream == STDOUT)
        stderr = b"".join(data for stream, data in frames if stream == STDERR)
        assert b"hi" in stdout
        assert b"oops" in stderr
    finally:
        deleted = api.delete(f"{podman.api}/containers/{cid}", params={"force": "1"})
    assert deleted.status_code == 204, deleted.text
    assert api.get(f"{podman.api}/containers/{cid}/json").status_code == 404
