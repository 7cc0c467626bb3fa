"""Helper processes the tests or benchmarks start (an emulator, a server): a port for one, an
environment that does not configure it by accident, and stopping it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def terminate(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL when it is still up `grace` seconds later; reaped either way."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(timeout=grace)


def free_port() -> int:
    """A loopback port free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    """This process's environment without anything that would configure the scheduler, with
    the repository importable."""
    prefixes = ("SCHEDULER_", "BOTSCHED_", "BOT_", "DEMO_BOT_")
    names = ("PORT", "HOST", "PLATFORM", "MAX_JOBS", "CONTAINER_IMAGE", "RECORDINGS_PATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k not in names}
    return {**env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def wait_healthy(
    process: subprocess.Popen[bytes], healthy: Callable[[], bool], timeout: float
) -> str | None:
    """Poll `healthy()` (which may raise OSError-like errors while the server starts) until it
    says yes: None; else why not (the process exited, or the time ran out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"exited with {process.returncode}"
        try:
            if healthy():
                return None
        except Exception:  # not listening yet
            pass
        time.sleep(0.05)
    return f"did not become healthy in {timeout}s"


def server_env(data_dir: Path, port: int, bot_command: str) -> dict[str, str]:
    """A local server's environment for the end-to-end tests: loopback on `port`, its data in
    `data_dir`, fast drains, `bot_command` for its bots."""
    return {
        **clean_env(),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "SCHEDULER_DATA_DIR": str(data_dir),
        "SCHEDULER_POLLING_INTERVAL": "200",
        "BOT_COMMAND": bot_command,
        "BOT_STOP_GRACE_SECONDS": "5",
    }


class ServeProcess:
    """`botsched serve` (or `argv`) in a subprocess on `data_dir`, its output in server.log:
    started until healthy, closed with its bots (the process backend's runs under
    data_dir/runs). Tests subclass it with their own submits and reads."""

    def __init__(self, data_dir: Path, env: dict[str, str], port: int, argv: list[str]) -> None:
        import httpx  # the tests' HTTP client; not every user of this module needs it

        self.data_dir, self.env, self.port, self.argv = data_dir, env, port, argv
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = data_dir / "server.log"
        self.http = httpx.Client(base_url=self.url, timeout=10)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> ServeProcess:
        import pytest

        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        failed = wait_healthy(self.proc, self.healthy, timeout)
        if failed:
            pytest.fail(f"server {failed}:\n{self.log()[-5000:]}")
        return self

    def healthy(self) -> bool:
        return self.http.get("/health").status_code == 200

    def close(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
        for pid_file in (self.data_dir / "runs").glob("*/pid"):  # bots still running
            if not pid_file.with_name("exit").exists():
                with contextlib.suppress(OSError, ValueError):
                    os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        self.http.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
