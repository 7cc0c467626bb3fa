"""Servers under test: one uvicorn process each, started the same way for the floor and ours."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.processes import terminate

ROOT = Path(__file__).resolve().parent.parent
FLOOR_APP = "bench.echo_app:app"
OUR_APP = "handlers.local:build_app"  # the factory `botsched serve` serves


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for {self.name}")

    def stop(self) -> None:
        terminate(self.process)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start(name: str, app: str, env: dict[str, str] | None = None) -> Server:
    """`python -m uvicorn APP` on a free loopback port, without access log; waits until it
    accepts connections."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log"]
    if app == OUR_APP:
        command.append("--factory")
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL
    )
    server = Server(name, port, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{name} did not start")


def scheduler_env(store: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Ours, as `make run` has it but for the store: the process backend, loopback."""
    return {"SCHEDULER_STORE": store, "SCHEDULER_DATA_DIR": str(data_dir), **extra}
