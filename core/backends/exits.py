"""How a bot's exit code reads in a job's `reason`."""

from __future__ import annotations

import signal
from contextlib import suppress


def exit_reason(code: int | None) -> str:
    """`exit code 3`; `exit code 137 (killed by SIGKILL)` for the shells' 128 + signal codes."""
    if code is None:
        return "no exit code"
    reason = f"exit code {code}"
    if code > 128:
        with suppress(ValueError):
            reason += f" (killed by {signal.Signals(code - 128).name})"
    return reason
