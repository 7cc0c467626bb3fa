"""Helper processes the tests or benchmarks start (an emulator, a server): a port for one, an
environment that does not configure it by accident, and stopping it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
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
