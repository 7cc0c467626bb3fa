"""Demo bot: a STAND-IN for the meeting-recording bot. It joins nothing and records nothing.

It lets the scheduler, its backends and their tests run a "bot" anywhere Python runs:

    echo '{"meeting_url": "https://meet.example/x"}' | python -m core.demo_bot

- The JSON bot config is read from stdin when stdin has data, else from the `BOT_CONFIG` variable
  (the two ways the seed's bot gets it). Bad JSON, or no config at all: a message on stderr, exit 2.
- It prints what a real bot would record (meeting_url, bot_name, recording_mode, JOB_ID), then a
  few progress lines over `DEMO_BOT_SECONDS` seconds in total (default 3) and exits 0, or with the
  config's `demo_exit_code` (to demo or test a failing bot).
- Its status, as the meet-teams bot reports it: `demo bot: status <code>` lines for joining_call
  (at start), in_waiting_room, in_call_not_recording, in_call_recording (as it "records") and
  call_ended (before it exits). When the config has `bot_id`, `bots_api_key` and
  `bots_webhook_url`, each is also POSTed there as the real bot does: `{"event":
  "bot.status_change", "data": {"bot_id": ..., "status": {"code": ..., "created_at": <ISO 8601
  UTC>}}}` with `x-spoke-api-key: <bots_api_key>`. A report that fails is a line on stderr; the
  bot goes on.
- SIGTERM: it prints a line, reports call_ended and exits 143, as a bot that is stopped would.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any, NoReturn

LABEL = "demo bot (stand-in, records nothing)"
STEPS = 3
USAGE_ERROR = 2
TERMINATED = 143
# the real bot's status reports (its src/events.ts): the config keys that enable them, the
# header that carries the key, and how long a report may take before the bot gives up on it
REPORT_KEYS = ("bot_id", "bots_api_key", "bots_webhook_url")
REPORT_HEADER = "x-spoke-api-key"
REPORT_TIMEOUT_SECONDS = 2.0


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


class Status:
    """The bot's status: each code said once, and reported where the config says."""

    def __init__(self, config: dict[str, Any]) -> None:
        values = [config.get(key) for key in REPORT_KEYS]
        strings = [v for v in values if isinstance(v, str) and v]
        self.target = strings if len(strings) == len(REPORT_KEYS) else None
        self.said: set[str] = set()

    def __call__(self, code: str) -> None:
        if code in self.said:
            return
        self.said.add(code)
        say(f"demo bot: status {code}")
        if self.target is not None:
            self.report(code, *self.target)

    @staticmethod
    def report(code: str, bot_id: str, api_key: str, url: str) -> None:
        """POST the status as the real bot does; a failure is a line on stderr, never more."""
        created_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        status = {"code": code, "created_at": created_at}
        body = {"event": "bot.status_change", "data": {"bot_id": bot_id, "status": status}}
        headers = {"Content-Type": "application/json", REPORT_HEADER: api_key}
        try:
            if not url.startswith(("http://", "https://")):
                raise ValueError("not an http(s) URL")
            request = urllib.request.Request(url, json.dumps(body).encode(), headers)
            with urllib.request.urlopen(request, timeout=REPORT_TIMEOUT_SECONDS) as response:
                response.read()
        except (OSError, ValueError, http.client.HTTPException) as exc:
            print(f"demo bot: cannot report {code} to {url}: {exc}", file=sys.stderr, flush=True)


def on_sigterm(status: Status | None = None) -> Callable[[int, FrameType | None], NoReturn]:
    def stop(signum: int, frame: FrameType | None) -> NoReturn:
        say("demo bot: got SIGTERM, leaving the meeting")
        if status is not None:
            status("call_ended")
        sys.exit(TERMINATED)

    return stop


def run() -> int:
    started = time.monotonic()
    config = read_config()
    code = exit_code(config)
    seconds = duration()
    status = Status(config)
    signal.signal(signal.SIGTERM, on_sigterm(status))
    status("joining_call")
    say(f"meeting_url: {config.get('meeting_url')}")
    say(f"bot_name: {config.get('bot_name')}")
    say(f"recording_mode: {config.get('recording_mode')}")
    say(f"JOB_ID: {os.environ.get('JOB_ID') or config.get('bot_uuid')}")
    for reached in ("in_waiting_room", "in_call_not_recording", "in_call_recording"):
        status(reached)
    for step in range(1, STEPS + 1):  # on time, however long the reports took
        time.sleep(max(0.0, started + seconds * step / STEPS - time.monotonic()))
        say(f"demo bot: pretending to record ({step}/{STEPS})")
    status("call_ended")
    say(f"demo bot: done, exit code {code}")
    return code


def main() -> int:
    signal.signal(signal.SIGTERM, on_sigterm())
    say(LABEL)
    try:
        return run()
    except UsageError as exc:
        print(f"demo bot: {exc}", file=sys.stderr, flush=True)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
