"""Demo bot: a STAND-IN for the meeting-recording bot. It joins nothing and records nothing.

It lets the scheduler, its backends and their tests run a "bot" anywhere Python runs:

    echo '{"meeting_url": "https://meet.example/x"}' | python -m core.demo_bot

- The JSON bot config is read from stdin when stdin has data, else from the `BOT_CONFIG` variable
  (the two ways the seed's bot gets it). Bad JSON, or no config at all: a message on stderr, exit 2.
- It prints what a real bot would record (meeting_url, bot_name, recording_mode, JOB_ID), then a
  few progress lines over `DEMO_BOT_SECONDS` seconds in total (default 3) and exits 0, or with the
  config's `demo_exit_code` (to demo or test a failing bot).
- SIGTERM: it prints a line and exits 143, as a bot that is stopped would.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from types import FrameType
from typing import Any, NoReturn

LABEL = "demo bot (stand-in, records nothing)"
STEPS = 3
USAGE_ERROR = 2
TERMINATED = 143


class UsageError(Exception):
    """Bad input: reported on stderr, exit code 2."""


def say(line: str) -> None:
    print(line, flush=True)


def read_config() -> dict[str, Any]:
    raw = ""
    if sys.stdin is not None and not sys.stdin.isatty():
        raw = sys.stdin.read()
    if not raw.strip():
        raw = os.environ.get("BOT_CONFIG", "")
    if not raw.strip():
        raise UsageError("no bot config: pass it as JSON on stdin or in BOT_CONFIG")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(f"the bot config is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise UsageError("the bot config must be a JSON object")
    return config


def exit_code(config: dict[str, Any]) -> int:
    code = config.get("demo_exit_code", 0)
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
        raise UsageError("demo_exit_code must be an integer from 0 to 255")
    return code


def duration() -> float:
    raw = os.environ.get("DEMO_BOT_SECONDS", "3")
    try:
        seconds = float(raw)
    except ValueError:
        raise UsageError(f"DEMO_BOT_SECONDS must be a number, not {raw!r}") from None
    if not 0 <= seconds < float("inf"):
        raise UsageError("DEMO_BOT_SECONDS must be zero or more")
    return seconds


def on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    say("demo bot: got SIGTERM, leaving the meeting")
    sys.exit(TERMINATED)


def run() -> int:
    config = read_config()
    code = exit_code(config)
    seconds = duration()
    say(f"meeting_url: {config.get('meeting_url')}")
    say(f"bot_name: {config.get('bot_name')}")
    say(f"recording_mode: {config.get('recording_mode')}")
    say(f"JOB_ID: {os.environ.get('JOB_ID') or config.get('bot_uuid')}")
    for step in range(1, STEPS + 1):
        time.sleep(seconds / STEPS)
        say(f"demo bot: pretending to record ({step}/{STEPS})")
    say(f"demo bot: done, exit code {code}")
    return code


def main() -> int:
    signal.signal(signal.SIGTERM, on_sigterm)
    say(LABEL)
    try:
        return run()
    except UsageError as exc:
        print(f"demo bot: {exc}", file=sys.stderr, flush=True)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
