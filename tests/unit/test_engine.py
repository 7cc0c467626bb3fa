"""The Docker Engine API pieces that need no engine: state mapping, log framing, endpoints,
resource quantities. Shapes follow the Engine API v1.41 spec (ContainerState, logs framing)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from core.backends.engine import candidates, demux, parse_docker_host
from core.backends.podman import _execution
from core.config import Settings
from core.errors import BackendError
from core.resources import cpu_nanos, memory_bytes


def frame(stream: int, text: str) -> bytes:
    data = text.encode()
    return bytes([stream, 0, 0, 0]) + struct.pack(">I", len(data)) + data


def test_demux_joins_stdout_and_stderr_frames_in_order() -> None:
    raw = frame(1, "out 1\n") + frame(2, "err 1\n") + frame(1, "out 2\n")
    assert demux(raw) == "out 1\nerr 1\nout 2\n"


def test_demux_passes_a_tty_stream_through() -> None:
    assert demux(b"plain text\n") == "plain text\n"


@pytest.mark.parametrize(
    ("state", "phase", "code", "reason"),
    [
        ({"Status": "created"}, "pending", None, None),
        (
            {"Status": "running", "StartedAt": "2026-01-01T00:00:00.123456789Z"},
            "running",
            None,
            None,
        ),
        ({"Status": "exited", "ExitCode": 0}, "succeeded", 0, None),
        ({"Status": "exited", "ExitCode": 3}, "failed", 3, "exit code 3"),
        (
            {"Status": "exited", "ExitCode": 137, "OOMKilled": True},
            "failed",
            137,
            "out of memory (OOM-killed)",
        ),
        ({"Status": "exited", "ExitCode": 137}, "failed", 137, "exit code 137 (killed by SIGKILL)"),
        ({"Status": "dead", "ExitCode": 0}, "failed", 0, "exit code 0"),
    ],
)
def test_container_states_map_to_phases(
    state: dict[str, object], phase: str, code: int | None, reason: str | None
) -> None:
    execution = _execution(state)
    assert (execution.phase, execution.exitCode, execution.reason) == (phase, code, reason)


def test_the_engines_zero_time_is_no_time() -> None:
    state = {
        "Status": "exited",
        "ExitCode": 0,
        "StartedAt": "2026-01-01T00:00:00Z",
        "FinishedAt": "0001-01-01T00:00:00Z",
    }
    execution = _execution(state)
    assert execution.startedAt is not None and execution.finishedAt is None


def test_docker_host_forms() -> None:
    assert parse_docker_host("unix:///run/x.sock", "docker").socket == Path("/run/x.sock")
    tcp = parse_docker_host("tcp://10.0.0.5:2376", "docker")
    assert (tcp.host, tcp.port) == ("10.0.0.5", 2376)
    with pytest.raises(BackendError, match="DOCKER_HOST"):
        parse_docker_host("ssh://host", "docker")


def test_candidates_follow_engine_choice_and_auto_detection() -> None:
    env = {"XDG_RUNTIME_DIR": "/run/user/7"}
    only = Settings.from_env({"CONTAINER_ENGINE": "docker", "AUTO_DETECT_ENGINE": "false"})
    assert {c.engine for c in candidates(only, env)} == {"docker"}
    both = Settings.from_env({"PLATFORM": "podman"})
    found = candidates(both, env)
    assert found[0].socket == Path("/run/user/7/podman/podman.sock")
    assert {c.engine for c in found} == {"podman", "docker"}
    pinned = Settings.from_env({"DOCKER_HOST": "unix:///tmp/e.sock"})
    assert [c.socket for c in candidates(pinned, env)] == [Path("/tmp/e.sock")]


@pytest.mark.parametrize(
    ("text", "nanos"), [("1", 10**9), ("0.5", 5 * 10**8), ("250m", 25 * 10**7)]
)
def test_cpu_quantities(text: str, nanos: int) -> None:
    assert cpu_nanos(text) == nanos


@pytest.mark.parametrize(
    ("text", "size"), [("2Gi", 2 * 2**30), ("512Mi", 512 * 2**20), ("1G", 10**9), ("4096", 4096)]
)
def test_memory_quantities(text: str, size: int) -> None:
    assert memory_bytes(text) == size


@pytest.mark.parametrize("bad", ["", "lots", "-1", "0", "1.5x"])
def test_bad_quantities_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        cpu_nanos(bad)
    with pytest.raises(ValueError):
        memory_bytes(bad)
