"""A stand-in bot for the stress harness: it records its own life in a shared log.

Run as BOT_COMMAND (`python /abs/path/tests/stress/bot.py`). It appends `start <job> <pid> <t>`
to the file named by STRESS_BOT_LOG, sleeps STRESS_BOT_SECONDS ("0.5", or "0.3-1.2" for a
uniform random range; a job's `config.stress_seconds` overrides it), appends
`end <job> <pid> <t>` and exits 0. On SIGTERM it appends
`end <job> <pid> <t> term` and exits 143. Each line is one os.write on an O_APPEND descriptor, so
lines from concurrent bots never interleave. Times are this machine's `time.time()`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from types import FrameType

TERM_EXIT = 128 + signal.SIGTERM


def bot_config() -> dict[str, object]:
    config = json.loads(os.environ.get("BOT_CONFIG") or "{}")
    return config if isinstance(config, dict) else {}


def job_id() -> str:
    """JOB_ID, else the job id (`bot_uuid`) in BOT_CONFIG."""
    return os.environ.get("JOB_ID") or str(bot_config().get("bot_uuid") or "unknown")


def seconds_spec() -> str:
    return str(bot_config().get("stress_seconds") or os.environ.get("STRESS_BOT_SECONDS", "1"))


def duration(spec: str, seed: str) -> float:
    """Seconds to sleep: a number, or `low-high` drawn uniformly (seeded by the job id)."""
    low, _, high = spec.strip().partition("-")
    if not high:
        return float(low or 0)
    return random.Random(seed).uniform(float(low), float(high))


def record(log_fd: int, event: str, job: str, suffix: str = "") -> None:
    line = f"{event} {job} {os.getpid()} {time.time():.6f}{suffix}\n"
    os.write(log_fd, line.encode())


def main() -> int:
    path = os.environ.get("STRESS_BOT_LOG")
    if not path:
        print("stress bot: STRESS_BOT_LOG is not set", file=sys.stderr)
        return 2
    job = job_id()
    log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def on_term(signum: int, frame: FrameType | None) -> None:
        record(log_fd, "end", job, " term")
        os._exit(TERM_EXIT)

    signal.signal(signal.SIGTERM, on_term)
    record(log_fd, "start", job)
    time.sleep(duration(seconds_spec(), job))
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    record(log_fd, "end", job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
