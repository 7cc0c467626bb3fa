"""Stopping a helper process the tests or benchmarks started (an emulator, a server)."""

from __future__ import annotations

import contextlib
import subprocess


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
